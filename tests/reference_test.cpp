// Self-checks of the float64 reference model (tests/reference/), independent of src/model: tiny
// checkpoints are written here and properties of the spec are verified by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "reference/reference_model.h"
#include "test_util.h"
#include "util/dtype.h"

namespace dsv3::reference {
namespace {

using nlohmann::json;

// ---- Tiny checkpoints -------------------------------------------------------------------

struct TestTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<double> values;  // the exact values the file holds (decoded)
  std::vector<uint8_t> bytes;
};

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

class TinyModel {
 public:
  json config;
  std::map<std::string, TestTensor> tensors;

  // Stores values as F32 or BF16 (rounded; `values` keeps what the file holds).
  void Set(const std::string& name, const std::vector<int64_t>& shape, std::vector<double> values,
           DType dtype = DType::kF32) {
    ASSERT_EQ(static_cast<int64_t>(values.size()), Numel(shape)) << name;
    TestTensor t;
    t.dtype = dtype;
    t.shape = shape;
    for (double& v : values) {
      const float f = static_cast<float>(v);
      if (dtype == DType::kBF16) {
        const uint16_t bits = F32ToBf16(f);
        t.bytes.push_back(static_cast<uint8_t>(bits & 0xFF));
        t.bytes.push_back(static_cast<uint8_t>(bits >> 8));
        v = Bf16ToF32(bits);
      } else {
        uint8_t b[4];
        std::memcpy(b, &f, 4);
        t.bytes.insert(t.bytes.end(), b, b + 4);
        v = f;
      }
    }
    t.values = std::move(values);
    tensors[name] = std::move(t);
  }

  // FP8 e4m3 weight with its F32 block scale_inv grid (spec §9.3).
  void SetFp8(const std::string& name, int64_t rows, int64_t cols,
              const std::vector<uint8_t>& codes, const std::vector<double>& scales, int64_t br,
              int64_t bc) {
    const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
    Set(name + "_scale_inv", {sr, sc}, scales);
    const std::vector<double>& s = tensors[name + "_scale_inv"].values;
    TestTensor t;
    t.dtype = DType::kF8E4M3;
    t.shape = {rows, cols};
    t.bytes = codes;
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        t.values.push_back(static_cast<double>(Fp8E4M3ToF32(codes[i * cols + j])) *
                           s[(i / br) * sc + j / bc]);
    tensors[name] = std::move(t);
  }

  const std::vector<double>& V(const std::string& name) const { return tensors.at(name).values; }

  void Zero(const std::string& name) {
    TestTensor& t = tensors.at(name);
    Set(name, t.shape, std::vector<double>(t.values.size(), 0.0), t.dtype);
  }

  void Write(const std::string& dir, int shards = 1) const {
    std::ofstream(dir + "/config.json") << config.dump(2);
    std::vector<io::TensorToWrite> list;
    for (const auto& [name, t] : tensors)
      list.push_back({name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()});
    Status st = io::WriteCheckpoint(dir, list, shards);
    ASSERT_TRUE(st.ok()) << st.message();
  }
};

json TinyConfig() {
  return json{
      {"model_type", "deepseek_v3"},
      {"vocab_size", 61},
      {"hidden_size", 32},
      {"intermediate_size", 40},
      {"moe_intermediate_size", 12},
      {"num_hidden_layers", 2},
      {"num_nextn_predict_layers", 1},
      {"num_attention_heads", 2},
      {"num_key_value_heads", 2},
      {"q_lora_rank", 24},
      {"kv_lora_rank", 20},
      {"qk_nope_head_dim", 8},
      {"qk_rope_head_dim", 8},
      {"v_head_dim", 12},
      {"n_routed_experts", 8},
      {"n_shared_experts", 1},
      {"num_experts_per_tok", 3},
      {"n_group", 4},
      {"topk_group", 2},
      {"routed_scaling_factor", 2.5},
      {"norm_topk_prob", true},
      {"scoring_func", "sigmoid"},
      {"topk_method", "noaux_tc"},
      {"first_k_dense_replace", 1},
      {"moe_layer_freq", 1},
      {"hidden_act", "silu"},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000.0},
      {"rope_scaling",
       {{"type", "yarn"},
        {"factor", 4.0},
        {"original_max_position_embeddings", 64},
        {"beta_fast", 32},
        {"beta_slow", 1},
        {"mscale", 1.0},
        {"mscale_all_dim", 1.0}}},
      {"max_position_embeddings", 256},
      {"tie_word_embeddings", false},
  };
}

