// The independent, naive, float64 reference implementation of the DeepSeek-V3 forward pass,
// written straight from /work/shared/spec/deepseek-v3.md ("spec" below). It exists so that the
// production model (src/model/) can be tested against it, so it shares no code with src/model:
// it parses config.json itself, reads tensors through io/ only, and decodes every dtype to double
// itself. Clarity over speed: plain loops and doubles everywhere. Intended for tiny models.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace dsv3::reference {

struct ReferenceOptions {
  int experts_per_token = 0;  // 0 = config's num_experts_per_tok; else override k
  bool mtp = false;           // also compute the MTP head's logits (depth 1, spec §8)
};

struct ReferenceOutput {
  int64_t T = 0, vocab = 0;
  std::vector<double> logits;      // [T, vocab]
  std::vector<double> mtp_logits;  // [T-1, vocab] when options.mtp and the checkpoint has MTP
};

// The whole forward pass (spec §2) of the checkpoint in model_dir over tokens at positions
// 0..T-1. Errors: empty tokens, token ids out of range, bad config, missing tensors or tensors of
// the wrong shape or dtype (the message names them).
Result<ReferenceOutput> ReferenceForward(const std::string& model_dir,
                                         const std::vector<int32_t>& tokens,
                                         const ReferenceOptions& options = {});

// ------------------------------------------------------------------------------------------
// The pieces below are exposed for the self-tests (tests/reference_test.cpp).

// ---- Configuration (spec §1) ----

enum class ScoringFunc { kSigmoid, kSoftmax };
enum class TopkMethod { kNoauxTc, kGroupLimitedGreedy, kGreedy };

struct YarnConfig {
  bool enabled = false;                           // rope_scaling present with type "yarn"
  double factor = 1.0;                            // s
  double original_max_position_embeddings = 0.0;  // L0
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

struct ReferenceConfig {
  std::string model_type;  // deepseek_v2, deepseek_v3 or kimi_k2
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;               // H
  int64_t intermediate_size = 0;         // dense SwiGLU width
  int64_t moe_intermediate_size = 0;     // routed expert width
  int64_t num_hidden_layers = 0;         // main decoder layers
  int64_t num_nextn_predict_layers = 0;  // MTP layers stored after them
  int64_t num_attention_heads = 0;       // nh
  int64_t q_lora_rank = 0;               // rq; 0 = null = plain q_proj
  int64_t kv_lora_rank = 0;              // r
  int64_t qk_nope_head_dim = 0;          // dn
  int64_t qk_rope_head_dim = 0;          // dr
  int64_t v_head_dim = 0;                // dv
  int64_t n_routed_experts = 0;          // E; 0 = null = no MoE layers
  int64_t n_shared_experts = 0;          // 0 = no shared experts
  int64_t num_experts_per_tok = 0;       // k
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  ScoringFunc scoring_func = ScoringFunc::kSigmoid;
  TopkMethod topk_method = TopkMethod::kNoauxTc;
  // deepseek_v2's weight rule "if norm: normalise else: scale" instead of V3's "normalise (if
  // norm and k > 1), then always scale" (spec §6.2).
  bool v2_weight_rule = false;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  YarnConfig yarn;
  bool tie_word_embeddings = false;
  bool rope_interleave = true;
  int64_t block_rows = 128, block_cols = 128;  // quantization_config.weight_block_size

  // Layer i is MoE iff MoE exists, i >= first_k_dense_replace and i % moe_layer_freq == 0 (§1).
  bool IsMoeLayer(int64_t layer) const;
};

// Parses the text of a config.json, applying the spec §1 defaults (including the
// model_type-dependent ones) and checking the values for consistency.
Result<ReferenceConfig> ParseReferenceConfig(const std::string& config_json_text);

// ---- Exact dtype decoding (spec §9.3) ----

double DecodeFp8E4M3(uint8_t bits);  // e4m3fn: 0x7F/0xFF are NaN, no infinities
double DecodeBf16(uint16_t bits);
double DecodeF16(uint16_t bits);

// ---- RoPE and YaRN (spec §5.2, §5.3) ----

// dim(n_rot) = d · ln(L0 / (2π·n_rot)) / (2·ln(theta))
double YarnCorrectionDim(double num_rotations, int64_t dim, double theta, double original_max_pos);

struct YarnRange {
  double low = 0.0, high = 0.0;
};
// low = max(floor(dim(beta_fast)), 0); high = min(ceil(dim(beta_slow)), d-1); equal → high+0.001.
YarnRange YarnCorrectionRange(int64_t dim, double theta, const YarnConfig& yarn);

// mscale(s, c) = 1 if s <= 1 else 0.1·c·ln(s) + 1
double YarnMscale(double scale, double c);

// ω_m for m = 0..dr/2-1, YaRN-blended when enabled.
std::vector<double> RopeFrequencies(const ReferenceConfig& config);

// The factor multiplying cos and sin: mscale(s, mscale) / mscale(s, mscale_all_dim) with YaRN,
// else 1.
double RopeCosSinFactor(const ReferenceConfig& config);

// (dn+dr)^-0.5, times mscale(s, mscale_all_dim)² with YaRN when mscale_all_dim != 0.
double SoftmaxScale(const ReferenceConfig& config);

// Rotates the d channels at x in place for absolute position `position`. interleave: pair m is
// (x[2m], x[2m+1]); otherwise (x[m], x[m+d/2]).
void ApplyRope(double* x, int64_t d, int64_t position, const std::vector<double>& freqs,
               double cos_sin_factor, bool interleave);

// ---- MoE routing (spec §6) ----

struct RoutingConfig {
  ScoringFunc scoring_func = ScoringFunc::kSigmoid;
  TopkMethod topk_method = TopkMethod::kNoauxTc;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t top_k = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  bool v2_weight_rule = false;
};

struct RoutingResult {
  std::vector<int64_t> experts;       // the k chosen experts, by descending selection score
  std::vector<double> weights;        // their final weights (same order)
  std::vector<double> dense_weights;  // [E]: weight of every expert, 0 where not chosen
};

// Routes one token from its gate logits [E]. bias: e_score_correction_bias [E] (used by noaux_tc
// only, for selection only); may be empty for the other methods.
Result<RoutingResult> Route(const std::vector<double>& gate_logits, const std::vector<double>& bias,
                            const RoutingConfig& config);

}  // namespace dsv3::reference
