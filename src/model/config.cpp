#include "model/config.h"

#include <cmath>
#include <filesystem>

#include "io/files.h"
#include "model/router.h"

namespace dsv3 {

namespace {

using nlohmann::json;

// Reads an optional key: absent or null leaves the default in place. Type errors name the key.
Status ReadInt(const json& j, const char* key, int64_t* out, bool null_means_zero = false) {
  auto it = j.find(key);
  if (it == j.end()) return Status::Ok();
  if (it->is_null()) {
    if (null_means_zero) *out = 0;
    return Status::Ok();
  }
  if (it->is_number_integer()) {
    *out = it->get<int64_t>();
    return Status::Ok();
  }
  // Some configs write integers as 2.0; accept exact integral floats.
  if (it->is_number_float()) {
    const double v = it->get<double>();
    if (std::floor(v) == v && std::fabs(v) < 9e15) {
      *out = static_cast<int64_t>(v);
      return Status::Ok();
    }
  }
  return Err("key '{}' must be an integer, got {}", key, it->dump());
}

Status ReadDouble(const json& j, const char* key, double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_number()) return Err("key '{}' must be a number, got {}", key, it->dump());
  *out = it->get<double>();
  if (!std::isfinite(*out)) return Err("key '{}' must be finite", key);
  return Status::Ok();
}

Status ReadBool(const json& j, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_boolean()) return Err("key '{}' must be true or false, got {}", key, it->dump());
  *out = it->get<bool>();
  return Status::Ok();
}

Status ReadString(const json& j, const char* key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_string()) return Err("key '{}' must be a string, got {}", key, it->dump());
  *out = it->get<std::string>();
  return Status::Ok();
}

// eos_token_id may be a list in some configs; the first entry is the primary one.
Status ReadTokenId(const json& j, const char* key, int64_t* out) {
  auto it = j.find(key);
  if (it != j.end() && it->is_array()) {
    if (it->empty() || !(*it)[0].is_number_integer())
      return Err("key '{}' must be an integer or a non-empty list of integers", key);
    *out = (*it)[0].get<int64_t>();
    return Status::Ok();
  }
  return ReadInt(j, key, out);
}

Status ParseRopeScaling(const json& j, RopeScaling* rs) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_object()) return Err("key 'rope_scaling' must be an object or null");
  const json& r = *it;
  std::string type;
  DSV3_RETURN_IF_ERROR(ReadString(r, "type", &type));
  if (type.empty()) DSV3_RETURN_IF_ERROR(ReadString(r, "rope_type", &type));
  if (type != "yarn")
    return Err("rope_scaling.type '{}' is not supported (only 'yarn' or no rope_scaling)", type);
  rs->type = type;
  DSV3_RETURN_IF_ERROR(ReadDouble(r, "factor", &rs->factor).WithContext("rope_scaling"));
  DSV3_RETURN_IF_ERROR(
      ReadInt(r, "original_max_position_embeddings", &rs->original_max_position_embeddings)
          .WithContext("rope_scaling"));
  DSV3_RETURN_IF_ERROR(ReadDouble(r, "beta_fast", &rs->beta_fast).WithContext("rope_scaling"));
  DSV3_RETURN_IF_ERROR(ReadDouble(r, "beta_slow", &rs->beta_slow).WithContext("rope_scaling"));
  DSV3_RETURN_IF_ERROR(ReadDouble(r, "mscale", &rs->mscale).WithContext("rope_scaling"));
  DSV3_RETURN_IF_ERROR(
      ReadDouble(r, "mscale_all_dim", &rs->mscale_all_dim).WithContext("rope_scaling"));
  return Status::Ok();
}

