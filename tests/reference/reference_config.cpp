// config.json parsing of the float64 reference (spec §1): its own parser with the spec's
// defaults, independent of src/model/config.cpp.
#include <cmath>

#include <nlohmann/json.hpp>

#include "reference/reference_model.h"

namespace dsv3::reference {

namespace {

using nlohmann::json;

// ============================================================================================
// config.json (spec §1)
// ============================================================================================

// The value of `key`, or nullptr when the key is absent or null (null and absent mean the same
// for every key we read: q_lora_rank null = plain q_proj, n_routed_experts null = no MoE, ...).
const json* FindKey(const json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

Status OptInt(const json& object, const char* key, int64_t* out) {
  const json* value = FindKey(object, key);
  if (value == nullptr) return Status::Ok();
  if (value->is_number_integer()) {
    *out = value->get<int64_t>();
    return Status::Ok();
  }
  if (value->is_number_float()) {
    double d = value->get<double>();
    if (std::floor(d) == d && std::abs(d) < 1e15) {
      *out = static_cast<int64_t>(d);
      return Status::Ok();
    }
  }
  return Err("config.json: {} must be an integer, got {}", key, value->dump());
}

Status ReqInt(const json& object, const char* key, int64_t* out) {
  if (FindKey(object, key) == nullptr) return Err("config.json: missing {}", key);
  return OptInt(object, key, out);
}

Status OptDouble(const json& object, const char* key, double* out) {
  const json* value = FindKey(object, key);
  if (value == nullptr) return Status::Ok();
  if (!value->is_number())
    return Err("config.json: {} must be a number, got {}", key, value->dump());
  *out = value->get<double>();
  return Status::Ok();
}

Status OptBool(const json& object, const char* key, bool* out) {
  const json* value = FindKey(object, key);
  if (value == nullptr) return Status::Ok();
  if (!value->is_boolean())
    return Err("config.json: {} must be a boolean, got {}", key, value->dump());
  *out = value->get<bool>();
  return Status::Ok();
}

Status OptString(const json& object, const char* key, std::string* out) {
  const json* value = FindKey(object, key);
  if (value == nullptr) return Status::Ok();
  if (!value->is_string())
    return Err("config.json: {} must be a string, got {}", key, value->dump());
  *out = value->get<std::string>();
  return Status::Ok();
}

}  // namespace

// ============================================================================================
// Configuration (spec §1)
// ============================================================================================

bool ReferenceConfig::IsMoeLayer(int64_t layer) const {
  return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
}

Result<ReferenceConfig> ParseReferenceConfig(const std::string& config_json_text) {
  json j = json::parse(config_json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Err("config.json: not a JSON object");
  ReferenceConfig c;

  c.model_type = "deepseek_v3";
  DSV3_RETURN_IF_ERROR(OptString(j, "model_type", &c.model_type));
  // Model-type-dependent defaults (spec §1): deepseek_v2 → softmax, greedy, norm false; deepseek_v3
  // and kimi_k2 → sigmoid, noaux_tc, norm true.
  if (c.model_type == "deepseek_v2") {
    c.scoring_func = ScoringFunc::kSoftmax;
    c.topk_method = TopkMethod::kGreedy;
    c.norm_topk_prob = false;
    c.v2_weight_rule = true;  // spec §6.2: V2 code "if norm: normalise else: scale"
  } else if (c.model_type == "deepseek_v3" || c.model_type == "kimi_k2") {
    c.scoring_func = ScoringFunc::kSigmoid;
    c.topk_method = TopkMethod::kNoauxTc;
    c.norm_topk_prob = true;
    c.v2_weight_rule = false;
  } else {
    return Err("config.json: unsupported model_type {}", c.model_type);
  }

  DSV3_RETURN_IF_ERROR(ReqInt(j, "vocab_size", &c.vocab_size));
  DSV3_RETURN_IF_ERROR(ReqInt(j, "hidden_size", &c.hidden_size));
  DSV3_RETURN_IF_ERROR(OptInt(j, "intermediate_size", &c.intermediate_size));
  DSV3_RETURN_IF_ERROR(OptInt(j, "moe_intermediate_size", &c.moe_intermediate_size));
  DSV3_RETURN_IF_ERROR(ReqInt(j, "num_hidden_layers", &c.num_hidden_layers));
  DSV3_RETURN_IF_ERROR(OptInt(j, "num_nextn_predict_layers", &c.num_nextn_predict_layers));
  DSV3_RETURN_IF_ERROR(ReqInt(j, "num_attention_heads", &c.num_attention_heads));
  DSV3_RETURN_IF_ERROR(OptInt(j, "q_lora_rank", &c.q_lora_rank));  // null → plain q_proj
  DSV3_RETURN_IF_ERROR(ReqInt(j, "kv_lora_rank", &c.kv_lora_rank));
  DSV3_RETURN_IF_ERROR(ReqInt(j, "qk_nope_head_dim", &c.qk_nope_head_dim));
  DSV3_RETURN_IF_ERROR(ReqInt(j, "qk_rope_head_dim", &c.qk_rope_head_dim));
  DSV3_RETURN_IF_ERROR(ReqInt(j, "v_head_dim", &c.v_head_dim));
  DSV3_RETURN_IF_ERROR(OptInt(j, "n_routed_experts", &c.n_routed_experts));  // null → no MoE
  DSV3_RETURN_IF_ERROR(OptInt(j, "n_shared_experts", &c.n_shared_experts));  // null → none
  DSV3_RETURN_IF_ERROR(OptInt(j, "num_experts_per_tok", &c.num_experts_per_tok));
  DSV3_RETURN_IF_ERROR(OptInt(j, "n_group", &c.n_group));
  DSV3_RETURN_IF_ERROR(OptInt(j, "topk_group", &c.topk_group));
  DSV3_RETURN_IF_ERROR(OptInt(j, "first_k_dense_replace", &c.first_k_dense_replace));
  DSV3_RETURN_IF_ERROR(OptInt(j, "moe_layer_freq", &c.moe_layer_freq));
  DSV3_RETURN_IF_ERROR(OptDouble(j, "routed_scaling_factor", &c.routed_scaling_factor));
  DSV3_RETURN_IF_ERROR(OptBool(j, "norm_topk_prob", &c.norm_topk_prob));
  std::string scoring, topk_method, hidden_act = "silu";
  DSV3_RETURN_IF_ERROR(OptString(j, "scoring_func", &scoring));
  DSV3_RETURN_IF_ERROR(OptString(j, "topk_method", &topk_method));
  DSV3_RETURN_IF_ERROR(OptString(j, "hidden_act", &hidden_act));
  if (scoring == "sigmoid") {
    c.scoring_func = ScoringFunc::kSigmoid;
  } else if (scoring == "softmax") {
    c.scoring_func = ScoringFunc::kSoftmax;
  } else if (!scoring.empty()) {
    return Err("config.json: unsupported scoring_func {}", scoring);
  }
  if (topk_method == "noaux_tc") {
    c.topk_method = TopkMethod::kNoauxTc;
  } else if (topk_method == "group_limited_greedy") {
    c.topk_method = TopkMethod::kGroupLimitedGreedy;
  } else if (topk_method == "greedy") {
    c.topk_method = TopkMethod::kGreedy;
  } else if (!topk_method.empty()) {
    return Err("config.json: unsupported topk_method {}", topk_method);
  }
  if (hidden_act != "silu") return Err("config.json: unsupported hidden_act {}", hidden_act);
  DSV3_RETURN_IF_ERROR(OptDouble(j, "rms_norm_eps", &c.rms_norm_eps));
  DSV3_RETURN_IF_ERROR(OptDouble(j, "rope_theta", &c.rope_theta));
  DSV3_RETURN_IF_ERROR(OptBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  DSV3_RETURN_IF_ERROR(OptBool(j, "rope_interleave", &c.rope_interleave));

  // rope_scaling: null/absent → no YaRN; otherwise it must be YaRN (spec §5.3).
  if (const json* rs = FindKey(j, "rope_scaling")) {
    if (!rs->is_object()) return Err("config.json: rope_scaling must be an object or null");
    std::string type;
    DSV3_RETURN_IF_ERROR(OptString(*rs, "type", &type));
    if (type.empty()) DSV3_RETURN_IF_ERROR(OptString(*rs, "rope_type", &type));
    if (type != "yarn") return Err("config.json: unsupported rope_scaling type '{}'", type);
    c.yarn.enabled = true;
    if (FindKey(*rs, "factor") == nullptr) return Err("config.json: rope_scaling.factor missing");
    if (FindKey(*rs, "original_max_position_embeddings") == nullptr)
      return Err("config.json: rope_scaling.original_max_position_embeddings missing");
    DSV3_RETURN_IF_ERROR(OptDouble(*rs, "factor", &c.yarn.factor));
    DSV3_RETURN_IF_ERROR(OptDouble(*rs, "original_max_position_embeddings",
                                   &c.yarn.original_max_position_embeddings));
    DSV3_RETURN_IF_ERROR(OptDouble(*rs, "beta_fast", &c.yarn.beta_fast));
    DSV3_RETURN_IF_ERROR(OptDouble(*rs, "beta_slow", &c.yarn.beta_slow));
    DSV3_RETURN_IF_ERROR(OptDouble(*rs, "mscale", &c.yarn.mscale));
    DSV3_RETURN_IF_ERROR(OptDouble(*rs, "mscale_all_dim", &c.yarn.mscale_all_dim));
    if (!(c.yarn.factor > 0) || !(c.yarn.original_max_position_embeddings > 0))
      return Err(
          "config.json: rope_scaling factor and original_max_position_embeddings must be > 0");
  }

  // quantization_config.weight_block_size, default 128×128 (spec §9.3).
  if (const json* qc = FindKey(j, "quantization_config")) {
    if (const json* bs = qc->is_object() ? FindKey(*qc, "weight_block_size") : nullptr) {
      if (!bs->is_array() || bs->size() != 2 || !(*bs)[0].is_number_integer() ||
          !(*bs)[1].is_number_integer())
        return Err("config.json: quantization_config.weight_block_size must be [rows, cols]");
      c.block_rows = (*bs)[0].get<int64_t>();
      c.block_cols = (*bs)[1].get<int64_t>();
      if (c.block_rows <= 0 || c.block_cols <= 0)
        return Err("config.json: weight_block_size must be positive");
    }
  }

  // Consistency.
  if (c.vocab_size <= 0 || c.hidden_size <= 0 || c.num_hidden_layers <= 0 ||
      c.num_attention_heads <= 0 || c.kv_lora_rank <= 0 || c.qk_nope_head_dim < 0 ||
      c.v_head_dim <= 0 || c.q_lora_rank < 0 || c.num_nextn_predict_layers < 0)
    return Err("config.json: sizes must be positive");
  if (c.qk_rope_head_dim <= 0 || c.qk_rope_head_dim % 2 != 0)
    return Err("config.json: qk_rope_head_dim must be positive and even, got {}",
               c.qk_rope_head_dim);
  if (c.n_routed_experts < 0 || c.n_shared_experts < 0)
    return Err("config.json: expert counts must be >= 0");
  if (c.moe_layer_freq <= 0) return Err("config.json: moe_layer_freq must be positive");
  if (c.n_routed_experts > 0) {
    if (c.moe_intermediate_size <= 0) return Err("config.json: moe_intermediate_size missing");
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.n_routed_experts)
      return Err("config.json: num_experts_per_tok must be in [1, n_routed_experts]");
    if (c.n_group <= 0 || c.n_routed_experts % c.n_group != 0)
      return Err("config.json: n_routed_experts must be a multiple of n_group");
    if (c.topk_group <= 0 || c.topk_group > c.n_group)
      return Err("config.json: topk_group must be in [1, n_group]");
  }
  for (int64_t layer = 0; layer < c.num_hidden_layers + c.num_nextn_predict_layers; ++layer) {
    if (!c.IsMoeLayer(layer) && c.intermediate_size <= 0)
      return Err("config.json: intermediate_size missing (layer {} is dense)", layer);
  }
  return c;
}

}  // namespace dsv3::reference
