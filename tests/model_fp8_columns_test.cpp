// FP8 models whose W_UK halves the load lays out by columns (LoadOptions::fp8_columns,
// ops/fp8_columns.h): decoding's q_lat = W_UK^T q_nope then sums each block row in f32 and
// multiplies the block scale in after (instead of scaling each code first), which moves the
// logits by f32 rounding only.
//
// What is checked, on tiny-v3 with kv_lora_rank 32 or 48 (whole 16-column vectors) and FP8 blocks
// of 4 rows (each head's W_UK rows start on a block row), blocks 16 or 32 columns wide (48: a
// ragged last block):
//  - the layout is made for every layer and the MTP layer when asked, W_UV not copied unless its
//    pair tiles are asked for, and nothing when not asked;
//  - decoding token by token on every ISA matches the float64 reference within the 1e-5 of the
//    largest logit the other exact paths are held to (model_reference_test): a wrong head's W_UK,
//    scale or block row moves them by O(1);
//  - and the same without the layout (AccumulateRows on W_UK's rows).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/thread_pool.h"
#include "model/presets.h"
#include "model/random_checkpoint.h"
#include "model/transformer.h"
#include "ops/isa.h"
#include "reference/reference_model.h"
#include "test_util.h"

namespace dsv3 {
namespace {

struct Shape {
  int64_t kv_lora_rank, block_cols;
};

class ModelFp8Columns : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    auto config = PresetConfig("tiny-v3");
    ASSERT_TRUE(config.ok());
    config->kv_lora_rank = GetParam().kv_lora_rank;
    RandomCheckpointOptions options;
    options.seed = 13;
    options.dtype = DType::kF8E4M3;
    options.mtp = true;
    options.fp8_block_rows = 4;  // W_UK [16, r] per head, heads 28 rows apart
    options.fp8_block_cols = GetParam().block_cols;
    ASSERT_TRUE(WriteRandomCheckpoint(*config, options, dir_.path()).ok());
  }

  std::unique_ptr<Model> Load(const LoadOptions& options) {
    auto model = Model::Load(dir_.path(), options);
    EXPECT_TRUE(model.ok()) << model.status().message();
    return model.ok() ? std::move(*model) : nullptr;
  }

  testing::TempDir dir_;
};

std::vector<const AttentionWeights*> Attentions(const Model& model) {
  std::vector<const AttentionWeights*> all;
  for (const LayerWeights& layer : model.weights().layers) all.push_back(&layer.attn);
  for (const MtpWeights& m : model.weights().mtp) all.push_back(&m.layer.attn);
  return all;
}

// Logits of tokens decoded one at a time, [T, vocab].
std::vector<float> Decode(const Model& model, ops::Isa isa, const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size()), V = model.config().vocab_size;
  ThreadPool pool(2);
  const ops::KernelContext ctx{&pool, isa};
  InferenceState state(model, T);
  std::vector<float> logits(static_cast<size_t>(T * V));
  for (int64_t t = 0; t < T; ++t) {
    const Status s = Forward(model, ctx, state, std::span<const int32_t>(tokens).subspan(t, 1),
                             ForwardOptions{}, logits.data() + t * V);
    EXPECT_TRUE(s.ok()) << s.message();
  }
  return logits;
}

// max |a - b| / max |b|
double RelError(const std::vector<float>& a, const std::vector<double>& b) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(a[i] - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return err / scale;
}

TEST_P(ModelFp8Columns, LayoutMadeWhereAsked) {
  const auto model = Load(LoadOptions{});
  ASSERT_NE(model, nullptr);
  const ModelConfig& c = model->config();
  for (const AttentionWeights* a : Attentions(*model)) {
    ASSERT_NE(a->kv_b_uk_fp8.codes, nullptr);
    EXPECT_EQ(a->kv_b_uk_fp8.n, c.qk_nope_head_dim);
    EXPECT_EQ(a->kv_b_uk_fp8.m, c.kv_lora_rank);
    EXPECT_EQ(a->kv_b_uk.data, nullptr);
    EXPECT_EQ(a->kv_b_uv.data, nullptr);  // W_UV read from kv_b_proj's rows
  }
  LoadOptions tiles;
  tiles.tile_bf16_rows = true;
  const auto tiled = Load(tiles);  // held: the views below point into it
  ASSERT_NE(tiled, nullptr);
  for (const AttentionWeights* a : Attentions(*tiled)) {
    EXPECT_NE(a->kv_b_uk_fp8.codes, nullptr);
    EXPECT_NE(a->kv_b_uv.data, nullptr);  // W_UV's pair tiles
  }
  LoadOptions off;
  off.fp8_columns = false;
  const auto rows = Load(off);
  ASSERT_NE(rows, nullptr);
  for (const AttentionWeights* a : Attentions(*rows)) EXPECT_EQ(a->kv_b_uk_fp8.codes, nullptr);
}

TEST_P(ModelFp8Columns, DecodeMatchesFloat64Reference) {
  std::mt19937 rng(5);
  std::vector<int32_t> tokens(9);
  const auto model = Load(LoadOptions{});
  ASSERT_NE(model, nullptr);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % model->config().vocab_size);
  auto ref = reference::ReferenceForward(dir_.path(), tokens);
  ASSERT_TRUE(ref.ok()) << ref.status().message();
  LoadOptions off;
  off.fp8_columns = false;
  const auto rows = Load(off);
  for (ops::Isa isa : ops::RunnableIsas()) {
    SCOPED_TRACE(std::string(ops::IsaName(isa)));
    EXPECT_LE(RelError(Decode(*model, isa, tokens), ref->logits), 1e-5);
    EXPECT_LE(RelError(Decode(*rows, isa, tokens), ref->logits), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ModelFp8Columns, ::testing::Values(Shape{32, 16}, Shape{48, 32}),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           return "r" + std::to_string(info.param.kv_lora_rank) + "_bc" +
                                  std::to_string(info.param.block_cols);
                         });

}  // namespace
}  // namespace dsv3
