// The sampler and the generation loop.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/generate.h"
#include "engine/sampler.h"
#include "model/presets.h"
#include "model/random_checkpoint.h"
#include "test_util.h"

namespace dsv3 {
namespace {

TEST(Sampler, GreedyIsArgmaxAndFiltersOfOneAgree) {
  std::vector<float> logits = {0.1f, 2.5f, -1.0f, 2.4f, 0.0f};
  for (SamplingParams p : {SamplingParams{}, SamplingParams{1.0, 1}, SamplingParams{1.0, 0, 1e-9},
                           SamplingParams{0.7, 0, 1.0, 1.0}}) {
    Sampler sampler(p, 5);
    auto copy = logits;
    EXPECT_EQ(sampler.Sample(copy.data(), {}), 1);
  }
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDiffers) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i));
  auto draw = [&](uint64_t seed) {
    SamplingParams p{1.0, 0, 1.0, 0.0, 1.0, seed};
    Sampler sampler(p, 50);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) {
      auto copy = logits;
      out.push_back(sampler.Sample(copy.data(), {}));
    }
    return out;
  };
  EXPECT_EQ(draw(42), draw(42));
  EXPECT_NE(draw(42), draw(43));
}

// Frequencies follow softmax(logits / T): each within 5 binomial standard deviations.
TEST(Sampler, FrequenciesFollowTheTemperedDistribution) {
  const std::vector<double> probs = {0.5, 0.3, 0.15, 0.05};
  const double temperature = 0.8;
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p) * temperature));
  SamplingParams params{temperature, 0, 1.0, 0.0, 1.0, 7};
  Sampler sampler(params, 4);
  const int n = 40000;
  std::vector<int> counts(4);
  for (int i = 0; i < n; ++i) {
    auto copy = logits;
    ++counts[sampler.Sample(copy.data(), {})];
  }
  for (size_t i = 0; i < probs.size(); ++i) {
    const double sd = std::sqrt(n * probs[i] * (1 - probs[i]));
    EXPECT_NEAR(counts[i], n * probs[i], 5 * sd) << "token " << i;
  }
}

TEST(Sampler, TopPAndMinPCutTheTail) {
  // probs 0.5, 0.3, 0.15, 0.05: top-p 0.75 keeps {0, 1}; min-p 0.4 keeps p >= 0.2: {0, 1}.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  for (SamplingParams p :
       {SamplingParams{1.0, 0, 0.75, 0.0, 1.0, 1}, SamplingParams{1.0, 0, 1.0, 0.4, 1.0, 1},
        SamplingParams{1.0, 2, 1.0, 0.0, 1.0, 1}}) {
    Sampler sampler(p, 4);
    for (int i = 0; i < 2000; ++i) {
      auto copy = logits;
      EXPECT_LT(sampler.Sample(copy.data(), {}), 2);
    }
  }
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  std::vector<float> logits = {2.0f, 1.9f, -1.0f};
  SamplingParams p;
  p.repetition_penalty = 1.2;
  Sampler sampler(p, 3);
  const int32_t history[] = {0, 0, 2};
  EXPECT_EQ(sampler.Sample(logits.data(), history), 1);  // 2.0/1.2 < 1.9
  EXPECT_FLOAT_EQ(logits[0], 2.0f / 1.2f);
  EXPECT_FLOAT_EQ(logits[2], -1.2f);
}

