// The roofline accounting (model/param_count.h): bytes one decode step reads and multiply-adds per
// token, against numbers computed by hand for tiny-v3 and against loaded models of every format.
#include <gtest/gtest.h>

#include "model/param_count.h"
#include "model/presets.h"
#include "model/quantize.h"
#include "model/random_checkpoint.h"
#include "model/transformer.h"
#include "test_util.h"

namespace dsv3 {
namespace {

ModelConfig TinyV3() {
  auto c = PresetConfig("tiny-v3");
  EXPECT_TRUE(c.ok());
  return *c;
}

TEST(ParamCount, MatrixBytesPerFormat) {
  // [130, 100]: 2 x 1 FP8 blocks of 128, 4 groups of 32 per row (the last partial).
  EXPECT_EQ(MatrixBytes(QuantType::kF32, 130, 100), 52000);
  EXPECT_EQ(MatrixBytes(QuantType::kBF16, 130, 100), 26000);
  EXPECT_EQ(MatrixBytes(QuantType::kFp8, 130, 100), 13000 + 2 * 4);
  EXPECT_EQ(MatrixBytes(QuantType::kQ8_0, 130, 100), 13000 + 130 * 4 * 4);
  EXPECT_EQ(MatrixBytes(QuantType::kQ4_0, 130, 100), 130 * 50 + 130 * 4 * 4);
  // An odd width: q4_0 rows round up to whole bytes.
  EXPECT_EQ(MatrixBytes(QuantType::kQ4_0, 3, 33), 3 * 17 + 3 * 2 * 4);
}

// Tiles holding f16 scales (ops/row_tiles.h) are read with 2 bytes per scale of their rows; the
// row-major rows past the last tile keep 4.
TEST(ParamCount, F16TileScalesCountTwoBytes) {
  ops::WeightView w{DType::kU8, 40, 64};  // 2 groups a row, tiles of rows 0-31
  EXPECT_EQ(WeightViewBytes(w), 40 * 32 + 40 * 2 * 4);
  w.row_tiles = 16;
  EXPECT_EQ(WeightViewBytes(w), 40 * 32 + 40 * 2 * 4);
  w.f16_tile_scales = true;
  EXPECT_EQ(WeightViewBytes(w), 40 * 32 + 32 * 2 * 2 + 8 * 2 * 4);
  w.dtype = DType::kI8;
  EXPECT_EQ(WeightViewBytes(w), 40 * 64 + 32 * 2 * 2 + 8 * 2 * 4);
}

// tiny-v3: H 48, V 160, 3 layers (1 dense), intermediate 80, moe_intermediate 24, 16 experts top-4,
// 1 shared, 4 heads, q_lora 40, kv_lora 24, nope/rope/v 16/8/12, noaux_tc, untied.
//   attention matrices per layer: q_a 40*48 + q_b 4*24*40 + kv_a 32*48 + kv_b 4*28*24 + o 48*48
//   = 12288 weights (decoding reads kv_b as stored)
//   f32 copies per layer: norms 48+48+40+24 = 160 -> 640 bytes
//   dense MLP: 3*80*48 = 11520 weights; MoE: router 16*48 = 768, bias 16 (f32),
//   shared + 4 experts: 5 * 3*24*48 = 17280 weights
//   global: embedding row 48, final norm 48 (f32), lm_head 160*48 = 7680
// BF16: layer 0: 2*(12288 + 11520) + 640 = 48256; MoE layers: 2*(12288 + 768 + 17280) + 640 + 64
//   = 61376 each; global 2*48 + 192 + 2*7680 = 15648; total 48256 + 2*61376 + 15648 = 186656.
constexpr int64_t kTinyV3Bf16DecodeBytes = 186656;

TEST(ParamCount, DecodeBytesOfTinyV3ByHand) {
  const ModelConfig c = TinyV3();
  const DecodeBytes bf16 = CountDecodeBytes(c, QuantType::kBF16);
  EXPECT_EQ(bf16.weights, kTinyV3Bf16DecodeBytes);
  EXPECT_EQ(bf16.kv_per_position, 3 * (24 + 8) * 4);
  EXPECT_EQ(bf16.AtContext(10), kTinyV3Bf16DecodeBytes + 10 * 384);
  // Two fewer routed experts in each of the 2 MoE layers: 2 * 2 * 3456 BF16 weights less.
  EXPECT_EQ(CountDecodeBytes(c, QuantType::kBF16, 2).weights, kTinyV3Bf16DecodeBytes - 27648);
  // F32: each of the 12288 + 11520 + 2*(12288 + 768 + 17280) + 48 + 7680 = 92208 BF16 weights
  // above takes 2 bytes more.
  EXPECT_EQ(CountDecodeBytes(c, QuantType::kF32).weights, kTinyV3Bf16DecodeBytes + 2 * 92208);
  // The quantized formats are smaller than bf16 in the order fp8 > q8_0 > q4_0 here.
  const int64_t fp8 = CountDecodeBytes(c, QuantType::kFp8).weights;
  const int64_t q8 = CountDecodeBytes(c, QuantType::kQ8_0).weights;
  const int64_t q4 = CountDecodeBytes(c, QuantType::kQ4_0).weights;
  EXPECT_LT(q4, q8);
  EXPECT_LT(q8, kTinyV3Bf16DecodeBytes);
  EXPECT_LT(fp8, kTinyV3Bf16DecodeBytes);
}

TEST(ParamCount, TokenMacsOfTinyV3ByHand) {
  // Per layer attention 9600 + kv_b 2688; dense 11520; MoE 768 + 17280 (kv_b counted once).
  const TokenMacs macs = CountTokenMacs(TinyV3());
  EXPECT_EQ(macs.layers, 3 * (9600 + 2688) + 11520 + 2 * (768 + 17280));
  EXPECT_EQ(macs.lm_head, 160 * 48);
}

// The loaded model's accounting (from its tensors' dtypes) equals the format's (from the config).
TEST(ParamCount, LoadedModelsMatchTheirFormat) {
  testing::TempDir dir;
  const ModelConfig c = TinyV3();
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF8E4M3}) {
    RandomCheckpointOptions options;
    options.dtype = dtype;
    options.seed = 3;
    const std::string path = dir / std::string(DTypeName(dtype));
    ASSERT_TRUE(WriteRandomCheckpoint(c, options, path).ok());
  }
  for (QuantType type : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    QuantizeOptions options;
    options.type = type;
    ASSERT_TRUE(QuantizeModel(dir / "BF16", dir / QuantTypeName(type), options).ok());
  }
  const std::pair<std::string, QuantType> cases[] = {{"F32", QuantType::kF32},
                                                     {"BF16", QuantType::kBF16},
                                                     {"F8_E4M3", QuantType::kFp8},
                                                     {"q8_0", QuantType::kQ8_0},
                                                     {"q4_0", QuantType::kQ4_0}};
  for (const auto& [name, type] : cases) {
    auto model = Model::Load(dir / name, LoadOptions{});
    ASSERT_TRUE(model.ok()) << model.status().message();
    const DecodeBytes loaded = CountDecodeBytes((*model)->config(), (*model)->weights());
    const DecodeBytes expected = CountDecodeBytes(c, type);
    EXPECT_EQ(loaded.weights, expected.weights) << name;
    EXPECT_EQ(loaded.kv_per_position, expected.kv_per_position) << name;
    EXPECT_EQ(WeightFormatName((*model)->weights()), QuantTypeName(type)) << name;
    EXPECT_EQ(CountDecodeBytes((*model)->config(), (*model)->weights(), 2).weights,
              CountDecodeBytes(c, type, 2).weights)
        << name;
    // Split by phase (bench --profile), the same bytes; for every k (the routed experts'
    // share rounds as the total's does).
    for (int64_t k : {0, 1, 2, 3}) {
      const PhaseBytes phases = CountDecodeBytesByPhase((*model)->config(), (*model)->weights(), k);
      int64_t weights = 0, per_position = 0;
      for (int i = 0; i < kNumPhases; ++i) {
        EXPECT_GE(phases.weights[i], 0) << name << " " << PhaseName(static_cast<Phase>(i));
        weights += phases.weights[i];
        per_position += phases.per_position[i];
      }
      EXPECT_EQ(weights, CountDecodeBytes((*model)->config(), (*model)->weights(), k).weights)
          << name << " k=" << k;
      EXPECT_EQ(per_position, loaded.kv_per_position) << name;
      EXPECT_EQ(phases.per_position[static_cast<int>(Phase::kAttention)], loaded.kv_per_position);
    }
  }
}