// All tensors of `config` with random values. fp8_block > 0: linear weights of attention and
// FFN are FP8 with that block size (power-of-two-ish scales so that the products are exact).
TinyModel RandomModel(const json& config, uint64_t seed, int64_t fp8_block = 0) {
  TinyModel m;
  m.config = config;
  if (fp8_block > 0)
    m.config["quantization_config"] = {{"quant_method", "fp8"},
                                       {"weight_block_size", {fp8_block, fp8_block}}};
  auto parsed = ParseReferenceConfig(m.config.dump());
  EXPECT_TRUE(parsed.ok()) << parsed.status().message();
  const ReferenceConfig c = parsed.value();
  std::mt19937_64 rng(seed);
  auto uniform = [&](double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng);
  };
  auto random = [&](int64_t n, double lo, double hi) {
    std::vector<double> v(static_cast<size_t>(n));
    for (double& x : v) x = uniform(lo, hi);
    return v;
  };
  auto norm = [&](const std::string& name, int64_t n) {
    m.Set(name, {n}, random(n, 0.5, 1.5), DType::kBF16);
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in) {
    const double a = 1.5 / std::sqrt(static_cast<double>(in));
    if (fp8_block <= 0) {
      m.Set(name, {out, in}, random(out * in, -a, a));
      return;
    }
    std::vector<uint8_t> codes(static_cast<size_t>(out * in));
    for (uint8_t& q : codes) {
      // exponent 0..8, any mantissa, any sign: |value| ≤ 3.75, never NaN.
      const int e = static_cast<int>(rng() % 9), mant = static_cast<int>(rng() % 8);
      q = static_cast<uint8_t>(((rng() & 1) << 7) | (e << 3) | mant);
    }
    const int64_t sr = (out + fp8_block - 1) / fp8_block, sc = (in + fp8_block - 1) / fp8_block;
    std::vector<double> scales(static_cast<size_t>(sr * sc));
    for (double& s : scales) s = (8.0 + static_cast<double>(rng() % 8)) / 16.0 * a / 2.0;
    // Round the scale to 4 significant bits so e4m3 × scale is exact in F32.
    for (double& s : scales) {
      int exp;
      const double frac = std::frexp(s, &exp);
      s = std::ldexp(std::round(frac * 16.0) / 16.0, exp);
    }
    m.SetFp8(name, out, in, codes, scales, fp8_block, fp8_block);
  };
  const int64_t H = c.hidden_size, V = c.vocab_size, nh = c.num_attention_heads;
  const int64_t dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dv = c.v_head_dim;
  const int64_t r = c.kv_lora_rank;
  m.Set("model.embed_tokens.weight", {V, H}, random(V * H, -1, 1), DType::kBF16);
  norm("model.norm.weight", H);
  if (!c.tie_word_embeddings) m.Set("lm_head.weight", {V, H}, random(V * H, -0.5, 0.5));
  auto mlp = [&](const std::string& p, int64_t width) {
    linear(p + "gate_proj.weight", width, H);
    linear(p + "up_proj.weight", width, H);
    linear(p + "down_proj.weight", H, width);
  };
  for (int64_t layer = 0; layer < c.num_hidden_layers + c.num_nextn_predict_layers; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    norm(p + "input_layernorm.weight", H);
    norm(p + "post_attention_layernorm.weight", H);
    const std::string a = p + "self_attn.";
    if (c.q_lora_rank == 0) {
      linear(a + "q_proj.weight", nh * (dn + dr), H);
    } else {
      linear(a + "q_a_proj.weight", c.q_lora_rank, H);
      norm(a + "q_a_layernorm.weight", c.q_lora_rank);
      linear(a + "q_b_proj.weight", nh * (dn + dr), c.q_lora_rank);
    }
    linear(a + "kv_a_proj_with_mqa.weight", r + dr, H);
    norm(a + "kv_a_layernorm.weight", r);
    linear(a + "kv_b_proj.weight", nh * (dn + dv), r);
    linear(a + "o_proj.weight", H, nh * dv);
    if (c.IsMoeLayer(layer)) {
      const int64_t E = c.n_routed_experts;
      m.Set(p + "mlp.gate.weight", {E, H}, random(E * H, -1, 1), DType::kBF16);
      if (c.topk_method == TopkMethod::kNoauxTc)
        m.Set(p + "mlp.gate.e_score_correction_bias", {E}, random(E, -0.2, 0.2));
      for (int64_t e = 0; e < E; ++e)
        mlp(p + "mlp.experts." + std::to_string(e) + ".", c.moe_intermediate_size);
      if (c.n_shared_experts > 0)
        mlp(p + "mlp.shared_experts.", c.n_shared_experts * c.moe_intermediate_size);
    } else {
      mlp(p + "mlp.", c.intermediate_size);
    }
    if (layer >= c.num_hidden_layers) {  // MTP-only tensors (spec §8)
      m.Set(p + "embed_tokens.weight", {V, H}, random(V * H, -1, 1), DType::kBF16);
      norm(p + "enorm.weight", H);
      norm(p + "hnorm.weight", H);
      m.Set(p + "eh_proj.weight", {H, 2 * H}, random(H * 2 * H, -0.3, 0.3), DType::kBF16);
      norm(p + "shared_head.norm.weight", H);
      m.Set(p + "shared_head.head.weight", {V, H}, random(V * H, -0.5, 0.5), DType::kBF16);
    }
  }
  return m;
}

