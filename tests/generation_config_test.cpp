// generation_config.json: the model's sampling defaults, as transformers applies them, and the
// command-line flags that override them.
#include <gtest/gtest.h>

#include <filesystem>

#include "engine/generation_config.h"
#include "io/files.h"
#include "test_util.h"

namespace dsv3 {
namespace {

using testing::RunDsv3;
using testing::TempDir;

void WriteConfig(const std::string& dir, const std::string& json) {
  ASSERT_TRUE(io::WriteFileAtomic(dir + "/generation_config.json", json).ok());
}

TEST(GenerationConfig, DefaultsFromTheFile) {
  TempDir dir;
  SamplingParams base;
  base.seed = 5;
  auto p = LoadGenerationConfig(dir.path(), base);  // no file: unchanged (greedy)
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->temperature, 0.0);
  EXPECT_EQ(p->seed, 5u);

  // DeepSeek-V3's own file.
  WriteConfig(dir.path(),
              R"({"_from_model_config": true, "bos_token_id": 0, "eos_token_id": 1,
                  "do_sample": true, "temperature": 0.6, "top_p": 0.95})");
  p = LoadGenerationConfig(dir.path(), base);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->temperature, 0.6);
  EXPECT_EQ(p->top_p, 0.95);
  EXPECT_EQ(p->top_k, 50);  // transformers' default when sampling
  EXPECT_EQ(p->seed, 5u);

  WriteConfig(dir.path(), R"({"do_sample": false, "temperature": 0.6, "repetition_penalty": 1.1})");
  p = LoadGenerationConfig(dir.path(), base);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->temperature, 0.0);
  EXPECT_EQ(p->repetition_penalty, 1.1);

  WriteConfig(dir.path(), R"({"do_sample": true, "top_k": null, "min_p": 0.05})");
  p = LoadGenerationConfig(dir.path(), base);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->temperature, 1.0);
  EXPECT_EQ(p->min_p, 0.05);
}

TEST(GenerationConfig, BadFilesNameFileAndKey) {
  TempDir dir;
  const std::string file = dir.path() + "/generation_config.json";
  for (auto [json, key] : {std::pair<const char*, const char*>{"{\"do_sample\": 1}", "do_sample"},
                           {"{\"do_sample\": true, \"temperature\": \"hot\"}", "temperature"},
                           {"{\"do_sample\": true, \"top_p\": 2}", "top-p"},
                           {"[1, 2]", "object"},
                           {"{\"do_sample\": tru", "generation_config.json"}}) {
    WriteConfig(dir.path(), json);
    auto p = LoadGenerationConfig(dir.path(), SamplingParams{});
    ASSERT_FALSE(p.ok()) << json;
    EXPECT_NE(p.status().message().find("generation_config.json"), std::string::npos)
        << p.status().message();
    EXPECT_NE(p.status().message().find(key), std::string::npos) << p.status().message();
  }
}

// The CLI samples with the file's settings unless a flag overrides them.
TEST(GenerationConfig, GenerateUsesTheFileAndFlagsOverride) {
  TempDir dir;
  const std::string m = dir.path() + "/m";
  ASSERT_EQ(RunDsv3({"init", "-o", m, "--preset", "tiny-kimi"}).exit_code, 0);
  auto gen = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"generate", "-m", m,    "--tokens",
                                     "0,4,5",    "-n", "16", "--ignore-eos"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = RunDsv3(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  const std::string greedy = gen({});
  WriteConfig(m, R"({"do_sample": true, "temperature": 1.5, "top_k": 40})");
  const std::string from_file = gen({"--seed", "3"});
  EXPECT_EQ(from_file, gen({"--seed", "3", "--temp", "1.5", "--top-k", "40"}));
  EXPECT_NE(from_file, greedy);
  EXPECT_EQ(gen({"--temp", "0"}), greedy);  // a flag beats the file
  WriteConfig(m, R"({"do_sample": true, "top_p": 7})");
  auto r = RunDsv3({"generate", "-m", m, "--tokens", "0,4,5", "-n", "2"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("generation_config.json"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dsv3