Status ParseQuantization(const json& j, std::optional<QuantizationConfig>* out) {
  auto it = j.find("quantization_config");
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_object()) return Err("key 'quantization_config' must be an object");
  QuantizationConfig q;
  DSV3_RETURN_IF_ERROR(ReadString(*it, "quant_method", &q.quant_method));
  DSV3_RETURN_IF_ERROR(ReadString(*it, "fmt", &q.fmt));
  DSV3_RETURN_IF_ERROR(ReadString(*it, "scale_fmt", &q.scale_fmt));
  auto bs = it->find("weight_block_size");
  if (bs != it->end() && !bs->is_null()) {
    if (!bs->is_array() || bs->size() != 2 || !(*bs)[0].is_number_integer() ||
        !(*bs)[1].is_number_integer())
      return Err("quantization_config.weight_block_size must be [rows, cols]");
    q.weight_block_size[0] = (*bs)[0].get<int64_t>();
    q.weight_block_size[1] = (*bs)[1].get<int64_t>();
  }
  if (q.quant_method == "dsv3") {
    DSV3_RETURN_IF_ERROR(
        ReadInt(*it, "group_size", &q.group_size).WithContext("quantization_config"));
    if (q.fmt != "q8_0" && q.fmt != "q4_0")
      return Err(
          "quantization_config.fmt '{}' is not supported for quant_method 'dsv3' "
          "(expected 'q8_0' or 'q4_0')",
          q.fmt);
    auto skip = it->find("modules_to_not_convert");
    if (skip != it->end() && !skip->is_null()) {
      if (!skip->is_array())
        return Err("quantization_config.modules_to_not_convert must be a list of names");
      for (const json& name : *skip) {
        if (!name.is_string())
          return Err("quantization_config.modules_to_not_convert must be a list of names");
        q.modules_to_not_convert.push_back(name.get<std::string>());
      }
    }
    *out = q;
    return Status::Ok();
  }
  if (q.quant_method != "fp8")
    return Err(
        "quantization_config.quant_method '{}' is not supported (expected 'fp8' or "
        "'dsv3')",
        q.quant_method);
  if (!q.fmt.empty() && q.fmt != "e4m3")
    return Err("quantization_config.fmt '{}' is not supported (expected 'e4m3')", q.fmt);
  *out = q;
  return Status::Ok();
}

}  // namespace