ReferenceOutput RunModel(const TinyModel& m, const std::vector<int32_t>& tokens,
                         const ReferenceOptions& options = {}, int shards = 1) {
  testing::TempDir dir;
  m.Write(dir.path(), shards);
  auto out = ReferenceForward(dir.path(), tokens, options);
  EXPECT_TRUE(out.ok()) << out.status().message();
  if (!out.ok()) return {};
  return std::move(out).value();
}

Status RunStatus(const TinyModel& m, const std::vector<int32_t>& tokens) {
  testing::TempDir dir;
  m.Write(dir.path());
  auto out = ReferenceForward(dir.path(), tokens);
  return out.ok() ? Status::Ok() : out.status();
}

double MaxRelDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(a[i] - b[i]));
    max_ref = std::max(max_ref, std::abs(b[i]));
  }
  return max_diff / max_ref;
}

// ---- Hand-computation helpers (straight from the spec formulas) -------------------------

std::vector<double> MatVec(const std::vector<double>& w, int64_t rows, int64_t cols,
                           const std::vector<double>& x) {
  std::vector<double> y(static_cast<size_t>(rows), 0.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) y[i] += w[i * cols + j] * x[j];
  return y;
}

std::vector<double> RmsNormVec(const std::vector<double>& x, const std::vector<double>& w,
                               double eps) {
  double ms = 0.0;
  for (double v : x) ms += v * v;
  ms /= static_cast<double>(x.size());
  std::vector<double> y(x.size());
  for (size_t j = 0; j < x.size(); ++j) y[j] = w[j] * x[j] / std::sqrt(ms + eps);
  return y;
}

std::vector<double> Row(const std::vector<double>& m, int64_t cols, int64_t row) {
  return std::vector<double>(m.begin() + row * cols, m.begin() + (row + 1) * cols);
}

