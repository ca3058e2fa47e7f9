// tokenizer_config.json (the transformers side of a Hugging Face tokenizer): BOS/EOS strings,
// whether encode() prepends BOS, and the chat template source. Plus the pair a model directory
// ships, tokenizer.json + tokenizer_config.json, loaded together.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"
#include "util/status.h"

namespace dsv3::tokenizer {

struct TokenizerConfig {
  std::string bos_token;  // content strings; empty when the file names none
  std::string eos_token;
  std::string pad_token;
  // transformers' encode(text) prepends BOS when true. A missing key reads as false: the raw
  // tokenizer.json adds nothing, and DeepSeek's templates write BOS themselves.
  bool add_bos_token = false;
  bool add_eos_token = false;
  std::string chat_template;  // Jinja source; empty when absent

  static Result<TokenizerConfig> Load(const std::string& path);
  static Result<TokenizerConfig> FromJson(const nlohmann::json& j);
};

// A model directory's tokenizer: DIR/tokenizer.json and (optional) DIR/tokenizer_config.json.
struct ModelTokenizer {
  Tokenizer tokenizer;
  TokenizerConfig config;
  int32_t bos_id = -1;  // -1 when the config names no BOS or it is not a token
  int32_t eos_id = -1;

  // Ids as transformers' tokenizer.encode(text) gives them: BOS first when add_bos_token is set
  // (or add_bos is forced).
  Result<std::vector<int32_t>> EncodeWithSpecial(std::string_view text, bool force_bos) const;
};

Result<ModelTokenizer> LoadModelTokenizer(const std::string& model_dir);

}  // namespace dsv3::tokenizer
