// dsv3 perplexity and engine/perplexity.h: the perplexity equals exp(mean NLL) computed here
// independently from the float64 reference forward pass (tests/reference) over the same windows,
// for every window/stride layout; bad inputs are clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/thread_pool.h"
#include "engine/perplexity.h"
#include "io/files.h"
#include "model/presets.h"
#include "model/random_checkpoint.h"
#include "reference/reference_model.h"
#include "test_util.h"
#include "tokenizer/tokenizer_config.h"

namespace dsv3 {
namespace {

using testing::RunDsv3;
using testing::TempDir;

struct Expected {
  double perplexity = 0;
  int64_t tokens_scored = 0;
};

// Written from the rule in engine/perplexity.h, separately from its implementation: windows start
// every `stride` tokens until one reaches the end; each scores the tokens after its first that no
// earlier window scored. NLLs from the float64 reference model.
Expected ReferencePerplexity(const std::string& dir, const std::vector<int32_t>& tokens,
                             int64_t context, int64_t stride) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  context = std::min(context, n);
  if (stride == 0) stride = context;
  std::vector<bool> scored(tokens.size(), false);
  double sum = 0;
  int64_t count = 0;
  for (int64_t start = 0;; start += stride) {
    const int64_t end = std::min(start + context, n);
    std::vector<int32_t> window(tokens.begin() + start, tokens.begin() + end);
    auto ref = reference::ReferenceForward(dir, window);
    EXPECT_TRUE(ref.ok()) << ref.status().message();
    if (!ref.ok()) return {};
    for (int64_t target = start + 1; target < end; ++target) {
      if (scored[static_cast<size_t>(target)]) continue;
      scored[static_cast<size_t>(target)] = true;
      const double* logits = ref->logits.data() + (target - start - 1) * ref->vocab;
      double max = logits[0];
      for (int64_t v = 1; v < ref->vocab; ++v) max = std::max(max, logits[v]);
      double z = 0;
      for (int64_t v = 0; v < ref->vocab; ++v) z += std::exp(logits[v] - max);
      sum += max + std::log(z) - logits[tokens[static_cast<size_t>(target)]];
      ++count;
    }
    if (end == n) break;
  }
  return {std::exp(sum / static_cast<double>(count)), count};
}

class PerplexityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto config = PresetConfig("tiny-v3");
    ASSERT_TRUE(config.ok());
    RandomCheckpointOptions options;
    options.seed = 11;
    ASSERT_TRUE(WriteRandomCheckpoint(*config, options, dir_.path()).ok());
    auto model = Model::Load(dir_.path(), LoadOptions{});
    ASSERT_TRUE(model.ok()) << model.status().message();
    model_ = std::move(*model);
    ctx_.pool = &pool_;
    ctx_.isa = ops::BestIsa();
    std::mt19937 rng(5);
    tokens_.resize(37);
    for (int32_t& t : tokens_) t = static_cast<int32_t>(rng() % 160);
  }

  TempDir dir_;
  std::unique_ptr<Model> model_;
  ThreadPool pool_{2};
  ops::KernelContext ctx_;
  std::vector<int32_t> tokens_;
};

TEST_F(PerplexityTest, EqualsExpMeanNllOfTheReferenceForEveryLayout) {
  struct Case {
    int64_t context, stride, batch, scored;
  };
  // 37 tokens. Non-overlapping windows of 8: 4 x 7 + 4 scored; overlapping ones score all 36;
  // a context past the text is one window; windows of 2 score every other token.
  const Case cases[] = {{8, 0, 256, 32}, {8, 8, 3, 32},   {8, 3, 256, 36}, {8, 1, 5, 36},
                        {64, 0, 7, 36},  {2, 0, 256, 18}, {5, 4, 2, 36}};
  for (const Case& c : cases) {
    PerplexityOptions options;
    options.context = c.context;
    options.stride = c.stride;
    options.batch = c.batch;
    int64_t progress_calls = 0;
    options.progress = [&](const PerplexityProgress& p) {
      ++progress_calls;
      EXPECT_EQ(p.windows_done, progress_calls);
      EXPECT_TRUE(std::isfinite(p.perplexity));
    };
    auto r = ComputePerplexity(*model_, ctx_, tokens_, options);
    ASSERT_TRUE(r.ok()) << r.status().message();
    const Expected want = ReferencePerplexity(dir_.path(), tokens_, c.context, c.stride);
    const std::string label =
        fmt::format("ctx {} stride {} batch {}", c.context, c.stride, c.batch);
    EXPECT_EQ(r->tokens_scored, c.scored) << label;
    EXPECT_EQ(want.tokens_scored, c.scored) << label;
    EXPECT_EQ(progress_calls, r->windows) << label;
    EXPECT_NEAR(r->perplexity, want.perplexity, 1e-4 * want.perplexity) << label;
    EXPECT_NEAR(std::exp(r->mean_nll), r->perplexity, 1e-12 * r->perplexity);
    EXPECT_GT(r->nll_stderr, 0) << label;
    EXPECT_NEAR(r->perplexity_stderr, r->perplexity * r->nll_stderr, 1e-9 * r->perplexity);
  }
}