std::vector<double> MlpVec(const TinyModel& m, const std::string& p, int64_t width, int64_t H,
                           const std::vector<double>& x) {
  auto g = MatVec(m.V(p + "gate_proj.weight"), width, H, x);
  auto u = MatVec(m.V(p + "up_proj.weight"), width, H, x);
  std::vector<double> a(static_cast<size_t>(width));
  for (int64_t i = 0; i < width; ++i) a[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  return MatVec(m.V(p + "down_proj.weight"), H, width, a);
}

void ZeroAttention(TinyModel& m, int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.";
  for (auto& [name, t] : m.tensors)
    if (name.rfind(p, 0) == 0 && name.find("layernorm") == std::string::npos &&
        name.find("scale_inv") == std::string::npos)
      m.Zero(name);
}

void ZeroMlp(TinyModel& m, int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".mlp.";
  for (auto& [name, t] : m.tensors)
    if (name.rfind(p, 0) == 0) m.Zero(name);
}

// ---- (a) Zero attention and MLP weights: logits = lm_head · RMSNorm(embedding) -----------

TEST(ReferenceForward, ZeroLayersGiveNormalisedEmbedding) {
  for (bool tie : {false, true}) {
    json config = TinyConfig();
    config["num_hidden_layers"] = 1;
    config["num_nextn_predict_layers"] = 0;
    config["n_routed_experts"] = nullptr;
    config["tie_word_embeddings"] = tie;
    TinyModel m = RandomModel(config, 1);
    ZeroAttention(m, 0);
    ZeroMlp(m, 0);
    const std::vector<int32_t> tokens = {3, 17, 60, 0, 3};
    ReferenceOutput out = RunModel(m, tokens);
    ASSERT_EQ(out.T, 5);
    ASSERT_EQ(out.vocab, 61);
    const auto& head = m.V(tie ? "model.embed_tokens.weight" : "lm_head.weight");
    std::vector<double> expected;
    for (int32_t t : tokens) {
      auto x =
          RmsNormVec(Row(m.V("model.embed_tokens.weight"), 32, t), m.V("model.norm.weight"), 1e-6);
      for (double v : MatVec(head, 61, 32, x)) expected.push_back(v);
    }
    EXPECT_LT(MaxRelDiff(out.logits, expected), 1e-14);
  }
}

// ---- (b) Causality ------------------------------------------------------------------------

TEST(ReferenceForward, PrefixLogitsDoNotChangeWhenTokensAreAppended) {
  TinyModel m = RandomModel(TinyConfig(), 2);
  const std::vector<int32_t> full = {5, 1, 42, 7, 7, 30, 12, 59, 2, 33};
  const std::vector<int32_t> prefix(full.begin(), full.begin() + 6);
  ReferenceOptions options;
  options.mtp = true;
  ReferenceOutput a = RunModel(m, full, options);
  ReferenceOutput b = RunModel(m, prefix, options);
  ASSERT_EQ(a.logits.size(), 10u * 61);
  ASSERT_EQ(b.logits.size(), 6u * 61);
  ASSERT_EQ(a.mtp_logits.size(), 9u * 61);
  ASSERT_EQ(b.mtp_logits.size(), 5u * 61);
  EXPECT_LT(MaxRelDiff(std::vector<double>(a.logits.begin(), a.logits.begin() + 6 * 61), b.logits),
            1e-14);
  EXPECT_LT(MaxRelDiff(std::vector<double>(a.mtp_logits.begin(), a.mtp_logits.begin() + 5 * 61),
                       b.mtp_logits),
            1e-14);
  // The later rows do depend on the earlier tokens.
  std::vector<int32_t> other = full;
  other[0] = 6;
  ReferenceOutput c = RunModel(m, other, options);
  EXPECT_GT(std::abs(c.logits[9 * 61] - a.logits[9 * 61]), 1e-9);
  // Sharded checkpoints read the same.
  ReferenceOutput d = RunModel(m, full, options, 3);
  EXPECT_EQ(d.logits, a.logits);
}

// ---- (g) Half-split rope layout with permuted weights (spec §5.2) -------------------------

void PermuteRopeRows(TinyModel& m, const std::string& name, int64_t block_rows, int64_t offset,
                     int64_t d, int64_t cols) {
  TestTensor& t = m.tensors.at(name);
  std::vector<double> v = t.values;
  const int64_t blocks = t.shape[0] / block_rows;
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t i = 0; i < d; ++i) {
      // new row offset+i = old row offset + [0,2,…,d-2, 1,3,…,d-1][i]
      const int64_t src = i < d / 2 ? 2 * i : 2 * (i - d / 2) + 1;
      for (int64_t j = 0; j < cols; ++j)
        v[(b * block_rows + offset + i) * cols + j] =
            t.values[(b * block_rows + offset + src) * cols + j];
    }
  }
  m.Set(name, t.shape, v, t.dtype);
}

