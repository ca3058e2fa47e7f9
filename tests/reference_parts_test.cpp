// Self-checks of the float64 reference's building blocks (tests/reference/): dtype decoding,
// config defaults, RoPE/YaRN and routing, each worked out by hand from the spec. The whole-model
// checks are in reference_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "reference/reference_model.h"

namespace dsv3::reference {
namespace {

using nlohmann::json;

// ---- (f) dtype decoding -----------------------------------------------------------------

TEST(ReferenceDecode, Fp8E4M3) {
  EXPECT_EQ(DecodeFp8E4M3(0x7E), 448.0);
  EXPECT_EQ(DecodeFp8E4M3(0xFE), -448.0);
  EXPECT_EQ(DecodeFp8E4M3(0x01), std::ldexp(1.0, -9));
  EXPECT_EQ(DecodeFp8E4M3(0x07), 7.0 * std::ldexp(1.0, -9));
  EXPECT_EQ(DecodeFp8E4M3(0x08), std::ldexp(1.0, -6));  // smallest normal
  EXPECT_EQ(DecodeFp8E4M3(0x38), 1.0);
  EXPECT_EQ(DecodeFp8E4M3(0xB8), -1.0);
  EXPECT_EQ(DecodeFp8E4M3(0x3C), 1.5);
  EXPECT_EQ(DecodeFp8E4M3(0x00), 0.0);
  EXPECT_TRUE(std::signbit(DecodeFp8E4M3(0x80)));
  EXPECT_TRUE(std::isnan(DecodeFp8E4M3(0x7F)));
  EXPECT_TRUE(std::isnan(DecodeFp8E4M3(0xFF)));
  EXPECT_EQ(DecodeFp8E4M3(0x78), 256.0);  // e = 15 with m != 7 is a normal number
}

TEST(ReferenceDecode, Bf16AndF16) {
  EXPECT_EQ(DecodeBf16(0x3F80), 1.0);
  EXPECT_EQ(DecodeBf16(0xC040), -3.0);
  EXPECT_EQ(DecodeBf16(0x3F81), 1.0 + std::ldexp(1.0, -7));
  EXPECT_EQ(DecodeF16(0x3C00), 1.0);
  EXPECT_EQ(DecodeF16(0xC000), -2.0);
  EXPECT_EQ(DecodeF16(0x0001), std::ldexp(1.0, -24));
  EXPECT_EQ(DecodeF16(0x7BFF), 65504.0);
  EXPECT_TRUE(std::isinf(DecodeF16(0x7C00)));
  EXPECT_TRUE(std::isnan(DecodeF16(0x7E00)));
}

// ---- Config defaults (spec §1) ----------------------------------------------------------

TEST(ReferenceConfig, ModelTypeDefaults) {
  json j = {{"vocab_size", 10},       {"hidden_size", 8},         {"intermediate_size", 16},
            {"num_hidden_layers", 1}, {"num_attention_heads", 1}, {"q_lora_rank", nullptr},
            {"kv_lora_rank", 4},      {"qk_nope_head_dim", 2},    {"qk_rope_head_dim", 2},
            {"v_head_dim", 2},        {"rope_scaling", nullptr},  {"n_routed_experts", nullptr}};
  j["model_type"] = "deepseek_v2";
  auto v2 = ParseReferenceConfig(j.dump());
  ASSERT_TRUE(v2.ok()) << v2.status().message();
  EXPECT_EQ(v2->scoring_func, ScoringFunc::kSoftmax);
  EXPECT_EQ(v2->topk_method, TopkMethod::kGreedy);
  EXPECT_FALSE(v2->norm_topk_prob);
  EXPECT_TRUE(v2->v2_weight_rule);
  EXPECT_EQ(v2->q_lora_rank, 0);
  EXPECT_EQ(v2->n_routed_experts, 0);
  EXPECT_FALSE(v2->IsMoeLayer(0));
  EXPECT_FALSE(v2->yarn.enabled);
  EXPECT_TRUE(v2->rope_interleave);
  EXPECT_EQ(v2->rms_norm_eps, 1e-6);
  EXPECT_EQ(v2->n_group, 1);
  EXPECT_EQ(v2->routed_scaling_factor, 1.0);
  EXPECT_EQ(v2->block_rows, 128);
  for (const char* type : {"deepseek_v3", "kimi_k2"}) {
    j["model_type"] = type;
    auto v3 = ParseReferenceConfig(j.dump());
    ASSERT_TRUE(v3.ok()) << v3.status().message();
    EXPECT_EQ(v3->scoring_func, ScoringFunc::kSigmoid);
    EXPECT_EQ(v3->topk_method, TopkMethod::kNoauxTc);
    EXPECT_TRUE(v3->norm_topk_prob);
    EXPECT_FALSE(v3->v2_weight_rule);
  }
  // moe_layer_freq / first_k_dense_replace rule.
  j["n_routed_experts"] = 4;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 4;
  j["first_k_dense_replace"] = 2;
  j["moe_layer_freq"] = 2;
  j["num_hidden_layers"] = 6;
  auto moe = ParseReferenceConfig(j.dump());
  ASSERT_TRUE(moe.ok()) << moe.status().message();
  EXPECT_EQ(moe->IsMoeLayer(0), false);
  EXPECT_EQ(moe->IsMoeLayer(1), false);
  EXPECT_EQ(moe->IsMoeLayer(2), true);
  EXPECT_EQ(moe->IsMoeLayer(3), false);
  EXPECT_EQ(moe->IsMoeLayer(4), true);
  // YaRN without mscale_all_dim: softmax scale is plain (factor only when != 0), but cos/sin get
  // mscale(s, 1) / mscale(s, 0) = 1 + 0.1 ln s.
  j["rope_scaling"] = {
      {"type", "yarn"}, {"factor", 40}, {"original_max_position_embeddings", 4096}};
  auto yarn = ParseReferenceConfig(j.dump());
  ASSERT_TRUE(yarn.ok()) << yarn.status().message();
  EXPECT_DOUBLE_EQ(SoftmaxScale(*yarn), 1.0 / std::sqrt(4.0));
  EXPECT_DOUBLE_EQ(RopeCosSinFactor(*yarn), 1.0 + 0.1 * std::log(40.0));
  j["model_type"] = "deepseek_v32";
  EXPECT_FALSE(ParseReferenceConfig(j.dump()).ok());
}

// ---- (d) YaRN with V3's numbers (spec §5.3) -----------------------------------------------

TEST(ReferenceRope, YarnV3Numbers) {
  ReferenceConfig c;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.rope_theta = 10000;
  c.yarn = {true, 40.0, 4096.0, 32.0, 1.0, 1.0, 1.0};
  EXPECT_NEAR(YarnCorrectionDim(32, 64, 10000, 4096), 10.472, 1e-3);
  EXPECT_NEAR(YarnCorrectionDim(1, 64, 10000, 4096), 22.513, 1e-3);
  const YarnRange range = YarnCorrectionRange(64, 10000, c.yarn);
  EXPECT_EQ(range.low, 10.0);
  EXPECT_EQ(range.high, 23.0);
  EXPECT_NEAR(YarnMscale(40, 1), 1.368888, 1e-6);
  EXPECT_NEAR(SoftmaxScale(c), 0.1352338, 5e-8);
  EXPECT_DOUBLE_EQ(RopeCosSinFactor(c), 1.0);
  const std::vector<double> freqs = RopeFrequencies(c);
  ASSERT_EQ(freqs.size(), 32u);
  for (int m = 0; m < 32; ++m) {
    const double base = std::pow(10000.0, -2.0 * m / 64.0);
    if (m <= 10) {
      EXPECT_DOUBLE_EQ(freqs[m], base) << m;
    }
    if (m >= 23) {
      EXPECT_DOUBLE_EQ(freqs[m], base / 40.0) << m;
    }
    if (m > 10 && m < 23) {  // blended linearly: ramp = (m - 10) / 13
      const double ramp = (m - 10) / 13.0;
      EXPECT_NEAR(freqs[m], base / 40.0 * ramp + base * (1 - ramp), 1e-15) << m;
    }
  }
  // Without rope_scaling: plain frequencies and (dn+dr)^-0.5.
  c.yarn.enabled = false;
  EXPECT_DOUBLE_EQ(SoftmaxScale(c), 1.0 / std::sqrt(192.0));
  EXPECT_DOUBLE_EQ(RopeFrequencies(c)[31], std::pow(10000.0, -62.0 / 64.0));
  // low == high → high += 0.001 (both clamp to 0 here).
  YarnConfig narrow{true, 4.0, 4.0, 1.0, 1.0, 1.0, 1.0};  // dim(1) = -0.39: low = high = 0
  const YarnRange r2 = YarnCorrectionRange(8, 100, narrow);
  EXPECT_DOUBLE_EQ(r2.high - r2.low, 0.001);
}

// ---- (c) RoPE: pair layout and the relative-position property (spec §5.2) -----------------

TEST(ReferenceRope, PairLayout) {
  const std::vector<double> freqs = {1.0, 0.25};
  for (bool interleave : {true, false}) {
    // A unit vector on channel 0 rotates into channel 1 (interleaved) or d/2 = 2 (half-split).
    std::vector<double> x = {1, 0, 0, 0};
    ApplyRope(x.data(), 4, 3, freqs, 1.0, interleave);
    EXPECT_NEAR(x[0], std::cos(3.0), 1e-15);
    EXPECT_NEAR(x[interleave ? 1 : 2], std::sin(3.0), 1e-15);
    EXPECT_EQ(x[interleave ? 2 : 1], 0.0);
    // Pair 1: channel 2 (interleaved) or 1 (half-split) rotates with ω_1.
    std::vector<double> y = {0, 0, 0, 0};
    y[interleave ? 2 : 1] = 1.0;
    ApplyRope(y.data(), 4, 3, freqs, 1.0, interleave);
    EXPECT_NEAR(y[interleave ? 2 : 1], std::cos(0.75), 1e-15);
    EXPECT_NEAR(y[interleave ? 3 : 3], std::sin(0.75), 1e-15);
    // Position 0 is the identity (times the cos/sin factor).
    std::vector<double> z = {0.3, -0.2, 0.7, 0.1};
    ApplyRope(z.data(), 4, 0, freqs, 1.5, interleave);
    EXPECT_DOUBLE_EQ(z[0], 0.45);
    EXPECT_DOUBLE_EQ(z[2], 1.05);
  }
}

TEST(ReferenceRope, ScoresDependOnlyOnPositionDifference) {
  ReferenceConfig c;
  c.qk_rope_head_dim = 16;
  c.rope_theta = 10000;
  c.yarn = {true, 4.0, 64.0, 32.0, 1.0, 0.8, 0.5};
  const std::vector<double> freqs = RopeFrequencies(c);
  const double factor = RopeCosSinFactor(c);
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(-1, 1);
  std::vector<double> q(16), k(16);
  for (double& v : q) v = u(rng);
  for (double& v : k) v = u(rng);
  for (bool interleave : {true, false}) {
    auto score = [&](int64_t pq, int64_t pk) {
      std::vector<double> a = q, b = k;
      ApplyRope(a.data(), 16, pq, freqs, factor, interleave);
      ApplyRope(b.data(), 16, pk, freqs, factor, interleave);
      double s = 0;
      for (int i = 0; i < 16; ++i) s += a[i] * b[i];
      return s;
    };
    for (int64_t delta = 0; delta < 6; ++delta) {
      const double ref = score(delta, 0);
      for (int64_t shift : {1, 2, 5, 11, 100})
        EXPECT_NEAR(score(delta + shift, shift), ref, 1e-12) << delta << " " << shift;
    }
    EXPECT_GT(std::abs(score(3, 0) - score(2, 0)), 1e-3);  // it does depend on the difference
  }
}

// ---- (e) Routing worked by hand (spec §6) -------------------------------------------------

std::vector<double> LogitsForSigmoid(const std::vector<double>& s) {
  std::vector<double> l;
  for (double v : s) l.push_back(std::log(v / (1 - v)));
  return l;
}

TEST(ReferenceRouting, NoauxTcGroupsAndBias) {
  RoutingConfig rc;
  rc.scoring_func = ScoringFunc::kSigmoid;
  rc.topk_method = TopkMethod::kNoauxTc;
  rc.n_group = 4;
  rc.topk_group = 2;
  rc.top_k = 2;
  rc.norm_topk_prob = true;
  rc.routed_scaling_factor = 2.5;
  const std::vector<double> s = {0.90, 0.10, 0.80, 0.70, 0.20, 0.30, 0.60, 0.55};
  const std::vector<double> bias = {0, 0, 0, 0, 0.65, 0.45, 0, 0};
  // c = s + bias = {.90 .10 | .80 .70 | .85 .75 | .60 .55}; group scores (top-2 sums):
  // 1.00, 1.50, 1.60, 1.15 → keep groups 2 and 1. Expert 0 (highest c overall) is dropped with
  // its group. Top-2 of c among experts 2..5: expert 4 (.85), expert 2 (.80).
  // Weights come from s: 0.2 and 0.8, normalised (sum 1.0), × 2.5 → 0.5 and 2.0.
  auto r = Route(LogitsForSigmoid(s), bias, rc);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->experts, (std::vector<int64_t>{4, 2}));
  EXPECT_NEAR(r->weights[0], 0.5, 1e-14);
  EXPECT_NEAR(r->weights[1], 2.0, 1e-14);
  EXPECT_NEAR(r->dense_weights[4], 0.5, 1e-14);
  EXPECT_EQ(r->dense_weights[0], 0.0);
  // Without the bias: group scores 1.00, 1.50, 0.50, 1.15 → keep groups 1 and 3; top-2 by s:
  // experts 2 (.8) and 3 (.7); weights .8/1.5·2.5 and .7/1.5·2.5.
  auto r0 = Route(LogitsForSigmoid(s), std::vector<double>(8, 0.0), rc);
  ASSERT_TRUE(r0.ok());
  ASSERT_EQ(r0->experts, (std::vector<int64_t>{2, 3}));
  EXPECT_NEAR(r0->weights[0], 0.8 / 1.5 * 2.5, 1e-14);
  EXPECT_NEAR(r0->weights[1], 0.7 / 1.5 * 2.5, 1e-14);
  // norm_topk_prob false: the raw s times the scaling factor.
  rc.norm_topk_prob = false;
  auto r1 = Route(LogitsForSigmoid(s), bias, rc);
  ASSERT_TRUE(r1.ok());
  EXPECT_NEAR(r1->weights[0], 0.2 * 2.5, 1e-14);
  EXPECT_NEAR(r1->weights[1], 0.8 * 2.5, 1e-14);
  // k = 1 with norm true: no renormalisation ("if norm_topk_prob (and k > 1)"), still scaled.
  rc.norm_topk_prob = true;
  rc.top_k = 1;
  auto r2 = Route(LogitsForSigmoid(s), bias, rc);
  ASSERT_TRUE(r2.ok());
  ASSERT_EQ(r2->experts, (std::vector<int64_t>{4}));
  EXPECT_NEAR(r2->weights[0], 0.2 * 2.5, 1e-14);
  // More experts than the kept groups hold is an error; so is a missing bias.
  rc.top_k = 5;
  EXPECT_FALSE(Route(LogitsForSigmoid(s), bias, rc).ok());
  rc.top_k = 2;
  EXPECT_FALSE(Route(LogitsForSigmoid(s), {}, rc).ok());
}

TEST(ReferenceRouting, GroupLimitedGreedyAndGreedySoftmax) {
  // Groups of 2: {2.0, -3.0} {1.8, 1.7} {1.9, -2.5} {0.0, 0.1}.
  const std::vector<double> logits = {2.0, -3.0, 1.8, 1.7, 1.9, -2.5, 0.0, 0.1};
  std::vector<double> p(8);
  double z = 0;
  for (double l : logits) z += std::exp(l);
  for (int e = 0; e < 8; ++e) p[e] = std::exp(logits[e]) / z;
  RoutingConfig rc;
  rc.scoring_func = ScoringFunc::kSoftmax;
  rc.topk_method = TopkMethod::kGroupLimitedGreedy;
  rc.n_group = 4;
  rc.topk_group = 2;
  rc.top_k = 3;
  rc.norm_topk_prob = false;
  rc.routed_scaling_factor = 16;
  rc.v2_weight_rule = true;
  // Group score = max: 2.0, 1.8, 1.9, 0.1 → keep groups 0 and 2 (a top-2-sum rule would keep
  // group 1). Top-3 of experts {0, 1, 4, 5}: 0, 4, 5.
  auto r = Route(logits, {}, rc);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->experts, (std::vector<int64_t>{0, 4, 5}));
  EXPECT_NEAR(r->weights[0], p[0] * 16, 1e-14);
  EXPECT_NEAR(r->weights[2], p[5] * 16, 1e-14);
  // V2 rule with norm true (k > 1): normalise and do NOT scale.
  rc.norm_topk_prob = true;
  auto rn = Route(logits, {}, rc);
  ASSERT_TRUE(rn.ok());
  EXPECT_NEAR(rn->weights[0], p[0] / (p[0] + p[4] + p[5]), 1e-14);
  // V3 rule with norm true: normalise, then scale.
  rc.v2_weight_rule = false;
  auto r3 = Route(logits, {}, rc);
  ASSERT_TRUE(r3.ok());
  EXPECT_NEAR(r3->weights[0], p[0] / (p[0] + p[4] + p[5]) * 16, 1e-14);
  // Greedy: no groups → experts 0, 4, 2.
  rc.topk_method = TopkMethod::kGreedy;
  rc.norm_topk_prob = false;
  rc.v2_weight_rule = true;
  auto g = Route(logits, {}, rc);
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(g->experts, (std::vector<int64_t>{0, 4, 2}));
  EXPECT_NEAR(g->weights[2], p[2] * 16, 1e-14);
}
}  // namespace
}  // namespace dsv3::reference