TEST_F(PerplexityTest, BadInputsAreErrors) {
  PerplexityOptions options;
  options.context = 8;
  EXPECT_FALSE(ComputePerplexity(*model_, ctx_, std::span(tokens_).first(1), options).ok());
  options.context = 1;
  auto r = ComputePerplexity(*model_, ctx_, tokens_, options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("context"), std::string::npos) << r.status().message();
  options.context = 8;
  options.stride = 9;
  EXPECT_FALSE(ComputePerplexity(*model_, ctx_, tokens_, options).ok());
  options.stride = 0;
  std::vector<int32_t> bad = tokens_;
  bad[20] = 160;  // vocab_size
  r = ComputePerplexity(*model_, ctx_, bad, options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("vocabulary"), std::string::npos) << r.status().message();
}

// A text with enough repetition for a small BPE to learn merges.
std::string SampleText() {
  std::string text;
  const char* words[] = {"the",    "model", "reads",    "weights", "from",
                         "memory", "and",   "computes", "logits",  "for",
                         "each",   "token", "in",       "a",       "window"};
  std::mt19937 rng(2);
  for (int i = 0; i < 400; ++i) {
    text += words[rng() % 15];
    text += i % 12 == 11 ? ".\n" : " ";
  }
  return text;
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// tiny-v3 with vocab 320 and a BPE tokenizer of 290 + 15 added tokens trained on the sample text.
std::string ModelWithTokenizer(const TempDir& dir) {
  auto config = PresetConfig("tiny-v3");
  EXPECT_TRUE(config.ok());
  config->vocab_size = 320;
  RandomCheckpointOptions options;
  options.seed = 4;
  const std::string model = dir / "model";
  EXPECT_TRUE(WriteRandomCheckpoint(*config, options, model).ok());
  WriteText(dir / "train.txt", SampleText());
  auto r = RunDsv3({"tokenizer", "train", dir / "train.txt", "-o", model, "--vocab-size", "290"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return model;
}

TEST(PerplexityCli, MatchesTheReferenceOnTheTokenizedFile) {
  TempDir dir;
  const std::string model = ModelWithTokenizer(dir);
  const std::string text = SampleText().substr(0, 700);
  WriteText(dir / "eval.txt", text);
  auto r = RunDsv3({"perplexity", "-m", model, "-f", dir / "eval.txt", "--ctx", "48", "--stride",
                    "32", "--max-tokens", "150", "--json", "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  // The tokens the command evaluated, from the model's tokenizer.
  auto tok = tokenizer::LoadModelTokenizer(model);
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  auto ids = tok->EncodeWithSpecial(text, false);
  ASSERT_TRUE(ids.ok());
  ASSERT_GT(ids->size(), 150u) << "the sample text should give more than --max-tokens tokens";
  ids->resize(150);
  const Expected want = ReferencePerplexity(model, *ids, 48, 32);
  EXPECT_EQ(j["tokens"], 150);
  EXPECT_EQ(j["tokens_scored"], 149);
  EXPECT_EQ(j["tokens_scored"].get<int64_t>(), want.tokens_scored);
  EXPECT_EQ(j["ctx"], 48);
  EXPECT_EQ(j["stride"], 32);
  EXPECT_NEAR(j["perplexity"].get<double>(), want.perplexity, 1e-4 * want.perplexity);
  EXPECT_GT(j["perplexity_stderr"].get<double>(), 0);
  // Progress goes to stderr, one line per window when not a terminal.
  EXPECT_NE(r.err.find("perplexity"), std::string::npos) << r.err;

  // The table form.
  r = RunDsv3({"perplexity", "-m", model, "-f", dir / "eval.txt", "--ctx", "64"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("perplexity: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" ± "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("windows of 64 (stride 64)"), std::string::npos) << r.out;
}

TEST(PerplexityCli, BadInputsFailWithAClearMessage) {
  TempDir dir;
  const std::string model = ModelWithTokenizer(dir);
  WriteText(dir / "eval.txt", SampleText());
  WriteText(dir / "empty.txt", "");
  WriteText(dir / "one.txt", "a");
  ASSERT_EQ(RunDsv3({"init", "-o", dir / "plain", "--preset", "tiny-v3"}).exit_code, 0);
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const Case cases[] = {
      {{"-m", model, "-f", dir / "missing.txt"}, "missing.txt"},
      {{"-m", model, "-f", dir / "empty.txt"}, "empty.txt: the file is empty"},
      {{"-m", model, "-f", dir / "one.txt"}, "one.txt: 1 token(s)"},
      {{"-m", model, "-f", dir / "eval.txt", "--ctx", "1"}, "--ctx must be >= 2"},
      {{"-m", model, "-f", dir / "eval.txt", "--ctx", "8", "--stride", "9"}, "--stride"},
      {{"-m", model, "-f", dir / "eval.txt", "--max-tokens", "1"}, "eval.txt: 1 token(s)"},
      {{"-m", dir / "plain", "-f", dir / "eval.txt"}, "tokenizer"},
      {{"-m", model}, "-f FILE is required"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"perplexity"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    auto r = RunDsv3(args);
    EXPECT_EQ(r.exit_code, 1) << c.message;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("terminate"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace dsv3
