// DeepSeek-V3's own tokenizer settings, for tokenizers trained by dsv3 that should behave like
// DeepSeek-V3's: its pre-tokenizer (as tokenizer.json writes it), its chat template (Jinja
// source, as tokenizer_config.json writes it) and its added tokens. Only the trainer uses these:
// loading a tokenizer always reads everything from the files.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace dsv3::tokenizer {

struct SpecialTokenSpec {
  std::string content;
  bool special;
  bool normalized;
};

// The "pre_tokenizer" value of DeepSeek-V3's tokenizer.json.
std::string_view DeepSeekV3PreTokenizerJson();

// The chat_template of DeepSeek-V3's tokenizer_config.json.
std::string_view DeepSeekV3ChatTemplate();

// Added tokens that take the first ids (BOS, EOS, pad), and those after the BPE vocabulary (FIM,
// User/Assistant, EOT, tool calling), in DeepSeek-V3's order and with its flags.
std::vector<SpecialTokenSpec> DeepSeekV3LeadingTokens();
std::vector<SpecialTokenSpec> DeepSeekV3TrailingTokens();

}  // namespace dsv3::tokenizer
