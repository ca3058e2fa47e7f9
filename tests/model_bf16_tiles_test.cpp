// BF16 and FP8 models loaded with their product matrices in the bf16-dot kernel's 32-row pair
// tiles (LoadOptions::tile_bf16_rows, ops/bf16_tiles.h) against the same models row-major.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "backend/thread_pool.h"
#include "model/presets.h"
#include "model/random_checkpoint.h"
#include "model/transformer.h"
#include "ops/bf16_tiles.h"
#include "ops/isa.h"
#include "test_util.h"

namespace dsv3 {
namespace {

// Logits of a 40-token prefill and then one decoded token, [41, vocab].
std::vector<float> PrefillAndDecode(const Model& model, const ops::KernelContext& ctx) {
  const int64_t V = model.config().vocab_size;
  std::vector<int32_t> tokens(41);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(i * 37 % V);
  InferenceState state(model, 41);
  std::vector<float> logits(static_cast<size_t>(41 * V));
  const std::span<const int32_t> all(tokens);
  EXPECT_TRUE(Forward(model, ctx, state, all.first(40), ForwardOptions{}, logits.data()).ok());
  EXPECT_TRUE(
      Forward(model, ctx, state, all.subspan(40), ForwardOptions{}, logits.data() + 40 * V).ok());
  return logits;
}

// The product matrices are tiled (the MTP layer's too), never the embeddings, kv_b_proj (read row
// by row), the router or a read-only mapping. With bf16-dot on, a product of 8+ tokens gives the
// row-major weight's bits; those of fewer tokens (decode, rare experts) sum even and odd columns
// apart, which moves each output by f32 rounding only: the logits within 1e-5 of their largest
// value, as the other exact paths' orderings are held (model_reference_test). Without bf16-dot
// every product on tiles takes that dot form. Every ISA: AVX-512 and AVX2 read the tiles natively
// (AVX2: its dot form for few tokens, the packed form from 32), the scalar ISA through the
// reference (bitwise the row-major weight's).
class ModelBf16Tiles : public ::testing::TestWithParam<DType> {};

TEST_P(ModelBf16Tiles, TiledMatricesGiveTheSameLogits) {
  auto config = PresetConfig("tiny-v3");
  ASSERT_TRUE(config.ok());
  config->moe_intermediate_size = 64;  // two tiles of 32 rows (gate, up); down: 2 x 32 columns
  testing::TempDir dir;
  RandomCheckpointOptions options;
  options.seed = 9;
  options.dtype = GetParam();
  options.mtp = true;
  // FP8: scale blocks of 4 rows, so each head's W_UK (16 rows) and W_UV (12) are whole blocks and
  // decoding gets its copies of them (weights.h, SplitKvBProj).
  options.fp8_block_rows = 4;
  ASSERT_TRUE(WriteRandomCheckpoint(*config, options, dir.path()).ok());
  LoadOptions tiled;
  tiled.tile_bf16_rows = true;
  auto plain = Model::Load(dir.path(), LoadOptions{});
  auto model = Model::Load(dir.path(), tiled);
  // Tiled on two threads at load (LoadOptions::pool, as the CLI loads).
  ThreadPool load_pool(2);
  LoadOptions tiled_in_parallel = tiled;
  tiled_in_parallel.pool = &load_pool;
  auto parallel = Model::Load(dir.path(), tiled_in_parallel);
  ASSERT_TRUE(plain.ok() && model.ok() && parallel.ok());
  const ModelWeights& w = (*model)->weights();
  const LayerWeights& moe = w.layers[config->first_k_dense_replace];
  ASSERT_TRUE(moe.is_moe);
  // FP8 tiles come with their zero-exponent line flags (the decode kernels' line form needs them).
  const bool fp8 = GetParam() == DType::kF8E4M3;
  for (const WeightView* v :
       {&moe.moe.experts[0].gate_proj, &moe.moe.experts[1].up_proj,
        &moe.moe.experts.back().down_proj, &w.mtp[0].layer.moe.experts[0].down_proj}) {
    EXPECT_EQ(v->row_tiles, ops::kBf16Tile);
    EXPECT_EQ(v->fp8_line_flags != nullptr, fp8);
  }
  ASSERT_NE(w.lm_head.data, w.embed_tokens.data);
  for (const WeightView* v :
       {&moe.moe.shared_experts.gate_proj, &moe.attn.q_b_proj, &moe.attn.o_proj,
        &w.layers[0].mlp.down_proj, &w.lm_head, &w.mtp[0].eh_proj, &w.mtp[0].shared_head_head})
    EXPECT_EQ(v->row_tiles, ops::kBf16Tile);
  // The parallel load's views: tiled alike, FP8 ones with their line flags (the same flags, so
  // the same kernels, hence the same logits below).
  const ModelWeights& pw = (*parallel)->weights();
  const LayerWeights& pmoe = pw.layers[config->first_k_dense_replace];
  for (const auto& [a, b] :
       {std::pair{&moe.moe.experts[0].gate_proj, &pmoe.moe.experts[0].gate_proj},
        {&moe.attn.q_b_proj, &pmoe.attn.q_b_proj},
        {&moe.attn.kv_b_uv, &pmoe.attn.kv_b_uv},  // decoding's W_UV copy (SplitKvBProj)
        {&w.mtp[0].layer.attn.kv_b_uv, &pw.mtp[0].layer.attn.kv_b_uv},
        {&w.lm_head, &pw.lm_head},
        {&w.mtp[0].shared_head_head, &pw.mtp[0].shared_head_head}}) {
    EXPECT_EQ(b->row_tiles, a->row_tiles);
    EXPECT_EQ(b->fp8_line_flags != nullptr, a->fp8_line_flags != nullptr);
    if (a->fp8_line_flags != nullptr) {
      EXPECT_TRUE(std::equal(a->fp8_line_flags, a->fp8_line_flags + ops::Fp8LineFlagsSize(*a),
                             b->fp8_line_flags));
    }
  }
  for (const WeightView* v : {&moe.attn.kv_b_proj, &moe.moe.gate, &w.embed_tokens})
    EXPECT_EQ(v->row_tiles, 0);
  // Decoding's copies of kv_b_proj's halves (either format), W_UK row-major, W_UV (48 rows) in
  // one tile and 16 rows past it.
  const int64_t nh = config->num_attention_heads;
  for (const AttentionWeights* a : {&moe.attn, &w.mtp[0].layer.attn}) {
    EXPECT_EQ(a->kv_b_uk.rows, nh * config->qk_nope_head_dim);
    EXPECT_EQ(a->kv_b_uk.row_tiles, 0);
    EXPECT_EQ(a->kv_b_uv.rows, nh * config->v_head_dim);
    EXPECT_EQ(a->kv_b_uv.row_tiles, ops::kBf16Tile);
    EXPECT_EQ(a->kv_b_uv.fp8_line_flags != nullptr, fp8);
    if (GetParam() == DType::kBF16) {  // as kv_b_proj: no scales
      EXPECT_EQ(a->kv_b_uk.scale, nullptr);
      EXPECT_EQ(a->kv_b_uv.scale, nullptr);
    }
  }
  LoadOptions mapped = tiled;
  mapped.load_mode = io::LoadMode::kMmap;
  auto mapped_model = Model::Load(dir.path(), mapped);
  ASSERT_TRUE(mapped_model.ok());
  EXPECT_EQ(mapped_model.value()->weights().layers[1].moe.experts[0].gate_proj.row_tiles, 0);

  ThreadPool pool(2);
  for (ops::Isa isa : ops::RunnableIsas()) {
    for (bool bf16_dot : {false, true}) {
      SCOPED_TRACE(std::string(ops::IsaName(isa)) + (bf16_dot ? " bf16-dot" : " exact"));
      ops::KernelContext ctx{&pool, isa};
      ctx.bf16_dot = bf16_dot;
      const std::vector<float> want = PrefillAndDecode(**plain, ctx);
      const std::vector<float> got = PrefillAndDecode(**model, ctx);
      EXPECT_EQ(PrefillAndDecode(**parallel, ctx), got);
      double err = 0, top = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]));
        top = std::max(top, std::fabs(static_cast<double>(want[i])));
      }
      EXPECT_LE(err, 1e-5 * top);
      if (isa == ops::Isa::kScalar) {
        EXPECT_EQ(got, want);  // the reference reads either layout in the same order
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, ModelBf16Tiles, ::testing::Values(DType::kBF16, DType::kF8E4M3),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

}  // namespace
}  // namespace dsv3