// tiny-v3 BF16 by phase, by hand: hidden 64, vocab 1024 (lm_head [1024, 64] + the final norm),
// 4 routed experts' router [4, 64] + 4 f32 biases per MoE layer.
TEST(ParamCount, DecodeBytesByPhaseOfTinyV3) {
  testing::TempDir dir;
  const ModelConfig c = TinyV3();
  RandomCheckpointOptions options;
  options.dtype = DType::kBF16;
  ASSERT_TRUE(WriteRandomCheckpoint(c, options, dir / "m").ok());
  auto model = Model::Load(dir / "m", LoadOptions{});
  ASSERT_TRUE(model.ok()) << model.status().message();
  const PhaseBytes b = CountDecodeBytesByPhase((*model)->config(), (*model)->weights());
  const auto at = [&](Phase p) { return b.weights[static_cast<int>(p)]; };
  const int64_t H = c.hidden_size, moe_layers = c.num_hidden_layers - c.first_k_dense_replace;
  EXPECT_EQ(at(Phase::kLmHead), c.vocab_size * H * 2 + H * 4);
  EXPECT_EQ(at(Phase::kRouter), moe_layers * (c.n_routed_experts * H * 2 + c.n_routed_experts * 4));
  EXPECT_EQ(at(Phase::kAttentionOut),
            c.num_hidden_layers * H * c.num_attention_heads * c.v_head_dim * 2);
  // The embedding row and the two norms of every layer.
  EXPECT_EQ(at(Phase::kOther), H * 2 + c.num_hidden_layers * 2 * H * 4);
  EXPECT_EQ(at(Phase::kDenseMlp), c.first_k_dense_replace * 3 * H * c.intermediate_size * 2);
}

