// Byte-level BPE training (dsv3 tokenizer train): counts pre-tokenized pieces of the training
// text, then repeatedly merges the most frequent adjacent pair. The result uses DeepSeek-V3's
// pre-tokenizer, added tokens and chat template, and is written as tokenizer.json +
// tokenizer_config.json that Hugging Face tokenizers load and encode exactly as dsv3 does (the
// encoding is defined by the merge ranks, which both apply identically).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/added_tokens.h"
#include "tokenizer/pretokenizer.h"
#include "util/status.h"

namespace dsv3::tokenizer {

struct BpeTrainerOptions {
  // Size of the BPE vocabulary: 3 leading special tokens + 256 bytes + merges. The trailing added
  // tokens (User, Assistant, tool calling, ...) take the ids after it.
  int32_t vocab_size = 32000;
  // Pairs seen fewer times than this are never merged (training stops early instead).
  int64_t min_frequency = 2;
  // Called now and then during Train with (merges done, merges wanted).
  std::function<void(int64_t, int64_t)> progress;
};

struct TrainedTokenizer {
  nlohmann::ordered_json tokenizer_json;
  nlohmann::ordered_json tokenizer_config_json;
  int64_t merges = 0;
};

class BpeTrainer {
 public:
  static Result<BpeTrainer> Create();

  // Counts the pieces of one training document (valid UTF-8). Added-token strings in the text
  // are cut out first, as encoding does, so they never shape the merges.
  Status AddText(std::string_view text);
  int64_t distinct_pieces() const { return static_cast<int64_t>(piece_counts_.size()); }

  // Deterministic: the same texts and options give the same files, byte for byte.
  Result<TrainedTokenizer> Train(const BpeTrainerOptions& options) const;

 private:
  BpeTrainer() = default;
  PreTokenizer pre_tokenizer_;
  AddedTokenMatcher added_matcher_;
  std::unordered_map<std::string, int64_t> piece_counts_;
};

// Writes DIR/tokenizer.json and DIR/tokenizer_config.json atomically (creating DIR).
Status WriteTrainedTokenizer(const TrainedTokenizer& trained, const std::string& dir);

}  // namespace dsv3::tokenizer