Result<ModelConfig> ParseModelConfig(const json& j) {
  if (!j.is_object()) return Status::Error("config must be a JSON object");
  ModelConfig c;
  DSV3_RETURN_IF_ERROR(ReadString(j, "model_type", &c.model_type));
  if (c.model_type != "deepseek_v3" && c.model_type != "deepseek_v2" && c.model_type != "kimi_k2")
    return Err("model_type '{}' is not supported (deepseek_v3, deepseek_v2, kimi_k2)",
               c.model_type);
  // Defaults that depend on the model type (spec §1).
  if (c.model_type == "deepseek_v2") {
    c.scoring_func = "softmax";
    c.topk_method = "greedy";
    c.norm_topk_prob = false;
  }
  static constexpr const char* kRequired[] = {
      "vocab_size",   "hidden_size",      "num_hidden_layers", "num_attention_heads",
      "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",  "v_head_dim",
  };
  for (const char* key : kRequired)
    if (!j.contains(key) || j[key].is_null()) return Err("missing required key '{}'", key);

  DSV3_RETURN_IF_ERROR(ReadInt(j, "vocab_size", &c.vocab_size));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "hidden_size", &c.hidden_size));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "intermediate_size", &c.intermediate_size));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "moe_intermediate_size", &c.moe_intermediate_size));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", &c.num_hidden_layers));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "num_nextn_predict_layers", &c.num_nextn_predict_layers));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "num_attention_heads", &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  DSV3_RETURN_IF_ERROR(ReadInt(j, "num_key_value_heads", &c.num_key_value_heads));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "q_lora_rank", &c.q_lora_rank, /*null_means_zero=*/true));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "kv_lora_rank", &c.kv_lora_rank));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "qk_nope_head_dim", &c.qk_nope_head_dim));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "qk_rope_head_dim", &c.qk_rope_head_dim));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "v_head_dim", &c.v_head_dim));
  DSV3_RETURN_IF_ERROR(
      ReadInt(j, "n_routed_experts", &c.n_routed_experts, /*null_means_zero=*/true));
  DSV3_RETURN_IF_ERROR(
      ReadInt(j, "n_shared_experts", &c.n_shared_experts, /*null_means_zero=*/true));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "num_experts_per_tok", &c.num_experts_per_tok, true));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "n_group", &c.n_group));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "topk_group", &c.topk_group));
  DSV3_RETURN_IF_ERROR(ReadDouble(j, "routed_scaling_factor", &c.routed_scaling_factor));
  DSV3_RETURN_IF_ERROR(ReadBool(j, "norm_topk_prob", &c.norm_topk_prob));
  DSV3_RETURN_IF_ERROR(ReadString(j, "scoring_func", &c.scoring_func));
  DSV3_RETURN_IF_ERROR(ReadString(j, "topk_method", &c.topk_method));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "first_k_dense_replace", &c.first_k_dense_replace));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "moe_layer_freq", &c.moe_layer_freq));
  DSV3_RETURN_IF_ERROR(ReadString(j, "hidden_act", &c.hidden_act));
  DSV3_RETURN_IF_ERROR(ReadDouble(j, "rms_norm_eps", &c.rms_norm_eps));
  DSV3_RETURN_IF_ERROR(ReadDouble(j, "rope_theta", &c.rope_theta));
  DSV3_RETURN_IF_ERROR(ParseRopeScaling(j, &c.rope_scaling));
  DSV3_RETURN_IF_ERROR(ReadInt(j, "max_position_embeddings", &c.max_position_embeddings));
  DSV3_RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", &c.tie_word_embeddings));
  DSV3_RETURN_IF_ERROR(ReadBool(j, "attention_bias", &c.attention_bias));
  DSV3_RETURN_IF_ERROR(ReadTokenId(j, "bos_token_id", &c.bos_token_id));
  DSV3_RETURN_IF_ERROR(ReadTokenId(j, "eos_token_id", &c.eos_token_id));
  DSV3_RETURN_IF_ERROR(ReadBool(j, "rope_interleave", &c.rope_interleave));
  DSV3_RETURN_IF_ERROR(ParseQuantization(j, &c.quantization_config));
  DSV3_RETURN_IF_ERROR(c.Validate());
  return c;
}