TEST(Sampler, InvalidParamsAreRejected) {
  EXPECT_FALSE((SamplingParams{-1.0}).Validate().ok());
  EXPECT_FALSE((SamplingParams{1.0, -1}).Validate().ok());
  EXPECT_FALSE((SamplingParams{1.0, 0, 0.0}).Validate().ok());
  EXPECT_FALSE((SamplingParams{1.0, 0, 1.0, 1.5}).Validate().ok());
  EXPECT_FALSE((SamplingParams{1.0, 0, 1.0, 0.0, 0.0}).Validate().ok());
  EXPECT_TRUE((SamplingParams{}).Validate().ok());
}

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RandomCheckpointOptions options;
    options.seed = 3;
    ASSERT_TRUE(WriteRandomCheckpoint(*PresetConfig("tiny-v3"), options, dir_.path()).ok());
    auto model = Model::Load(dir_.path(), LoadOptions{});
    ASSERT_TRUE(model.ok()) << model.status().message();
    model_ = std::move(*model);
  }
  testing::TempDir dir_;
  std::unique_ptr<Model> model_;
  ThreadPool pool_{2};
};

// A second turn reusing the cached prefix generates exactly what a fresh session does.
TEST_F(SessionTest, ReusedPrefixEqualsFreshRun) {
  ops::KernelContext ctx{&pool_, ops::BestIsa()};
  GenerateOptions options;
  options.max_new_tokens = 6;
  Session chat(*model_, ctx, 64);
  std::vector<int32_t> first_prompt = {0, 5, 9, 14};
  std::vector<int32_t> reply;
  ASSERT_TRUE(chat.Generate(first_prompt, options, nullptr, &reply).ok());
  // Turn two: the whole conversation so far plus new tokens.
  std::vector<int32_t> second_prompt = first_prompt;
  second_prompt.insert(second_prompt.end(), reply.begin(), reply.end());
  second_prompt.insert(second_prompt.end(), {7, 8, 21});
  std::vector<int32_t> reused_out;
  auto stats = chat.Generate(second_prompt, options, nullptr, &reused_out);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->reused_tokens, static_cast<int64_t>(first_prompt.size() + reply.size()));
  EXPECT_EQ(stats->prompt_tokens, 3);

  Session fresh(*model_, ctx, 64);
  std::vector<int32_t> fresh_out;
  ASSERT_TRUE(fresh.Generate(second_prompt, options, nullptr, &fresh_out).ok());
  EXPECT_EQ(reused_out, fresh_out);

  // A diverging prompt (edit in the middle) re-runs from the divergence point.
  std::vector<int32_t> edited = second_prompt;
  edited[2] = 100;
  std::vector<int32_t> edited_out, edited_fresh;
  auto edited_stats = chat.Generate(edited, options, nullptr, &edited_out);
  ASSERT_TRUE(edited_stats.ok());
  EXPECT_EQ(edited_stats->reused_tokens, 2);
  Session fresh2(*model_, ctx, 64);
  ASSERT_TRUE(fresh2.Generate(edited, options, nullptr, &edited_fresh).ok());
  EXPECT_EQ(edited_out, edited_fresh);
}

TEST_F(SessionTest, StopsAtStopTokenAndRespectsLimits) {
  ops::KernelContext ctx{nullptr, ops::Isa::kScalar};
  GenerateOptions options;
  options.max_new_tokens = 40;
  std::vector<int32_t> out;
  auto stats = Generate(*model_, ctx, std::vector<int32_t>{0, 1, 2}, options, nullptr, &out);
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(out.size(), 40u);
  // Make the 5th generated token a stop token: generation must end right there.
  options.stop_tokens = {out[4]};
  const auto first_stop = std::find(out.begin(), out.end(), out[4]) - out.begin();
  std::vector<int32_t> stopped;
  stats = Generate(*model_, ctx, std::vector<int32_t>{0, 1, 2}, options, nullptr, &stopped);
  ASSERT_TRUE(stats.ok());
  EXPECT_TRUE(stats->stopped_by_token);
  EXPECT_EQ(static_cast<int64_t>(stopped.size()), first_stop + 1);

  options.max_new_tokens = 1000;  // beyond max_position_embeddings (256)
  EXPECT_FALSE(Generate(*model_, ctx, std::vector<int32_t>{0}, options, nullptr, &out).ok());
}

}  // namespace
}  // namespace dsv3
