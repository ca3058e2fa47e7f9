// A byte-level BPE tokenizer loaded from a Hugging Face tokenizer.json, producing exactly the ids
// of the Hugging Face tokenizer (spec/tokenizer.md). Immutable after Load except for an internal,
// thread-safe cache of encoded pieces, so one instance serves many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "util/status.h"

namespace dsv3::tokenizer {

class PieceCache;

class Tokenizer {
 public:
  // Reads tokenizer.json. Errors name the file and the key at fault.
  static Result<Tokenizer> Load(const std::string& tokenizer_json_path);
  // Builds from tokenizer.json's parsed content.
  static Result<Tokenizer> FromJson(const nlohmann::json& j);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of text, without BOS/EOS (the raw tokenizer.json adds none; see TokenizerConfig).
  // Added tokens anywhere in the text are recognised, as the reference does by default. Invalid
  // UTF-8 is an error.
  Result<std::vector<int32_t>> Encode(std::string_view text) const;
  Status EncodeAppend(std::string_view text, std::vector<int32_t>* ids) const;

  // Text of ids: bytes of all tokens concatenated, invalid UTF-8 replaced by U+FFFD; unknown ids
  // are dropped; skip_special drops added tokens marked special.
  std::string Decode(std::span<const int32_t> ids, bool skip_special) const;

  // Raw bytes a token stands for (empty for unknown ids), and whether Decode skips it.
  std::string_view TokenBytes(int32_t id) const;
  bool IsSpecial(int32_t id) const;
  bool IsKnown(int32_t id) const;

  // Id of an added token's content or of a vocab entry (byte-level string as in the file).
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The string tokenizer.json gives for id (added token content or byte-level vocab string).
  std::optional<std::string> IdToToken(int32_t id) const;

  // One more than the highest id in the vocab or added tokens.
  int32_t id_limit() const { return static_cast<int32_t>(decode_bytes_.size()); }
  const std::vector<AddedToken>& added_tokens() const { return added_tokens_; }
  const BpeModel& model() const { return bpe_; }
  const PreTokenizer& pre_tokenizer() const { return pre_tokenizer_; }

 private:
  Tokenizer();
  Status EncodeText(std::string_view text, std::vector<int32_t>* ids, MatchScratch* match,
                    BpeScratch* bpe_scratch) const;
  void EncodePieceCached(std::string_view piece, std::vector<int32_t>* ids,
                         BpeScratch* scratch) const;

  ByteLevelTable byte_table_;
  PreTokenizer pre_tokenizer_;
  BpeModel bpe_;
  std::vector<AddedToken> added_tokens_;
  AddedTokenMatcher raw_matcher_;         // normalized: false tokens, matched first
  AddedTokenMatcher normalized_matcher_;  // normalized: true tokens, on what is left
  std::vector<std::string> decode_bytes_;
  std::vector<uint8_t> flags_;  // kKnown | kSpecial per id
  std::unique_ptr<PieceCache> cache_;
};

// Loads DIR/tokenizer.json.
Result<Tokenizer> LoadTokenizerFromDir(const std::string& model_dir);

}  // namespace dsv3::tokenizer