Status ModelConfig::Validate() const {
  auto positive = [](const char* key, int64_t v) -> Status {
    if (v <= 0) return Err("key '{}' must be positive, got {}", key, v);
    return Status::Ok();
  };
  DSV3_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  DSV3_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  DSV3_RETURN_IF_ERROR(positive("num_hidden_layers", num_hidden_layers));
  DSV3_RETURN_IF_ERROR(positive("num_attention_heads", num_attention_heads));
  DSV3_RETURN_IF_ERROR(positive("kv_lora_rank", kv_lora_rank));
  DSV3_RETURN_IF_ERROR(positive("qk_nope_head_dim", qk_nope_head_dim));
  DSV3_RETURN_IF_ERROR(positive("v_head_dim", v_head_dim));
  DSV3_RETURN_IF_ERROR(positive("max_position_embeddings", max_position_embeddings));
  DSV3_RETURN_IF_ERROR(positive("moe_layer_freq", moe_layer_freq));
  // Sizes beyond these are not models but typos or attacks; they would overflow index arithmetic.
  constexpr int64_t kMaxDim = int64_t{1} << 24;
  for (auto [key, v] : {std::pair{"vocab_size", vocab_size},
                        {"hidden_size", hidden_size},
                        {"intermediate_size", intermediate_size},
                        {"moe_intermediate_size", moe_intermediate_size},
                        {"num_hidden_layers", num_hidden_layers},
                        {"num_attention_heads", num_attention_heads},
                        {"q_lora_rank", q_lora_rank},
                        {"kv_lora_rank", kv_lora_rank},
                        {"qk_nope_head_dim", qk_nope_head_dim},
                        {"qk_rope_head_dim", qk_rope_head_dim},
                        {"v_head_dim", v_head_dim},
                        {"n_routed_experts", n_routed_experts},
                        {"num_nextn_predict_layers", num_nextn_predict_layers}}) {
    if (v > kMaxDim) return Err("key '{}' = {} is implausibly large", key, v);
    if (v < 0) return Err("key '{}' must not be negative, got {}", key, v);
  }
  if (qk_rope_head_dim % 2 != 0)
    return Err("key 'qk_rope_head_dim' must be even (RoPE rotates pairs), got {}",
               qk_rope_head_dim);
  if (hidden_act != "silu") return Err("hidden_act '{}' is not supported (silu)", hidden_act);
  if (attention_bias) return Status::Error("attention_bias true is not supported");
  if (!(rms_norm_eps > 0)) return Err("key 'rms_norm_eps' must be positive");
  if (!(rope_theta > 0)) return Err("key 'rope_theta' must be positive");
  bool any_dense_layer = false;
  for (int64_t i = 0; i < num_hidden_layers + num_nextn_predict_layers; ++i)
    any_dense_layer = any_dense_layer || !IsMoeLayer(i);
  if (any_dense_layer && intermediate_size <= 0)
    return Err("key 'intermediate_size' must be positive (the model has dense layers)");
  if (n_routed_experts > 0) {
    DSV3_RETURN_IF_ERROR(positive("moe_intermediate_size", moe_intermediate_size));
    DSV3_RETURN_IF_ERROR(positive("num_experts_per_tok", num_experts_per_tok));
    DSV3_RETURN_IF_ERROR(positive("n_group", n_group));
    DSV3_RETURN_IF_ERROR(positive("topk_group", topk_group));
    if (scoring_func != "sigmoid" && scoring_func != "softmax")
      return Err("scoring_func '{}' is not supported (sigmoid, softmax)", scoring_func);
    if (topk_method != "noaux_tc" && topk_method != "group_limited_greedy" &&
        topk_method != "greedy")
      return Err("topk_method '{}' is not supported (noaux_tc, group_limited_greedy, greedy)",
                 topk_method);
    if (n_routed_experts > kMaxRoutedExperts)
      return Err("n_routed_experts ({}) exceeds the supported maximum {}", n_routed_experts,
                 kMaxRoutedExperts);
    if (n_routed_experts % n_group != 0)
      return Err("n_routed_experts ({}) must be divisible by n_group ({})", n_routed_experts,
                 n_group);
    if (topk_group > n_group)
      return Err("topk_group ({}) must not exceed n_group ({})", topk_group, n_group);
    const int64_t kept =
        topk_method == "greedy" ? n_routed_experts : topk_group * (n_routed_experts / n_group);
    if (num_experts_per_tok > kept)
      return Err(
          "num_experts_per_tok ({}) exceeds the experts in the kept groups ({} = topk_group {} x "
          "{} experts per group)",
          num_experts_per_tok, kept, topk_group, n_routed_experts / n_group);
    if (topk_method == "noaux_tc" && n_group > 1 && n_routed_experts / n_group < 2)
      return Err("noaux_tc needs at least 2 experts per group (group score = top-2 sum)");
    if (!(routed_scaling_factor > 0)) return Err("key 'routed_scaling_factor' must be positive");
  }
  if (has_yarn()) {
    if (!(rope_scaling.factor > 0)) return Err("rope_scaling.factor must be positive");
    if (rope_scaling.original_max_position_embeddings <= 0)
      return Err("rope_scaling.original_max_position_embeddings must be positive");
    if (!(rope_scaling.beta_fast > 0) || !(rope_scaling.beta_slow > 0))
      return Err("rope_scaling.beta_fast and beta_slow must be positive");
  }
  if (quantization_config) {
    if (quantization_config->weight_block_size[0] <= 0 ||
        quantization_config->weight_block_size[1] <= 0)
      return Err("quantization_config.weight_block_size must be positive");
    if (quantization_config->group_size <= 0)
      return Err("quantization_config.group_size must be positive");
  }
  if (bos_token_id < 0 || bos_token_id >= vocab_size)
    return Err("bos_token_id {} is outside the vocabulary [0, {})", bos_token_id, vocab_size);
  if (eos_token_id < 0 || eos_token_id >= vocab_size)
    return Err("eos_token_id {} is outside the vocabulary [0, {})", eos_token_id, vocab_size);
  return Status::Ok();
}