TEST(ReferenceForward, HalfSplitLayoutWithPermutedWeightsMatchesInterleaved) {
  for (bool q_lora : {true, false}) {
    json config = TinyConfig();
    if (!q_lora) config["q_lora_rank"] = nullptr;
    config["rope_scaling"]["mscale"] = 0.9;  // cos/sin factor != 1
    TinyModel m = RandomModel(config, 3);
    const std::vector<int32_t> tokens = {9, 8, 50, 1, 23, 23, 4};
    ReferenceOptions options;
    options.mtp = true;
    ReferenceOutput interleaved = RunModel(m, tokens, options);

    TinyModel permuted = m;
    permuted.config["rope_interleave"] = false;
    const int64_t dn = 8, dr = 8, r = 20, H = 32, rq = 24;
    for (int layer = 0; layer < 3; ++layer) {
      const std::string p = "model.layers." + std::to_string(layer) + ".self_attn.";
      if (q_lora)
        PermuteRopeRows(permuted, p + "q_b_proj.weight", dn + dr, dn, dr, rq);
      else
        PermuteRopeRows(permuted, p + "q_proj.weight", dn + dr, dn, dr, H);
      PermuteRopeRows(permuted, p + "kv_a_proj_with_mqa.weight", r + dr, r, dr, H);
    }
    ReferenceOutput half = RunModel(permuted, tokens, options);
    EXPECT_LT(MaxRelDiff(half.logits, interleaved.logits), 1e-12);
    EXPECT_LT(MaxRelDiff(half.mtp_logits, interleaved.mtp_logits), 1e-12);
    // Without the permutation the half-split rotation gives different logits.
    TinyModel wrong = m;
    wrong.config["rope_interleave"] = false;
    ReferenceOutput bad = RunModel(wrong, tokens, options);
    EXPECT_GT(MaxRelDiff(bad.logits, interleaved.logits), 1e-6);
  }
}

// ---- FP8 block dequantisation equals the same weights stored in F32 ----------------------

TEST(ReferenceForward, Fp8BlockWeightsMatchDequantisedF32) {
  TinyModel fp8 = RandomModel(TinyConfig(), 4, /*fp8_block=*/16);  // 24, 28, 40, 12: ragged blocks
  TinyModel f32 = fp8;
  for (const auto& [name, t] : fp8.tensors) {
    if (t.dtype != DType::kF8E4M3) continue;
    f32.Set(name, t.shape, t.values, DType::kF32);  // exact: ≤ 8 significant bits
    ASSERT_EQ(f32.V(name), t.values) << name;
    f32.tensors.erase(name + "_scale_inv");
  }
  const std::vector<int32_t> tokens = {11, 0, 60, 37, 5};
  ReferenceOptions options;
  options.mtp = true;
  ReferenceOutput a = RunModel(fp8, tokens, options);
  ReferenceOutput b = RunModel(f32, tokens, options);
  EXPECT_EQ(a.logits, b.logits);
  EXPECT_EQ(a.mtp_logits, b.mtp_logits);
  // Scales really matter: halving one scale block changes the logits.
  TinyModel changed = fp8;
  TestTensor& s =
      changed.tensors.at("model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv");
  std::vector<double> sv = s.values;
  sv.back() *= 0.5;  // the ragged last block (rows 16..27, cols 16..31)
  changed.Set("model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv", s.shape, sv);
  ReferenceOutput c = RunModel(changed, tokens);
  EXPECT_GT(MaxRelDiff(c.logits, b.logits), 1e-9);
}

