// Native DeepSeek chat templates against real Jinja renders: the shared fixtures (original V3
// template, rendered by Python Jinja) and our own cases rendered by @huggingface/jinja with the
// V3, R1, R1-distill and V3.1 templates (tools/tokenizer-reference/render_chat.mjs).
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer_config.h"
#include "tokenizer_test_util.h"

namespace dsv3::testing {
namespace {

using tokenizer::ChatMessagesFromJson;
using tokenizer::ChatOptions;
using tokenizer::ChatTemplate;

constexpr const char* kBos = "<｜begin▁of▁sentence｜>";

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

TEST(ChatTemplateTest, SharedFixturesRenderAndEncodeIdentically) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  auto model = tokenizer::LoadModelTokenizer(DeepSeekModelDir());
  ASSERT_TRUE(model.ok()) << model.status().message();
  auto chat = ChatTemplate::FromJinja(model->config.chat_template, model->config.bos_token);
  ASSERT_TRUE(chat.ok()) << chat.status().message();
  EXPECT_EQ(chat->name(), "deepseek-v3");
  int checked = 0;
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/chat_cases.jsonl")) {
    auto messages = ChatMessagesFromJson(c["messages"]);
    ASSERT_TRUE(messages.ok()) << messages.status().message();
    ChatOptions options;
    options.add_generation_prompt = c["add_generation_prompt"];
    auto rendered = chat->Render(*messages, options);
    ASSERT_TRUE(rendered.ok()) << rendered.status().message();
    EXPECT_EQ(*rendered, c["rendered"].get<std::string>()) << c["name"];
    auto ids = tok->Encode(*rendered);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, Ids(c["ids"])) << c["name"];
    ++checked;
  }
  EXPECT_GE(checked, 8);
}

TEST(ChatTemplateTest, VariantsMatchJinjaRenders) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  int checked = 0;
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/chat_template_expected.jsonl")) {
    const std::string where = c["template"].get<std::string>() + "/" + c["name"].get<std::string>();
    const std::string source = ReadText(TokenizerDataDir() + "/chat_templates/" +
                                        c["template"].get<std::string>() + ".jinja");
    auto chat = ChatTemplate::FromJinja(source, kBos);
    ASSERT_TRUE(chat.ok()) << where << ": " << chat.status().message();
    auto messages = ChatMessagesFromJson(c["messages"]);
    ASSERT_TRUE(messages.ok()) << where << ": " << messages.status().message();
    ChatOptions options;
    options.add_generation_prompt = c["add_generation_prompt"];
    options.thinking = c["thinking"];
    auto rendered = chat->Render(*messages, options);
    ASSERT_TRUE(c.contains("rendered")) << where << ": the Jinja render failed";
    ASSERT_TRUE(rendered.ok()) << where << ": " << rendered.status().message();
    EXPECT_EQ(*rendered, c["rendered"].get<std::string>()) << where;
    auto ids = tok->Encode(*rendered);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, Ids(c["ids"])) << where;
    ++checked;
  }
  EXPECT_GE(checked, 60);
}

TEST(ChatTemplateTest, RecognisesVariantsByName) {
  const std::pair<const char*, const char*> expected[] = {
      {"deepseek_v3", "deepseek-v3"},
      {"deepseek_r1", "deepseek-r1"},
      {"deepseek_r1_distill_llama", "deepseek-r1"},
      {"deepseek_v3_1", "deepseek-v3.1"},
  };
  for (const auto& [file, name] : expected) {
    auto chat = ChatTemplate::FromJinja(
        ReadText(TokenizerDataDir() + "/chat_templates/" + file + ".jinja"), kBos);
    ASSERT_TRUE(chat.ok()) << file << ": " << chat.status().message();
    EXPECT_EQ(chat->name(), name) << file;
  }
}

TEST(ChatTemplateTest, UnknownTemplateIsAnError) {
  const char* llama3 =
      "{% for message in messages %}{{'<|start_header_id|>' + message['role'] + "
      "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>'}}{% endfor %}";
  auto chat = ChatTemplate::FromJinja(llama3, kBos);
  ASSERT_FALSE(chat.ok());
  EXPECT_NE(chat.status().message().find("not recognised"), std::string::npos)
      << chat.status().message();
  EXPECT_FALSE(ChatTemplate::FromJinja("", kBos).ok());
  // A V3 template whose generation prompt was edited to something unknown.
  std::string edited = ReadText(TokenizerDataDir() + "/chat_templates/deepseek_v3.jinja");
  const std::string prompt = "{{'<｜Assistant｜>'}}";
  ASSERT_NE(edited.find(prompt), std::string::npos);
  edited.replace(edited.find(prompt), prompt.size(), "{{'<｜Assistant｜>Sure:'}}");
  EXPECT_FALSE(ChatTemplate::FromJinja(edited, kBos).ok());
}

TEST(ChatTemplateTest, BadMessagesAreErrors) {
  auto chat = ChatTemplate::FromJinja(
      ReadText(TokenizerDataDir() + "/chat_templates/deepseek_v3.jinja"), kBos);
  ASSERT_TRUE(chat.ok());
  auto null_user =
      ChatMessagesFromJson(nlohmann::json::parse(R"([{"role":"user","content":null}])"));
  ASSERT_TRUE(null_user.ok());
  auto rendered = chat->Render(*null_user, {});
  ASSERT_FALSE(rendered.ok());
  EXPECT_NE(rendered.status().message().find("messages[0]"), std::string::npos);

  EXPECT_FALSE(ChatMessagesFromJson(nlohmann::json::parse(R"({"role":"user"})")).ok());
  EXPECT_FALSE(ChatMessagesFromJson(nlohmann::json::parse(R"([{"content":"x"}])")).ok());
  EXPECT_FALSE(
      ChatMessagesFromJson(nlohmann::json::parse(R"([{"role":"user","content":[1]}])")).ok());
  auto object_args = ChatMessagesFromJson(nlohmann::json::parse(
      R"([{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":{"a":1}}}]}])"));
  ASSERT_FALSE(object_args.ok());
  EXPECT_NE(object_args.status().message().find("arguments"), std::string::npos);
}

}  // namespace
}  // namespace dsv3::testing