nlohmann::json ModelConfig::ToJson() const {
  json j;
  j["architectures"] = {model_type == "deepseek_v2" ? "DeepseekV2ForCausalLM"
                                                    : "DeepseekV3ForCausalLM"};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["moe_intermediate_size"] = moe_intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_nextn_predict_layers"] = num_nextn_predict_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  j["q_lora_rank"] = q_lora_rank > 0 ? json(q_lora_rank) : json(nullptr);
  j["kv_lora_rank"] = kv_lora_rank;
  j["qk_nope_head_dim"] = qk_nope_head_dim;
  j["qk_rope_head_dim"] = qk_rope_head_dim;
  j["v_head_dim"] = v_head_dim;
  j["n_routed_experts"] = n_routed_experts > 0 ? json(n_routed_experts) : json(nullptr);
  j["n_shared_experts"] = n_shared_experts;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["n_group"] = n_group;
  j["topk_group"] = topk_group;
  j["routed_scaling_factor"] = routed_scaling_factor;
  j["norm_topk_prob"] = norm_topk_prob;
  j["scoring_func"] = scoring_func;
  j["topk_method"] = topk_method;
  j["first_k_dense_replace"] = first_k_dense_replace;
  j["moe_layer_freq"] = moe_layer_freq;
  j["hidden_act"] = hidden_act;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  if (has_yarn()) {
    j["rope_scaling"] = {
        {"type", "yarn"},
        {"factor", rope_scaling.factor},
        {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings},
        {"beta_fast", rope_scaling.beta_fast},
        {"beta_slow", rope_scaling.beta_slow},
        {"mscale", rope_scaling.mscale},
        {"mscale_all_dim", rope_scaling.mscale_all_dim},
    };
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = max_position_embeddings;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["attention_bias"] = attention_bias;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["rope_interleave"] = rope_interleave;
  j["torch_dtype"] = "bfloat16";
  if (quantization_config && quantization_config->quant_method == "dsv3") {
    j["quantization_config"] = {
        {"quant_method", "dsv3"},
        {"fmt", quantization_config->fmt},
        {"group_size", quantization_config->group_size},
        {"weight_block_size",
         {quantization_config->weight_block_size[0], quantization_config->weight_block_size[1]}},
        {"modules_to_not_convert", quantization_config->modules_to_not_convert},
    };
  } else if (quantization_config) {
    j["quantization_config"] = {
        {"activation_scheme", "dynamic"},
        {"fmt", "e4m3"},
        {"quant_method", "fp8"},
        {"weight_block_size",
         {quantization_config->weight_block_size[0], quantization_config->weight_block_size[1]}},
    };
    if (!quantization_config->scale_fmt.empty())
      j["quantization_config"]["scale_fmt"] = quantization_config->scale_fmt;
  }
  return j;
}

Result<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  DSV3_ASSIGN_OR_RETURN(json j, io::ReadJsonFile(path));
  auto config = ParseModelConfig(j);
  if (!config.ok()) return config.status().WithContext(path);
  return config;
}

}  // namespace dsv3
