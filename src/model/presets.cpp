#include "model/presets.h"

#include <fmt/format.h>

namespace dsv3 {

namespace {

// DeepSeek-V3's structure at toy size: q_lora, YaRN, sigmoid + noaux_tc with groups and bias,
// a dense first layer, one shared expert.
ModelConfig TinyV3() {
  ModelConfig c;
  c.model_type = "deepseek_v3";
  c.vocab_size = 160;
  c.hidden_size = 48;
  c.intermediate_size = 80;
  c.moe_intermediate_size = 24;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.q_lora_rank = 40;
  c.kv_lora_rank = 24;
  c.qk_nope_head_dim = 16;
  c.qk_rope_head_dim = 8;
  c.v_head_dim = 12;
  c.n_routed_experts = 16;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 4;
  c.n_group = 4;
  c.topk_group = 2;
  c.routed_scaling_factor = 2.5;
  c.norm_topk_prob = true;
  c.scoring_func = "sigmoid";
  c.topk_method = "noaux_tc";
  c.first_k_dense_replace = 1;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.rope_scaling = {"yarn", 4.0, 64, 32.0, 1.0, 1.0, 1.0};
  c.max_position_embeddings = 256;
  c.bos_token_id = 0;
  c.eos_token_id = 1;
  return c;
}

// DeepSeek-V2: softmax scores, group_limited_greedy (group score = max), no bias, norm false,
// YaRN with mscale = mscale_all_dim = 0.707 (as V2-Lite).
ModelConfig TinyV2() {
  ModelConfig c = TinyV3();
  c.model_type = "deepseek_v2";
  c.scoring_func = "softmax";
  c.topk_method = "group_limited_greedy";
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 16.0;
  c.n_shared_experts = 2;
  c.rope_scaling = {"yarn", 4.0, 64, 32.0, 1.0, 0.707, 0.707};
  return c;
}

// DeepSeek-V2-Lite: greedy routing without groups and a plain q_proj.
ModelConfig TinyV2Lite() {
  ModelConfig c = TinyV2();
  c.topk_method = "greedy";
  c.n_group = 1;
  c.topk_group = 1;
  c.q_lora_rank = 0;
  c.routed_scaling_factor = 1.0;
  return c;
}

// Moonlight: V3 routing without groups, no q_lora, eps 1e-5, no rope scaling, theta 50000.
ModelConfig TinyMoonlight() {
  ModelConfig c = TinyV3();
  c.q_lora_rank = 0;
  c.n_group = 1;
  c.topk_group = 1;
  c.n_shared_experts = 2;
  c.routed_scaling_factor = 2.446;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 50000.0;
  c.rope_scaling = {};
  return c;
}

// Kimi-K2: kimi_k2 model type, no groups, YaRN factor 32 with beta_fast = beta_slow = 1.
ModelConfig TinyKimi() {
  ModelConfig c = TinyV3();
  c.model_type = "kimi_k2";
  c.n_group = 1;
  c.topk_group = 1;
  c.routed_scaling_factor = 2.827;
  c.rope_theta = 50000.0;
  c.rope_scaling = {"yarn", 32.0, 8, 1.0, 1.0, 1.0, 1.0};
  c.max_position_embeddings = 256;
  return c;
}

// Half-split rope layout (weights converted for rotate_half), otherwise V3.
ModelConfig TinyHalfSplit() {
  ModelConfig c = TinyV3();
  c.rope_interleave = false;
  return c;
}

// No MoE at all (n_routed_experts null): every layer dense.
ModelConfig TinyDense() {
  ModelConfig c = TinyV3();
  c.n_routed_experts = 0;
  c.n_shared_experts = 0;
  c.num_experts_per_tok = 0;
  c.n_group = 1;
  c.topk_group = 1;
  c.first_k_dense_replace = 0;
  return c;
}

// Benchmark shapes (CPU performance issue): V3 routing and YaRN, vocab 32000, no MTP.
ModelConfig BenchShape(int64_t hidden, int64_t layers, int64_t inter, int64_t moe_inter,
                       int64_t experts, int64_t k, int64_t groups, int64_t topk_groups,
                       int64_t heads, int64_t q_lora, int64_t kv_lora, int64_t nope, int64_t rope,
                       int64_t v) {
  ModelConfig c = TinyV3();
  c.vocab_size = 32000;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.first_k_dense_replace = 1;
  c.intermediate_size = inter;
  c.moe_intermediate_size = moe_inter;
  c.n_routed_experts = experts;
  c.num_experts_per_tok = k;
  c.n_shared_experts = 1;
  c.n_group = groups;
  c.topk_group = topk_groups;
  c.num_attention_heads = heads;
  c.num_key_value_heads = heads;
  c.q_lora_rank = q_lora;
  c.kv_lora_rank = kv_lora;
  c.qk_nope_head_dim = nope;
  c.qk_rope_head_dim = rope;
  c.v_head_dim = v;
  c.rope_scaling = {"yarn", 40.0, 4096, 32.0, 1.0, 1.0, 1.0};
  c.max_position_embeddings = 163840;
  return c;
}

}  // namespace

const std::vector<Preset>& AllPresets() {
  // A function-local constant table (no mutable state).
  static const std::vector<Preset> presets = {
      {"tiny-v3", "DeepSeek-V3 structure: q_lora, YaRN, sigmoid/noaux_tc, 4 groups, bias",
       TinyV3()},
      {"tiny-v2", "DeepSeek-V2: softmax, group_limited_greedy, norm_topk_prob false", TinyV2()},
      {"tiny-v2-lite", "DeepSeek-V2-Lite: softmax, greedy, no q_lora", TinyV2Lite()},
      {"tiny-moonlight", "Moonlight: no q_lora, no groups, eps 1e-5, no rope scaling",
       TinyMoonlight()},
      {"tiny-kimi", "Kimi-K2: kimi_k2, no groups, YaRN beta 1/1", TinyKimi()},
      {"tiny-halfsplit", "V3 with rope_interleave false (half-split rope)", TinyHalfSplit()},
      {"tiny-dense", "no MoE layers (n_routed_experts null)", TinyDense()},
      {"bench-small", "benchmark shape: hidden 1024, 8 layers, 64 experts top-6",
       BenchShape(1024, 8, 2816, 256, 64, 6, 1, 1, 8, 384, 256, 64, 32, 64)},
      {"bench-medium", "benchmark shape: hidden 2048, 12 layers, 64 experts top-8, 8 groups",
       BenchShape(2048, 12, 5632, 512, 64, 8, 8, 4, 16, 768, 512, 128, 64, 128)},
  };
  return presets;
}

Result<ModelConfig> PresetConfig(const std::string& name) {
  std::string names;
  for (const Preset& p : AllPresets()) {
    if (p.name == name) return p.config;
    names += (names.empty() ? "" : ", ") + p.name;
  }
  return Err("unknown preset '{}' (known: {})", name, names);
}

}  // namespace dsv3
