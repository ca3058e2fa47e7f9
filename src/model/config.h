// The model's hyperparameters, named exactly as the Hugging Face config.json keys (spec §1).
// Parsed and validated once at load; every error names the key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/status.h"

namespace dsv3 {

struct RopeScaling {
  std::string type;  // "yarn" or empty (no scaling)
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

// quant_method "fp8": the official FP8 checkpoints (fmt "e4m3", 128x128 block scales).
// quant_method "dsv3": written by `dsv3 quantize`; fmt "q8_0" or "q4_0" names the format of the
// quantized linear weights (ops/quant.h) with group_size columns per scale. A loader needs only
// each tensor's dtype to know its format (I8: q8_0, U8: q4_0, F8_E4M3: block FP8 with
// weight_block_size, float dtypes: as stored), so one checkpoint can mix formats;
// modules_to_not_convert lists the tensors kept at higher precision (informational).
struct QuantizationConfig {
  std::string quant_method;  // "fp8", "dsv3" or empty
  std::string fmt;           // "e4m3" (fp8); "q8_0" | "q4_0" (dsv3)
  int64_t weight_block_size[2] = {128, 128};
  std::string scale_fmt;                            // "ue8m0" (V3.1) or empty
  int64_t group_size = 32;                          // dsv3 only
  std::vector<std::string> modules_to_not_convert;  // dsv3 only
};

struct ModelConfig {
  std::string model_type = "deepseek_v3";  // deepseek_v3, deepseek_v2, kimi_k2
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t moe_intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_nextn_predict_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // informational only
  int64_t q_lora_rank = 0;          // 0 when null: plain q_proj
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t n_routed_experts = 0;  // 0 when null: no MoE layers
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  std::string scoring_func = "sigmoid";  // sigmoid | softmax
  std::string topk_method = "noaux_tc";  // noaux_tc | group_limited_greedy | greedy
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  std::string hidden_act = "silu";
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  bool rope_interleave = true;
  std::optional<QuantizationConfig> quantization_config;

  // Derived sizes.
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool has_q_lora() const { return q_lora_rank > 0; }
  bool IsMoeLayer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  bool has_yarn() const { return rope_scaling.type == "yarn"; }
  // Values cached per token per layer by the absorbed attention: latent + rotated rope key.
  int64_t kv_cache_values_per_token_layer() const { return kv_lora_rank + qk_rope_head_dim; }

  // Checks every constraint the forward pass relies on; errors name the key.
  Status Validate() const;
  // The config as config.json would hold it (used by `dsv3 init`).
  nlohmann::json ToJson() const;
};

// Parses config.json contents with the spec's defaults (which depend on model_type).
Result<ModelConfig> ParseModelConfig(const nlohmann::json& json);
// Reads DIR/config.json; errors name the file.
Result<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace dsv3