// Prefill multiply-adds by phase against CountTokenMacs's own enumeration of the matrices (the
// linear phases) and the causal attention counted by hand: token t of T after p cached positions
// sees p + t + 1 positions, (dn + dr) + dv multiply-adds per head for each, and kv_b_proj is
// applied to all p + T positions.
TEST(ParamCount, PrefillMacsByPhase) {
  for (const char* preset : {"tiny-v3", "bench-medium"}) {
    auto c = PresetConfig(preset);
    ASSERT_TRUE(c.ok());
    const int64_t nh = c->num_attention_heads, L = c->num_hidden_layers, H = c->hidden_size;
    const int64_t dn = c->qk_nope_head_dim, dv = c->v_head_dim, r = c->kv_lora_rank;
    for (int64_t k : {0, 2}) {
      const TokenMacs token = CountTokenMacs(*c, k);
      for (int64_t T : {1, 7, 16}) {
        for (int64_t p : {0, 5}) {
          SCOPED_TRACE(std::string(preset) + " k=" + std::to_string(k) + " T=" + std::to_string(T) +
                       " p=" + std::to_string(p));
          const PhaseMacs m = CountPrefillMacsByPhase(*c, T, p, k);
          const auto at = [&](Phase phase) { return m.macs[static_cast<int>(phase)]; };
          int64_t seen = 0;  // positions the tokens see
          for (int64_t t = 0; t < T; ++t) seen += p + t + 1;
          const int64_t scores = L * nh * seen * (c->qk_head_dim() + dv);
          const int64_t decompress = L * nh * (dn + dv) * r;  // per position
          EXPECT_EQ(at(Phase::kAttention), scores + (p + T) * decompress);
          int64_t sum = 0;
          for (int64_t v : m.macs) sum += v;
          EXPECT_EQ(sum - scores - p * decompress, T * token.layers + token.lm_head);
          EXPECT_EQ(at(Phase::kLmHead), c->vocab_size * H);
          EXPECT_EQ(at(Phase::kRouter),
                    T * (L - c->first_k_dense_replace) * c->n_routed_experts * H);
          EXPECT_EQ(at(Phase::kOther), 0);
        }
      }
    }
  }
}

}  // namespace
}  // namespace dsv3