// ---- MoE layer by hand (spec §6): routed experts + shared expert, and the k override ------

TEST(ReferenceForward, MoeLayerByHand) {
  json config = TinyConfig();
  config["num_hidden_layers"] = 1;
  config["num_nextn_predict_layers"] = 0;
  config["first_k_dense_replace"] = 0;
  TinyModel m = RandomModel(config, 5);
  ZeroAttention(m, 0);
  const std::vector<int32_t> tokens = {2, 19, 44};
  const int64_t H = 32, E = 8, V = 61;
  const std::string p = "model.layers.0.mlp.";
  for (int k : {0, 1, 4}) {
    ReferenceOptions options;
    options.experts_per_token = k;
    ReferenceOutput out = RunModel(m, tokens, options);
    RoutingConfig rc;
    rc.n_group = 4;
    rc.topk_group = 2;
    rc.top_k = k == 0 ? 3 : k;
    rc.routed_scaling_factor = 2.5;
    std::vector<double> expected;
    for (int32_t t : tokens) {
      std::vector<double> h = Row(m.V("model.embed_tokens.weight"), H, t);  // attention is 0
      auto f = RmsNormVec(h, m.V("model.layers.0.post_attention_layernorm.weight"), 1e-6);
      auto routed = Route(MatVec(m.V(p + "gate.weight"), E, H, f),
                          m.V(p + "gate.e_score_correction_bias"), rc);
      ASSERT_TRUE(routed.ok());
      std::vector<double> y = MlpVec(m, p + "shared_experts.", 12, H, f);
      for (size_t i = 0; i < routed->experts.size(); ++i) {
        auto e_out = MlpVec(m, p + "experts." + std::to_string(routed->experts[i]) + ".", 12, H, f);
        for (int64_t j = 0; j < H; ++j) y[j] += routed->weights[i] * e_out[j];
      }
      for (int64_t j = 0; j < H; ++j) h[j] += y[j];
      auto x = RmsNormVec(h, m.V("model.norm.weight"), 1e-6);
      for (double v : MatVec(m.V("lm_head.weight"), V, H, x)) expected.push_back(v);
    }
    EXPECT_LT(MaxRelDiff(out.logits, expected), 1e-13) << "k=" << k;
  }
}

// ---- MTP by hand (spec §8): [emb ; hidden] order, post-norm hidden, own embedding/head -----

TEST(ReferenceForward, MtpByHand) {
  json config = TinyConfig();
  config["num_hidden_layers"] = 1;
  config["n_routed_experts"] = nullptr;
  TinyModel m = RandomModel(config, 6);
  for (int layer : {0, 1}) {
    ZeroAttention(m, layer);
    ZeroMlp(m, layer);
  }
  const std::vector<int32_t> tokens = {7, 3, 55, 21};
  const int64_t H = 32, V = 61;
  ReferenceOptions options;
  options.mtp = true;
  ReferenceOutput out = RunModel(m, tokens, options);
  ASSERT_EQ(out.mtp_logits.size(), 3u * 61);
  std::vector<double> expected;
  for (size_t i = 0; i + 1 < tokens.size(); ++i) {
    auto h = RmsNormVec(Row(m.V("model.embed_tokens.weight"), H, tokens[i]),
                        m.V("model.norm.weight"), 1e-6);  // main hidden after model.norm
    auto e = RmsNormVec(Row(m.V("model.layers.1.embed_tokens.weight"), H, tokens[i + 1]),
                        m.V("model.layers.1.enorm.weight"), 1e-6);
    auto hn = RmsNormVec(h, m.V("model.layers.1.hnorm.weight"), 1e-6);
    std::vector<double> cat = e;
    cat.insert(cat.end(), hn.begin(), hn.end());
    auto x = MatVec(m.V("model.layers.1.eh_proj.weight"), H, 2 * H, cat);  // layer adds zero
    auto y = RmsNormVec(x, m.V("model.layers.1.shared_head.norm.weight"), 1e-6);
    for (double v : MatVec(m.V("model.layers.1.shared_head.head.weight"), V, H, y))
      expected.push_back(v);
  }
  EXPECT_LT(MaxRelDiff(out.mtp_logits, expected), 1e-14);
  // Without the option, or with one token, there are no MTP logits.
  EXPECT_TRUE(RunModel(m, tokens).mtp_logits.empty());
  EXPECT_TRUE(RunModel(m, {4}, options).mtp_logits.empty());
}

