#include "tokenizer/tokenizer_config.h"

#include <filesystem>

#include "io/files.h"

namespace dsv3::tokenizer {
namespace {

// Special tokens are written either as plain strings or as {"__type": "AddedToken",
// "content": ...} objects.
Result<std::string> TokenString(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::string();
  const auto& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return Err("{}: expected a string or an object with \"content\"", key);
}

}  // namespace

Result<TokenizerConfig> TokenizerConfig::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return Err("expected a JSON object");
  TokenizerConfig config;
  DSV3_ASSIGN_OR_RETURN(config.bos_token, TokenString(j, "bos_token"));
  DSV3_ASSIGN_OR_RETURN(config.eos_token, TokenString(j, "eos_token"));
  DSV3_ASSIGN_OR_RETURN(config.pad_token, TokenString(j, "pad_token"));
  for (auto [key, field] : {std::pair{"add_bos_token", &config.add_bos_token},
                            std::pair{"add_eos_token", &config.add_eos_token}}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_boolean()) return Err("{}: expected true or false", key);
    *field = j[key].get<bool>();
  }
  if (j.contains("chat_template") && !j["chat_template"].is_null()) {
    const auto& t = j["chat_template"];
    if (t.is_string()) {
      config.chat_template = t.get<std::string>();
    } else if (t.is_array()) {
      // Several named templates: the one named "default" is what apply_chat_template uses.
      for (const auto& entry : t) {
        if (entry.is_object() && entry.value("name", "") == "default" &&
            entry.contains("template") && entry["template"].is_string()) {
          config.chat_template = entry["template"].get<std::string>();
        }
      }
      if (config.chat_template.empty()) return Err("chat_template: no template named 'default'");
    } else {
      return Err("chat_template: expected a string or a list of named templates");
    }
  }
  return config;
}

Result<TokenizerConfig> TokenizerConfig::Load(const std::string& path) {
  DSV3_ASSIGN_OR_RETURN(const nlohmann::json j, io::ReadJsonFile(path));
  auto config = FromJson(j);
  if (!config.ok()) return config.status().WithContext(path);
  return config;
}

Result<std::vector<int32_t>> ModelTokenizer::EncodeWithSpecial(std::string_view text,
                                                               bool force_bos) const {
  std::vector<int32_t> ids;
  if (config.add_bos_token || force_bos) {
    if (bos_id < 0) return Err("the tokenizer config names no BOS token");
    ids.push_back(bos_id);
  }
  DSV3_RETURN_IF_ERROR(tokenizer.EncodeAppend(text, &ids));
  if (config.add_eos_token) {
    if (eos_id < 0) return Err("the tokenizer config names no EOS token");
    ids.push_back(eos_id);
  }
  return ids;
}

Result<ModelTokenizer> LoadModelTokenizer(const std::string& model_dir) {
  DSV3_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::Load(model_dir + "/tokenizer.json"));
  TokenizerConfig config;
  const std::string config_path = model_dir + "/tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    DSV3_ASSIGN_OR_RETURN(config, TokenizerConfig::Load(config_path));
  }
  ModelTokenizer model{std::move(tokenizer), std::move(config)};
  auto resolve = [&](const std::string& token, const char* what, int32_t* id) -> Status {
    if (token.empty()) return Status::Ok();
    const std::optional<int32_t> found = model.tokenizer.TokenToId(token);
    if (!found.has_value()) {
      return Err("{}: {} '{}' is not a token of tokenizer.json", config_path, what, token);
    }
    *id = *found;
    return Status::Ok();
  };
  DSV3_RETURN_IF_ERROR(resolve(model.config.bos_token, "bos_token", &model.bos_id));
  DSV3_RETURN_IF_ERROR(resolve(model.config.eos_token, "eos_token", &model.eos_id));
  return model;
}

}  // namespace dsv3::tokenizer