// ---- A single token attends only to itself: o = W_UV c, checked by hand (spec §5.1) ------

TEST(ReferenceForward, SingleTokenAttentionByHand) {
  json config = TinyConfig();
  config["num_hidden_layers"] = 1;
  config["num_nextn_predict_layers"] = 0;
  config["n_routed_experts"] = nullptr;
  config["q_lora_rank"] = nullptr;
  TinyModel m = RandomModel(config, 8);
  ZeroMlp(m, 0);
  const int64_t H = 32, V = 61, nh = 2, dn = 8, dv = 12, r = 20;
  const int32_t token = 13;
  ReferenceOutput out = RunModel(m, {token});
  const std::string a = "model.layers.0.self_attn.";
  std::vector<double> h = Row(m.V("model.embed_tokens.weight"), H, token);
  auto x = RmsNormVec(h, m.V("model.layers.0.input_layernorm.weight"), 1e-6);
  auto ckv = MatVec(m.V(a + "kv_a_proj_with_mqa.weight"), r + 8, H, x);
  auto c = RmsNormVec(std::vector<double>(ckv.begin(), ckv.begin() + r),
                      m.V(a + "kv_a_layernorm.weight"), 1e-6);
  const auto& kvb = m.V(a + "kv_b_proj.weight");
  std::vector<double> o;
  for (int64_t head = 0; head < nh; ++head)
    for (int64_t d = 0; d < dv; ++d) {
      double s = 0;
      for (int64_t j = 0; j < r; ++j) s += kvb[(head * (dn + dv) + dn + d) * r + j] * c[j];
      o.push_back(s);
    }
  auto attn = MatVec(m.V(a + "o_proj.weight"), H, nh * dv, o);
  for (int64_t j = 0; j < H; ++j) h[j] += attn[j];
  auto hl = RmsNormVec(h, m.V("model.norm.weight"), 1e-6);
  EXPECT_LT(MaxRelDiff(out.logits, MatVec(m.V("lm_head.weight"), V, H, hl)), 1e-14);
}

// ---- Errors -------------------------------------------------------------------------------

TEST(ReferenceForward, Errors) {
  TinyModel m = RandomModel(TinyConfig(), 9);
  EXPECT_FALSE(RunStatus(m, {}).ok());
  Status bad = RunStatus(m, {1, 61});
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("61"), std::string::npos) << bad.message();
  EXPECT_FALSE(RunStatus(m, {-1}).ok());
  TinyModel missing = m;
  missing.tensors.erase("model.layers.1.mlp.experts.5.up_proj.weight");
  Status st = RunStatus(missing, {1, 2});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("model.layers.1.mlp.experts.5.up_proj.weight"), std::string::npos)
      << st.message();
  TinyModel no_bias = m;
  no_bias.tensors.erase("model.layers.1.mlp.gate.e_score_correction_bias");
  st = RunStatus(no_bias, {1});
  EXPECT_NE(st.message().find("e_score_correction_bias"), std::string::npos) << st.message();
  TinyModel wrong_shape = m;
  wrong_shape.Set("model.norm.weight", {31}, std::vector<double>(31, 1.0));
  st = RunStatus(wrong_shape, {1});
  EXPECT_NE(st.message().find("model.norm.weight"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace dsv3::reference
