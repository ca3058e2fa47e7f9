#include "tokenizer/tokenizer.h"

#include <array>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "io/files.h"
#include "tokenizer/utf8.h"

namespace dsv3::tokenizer {
namespace {

constexpr uint8_t kKnown = 1;
constexpr uint8_t kSpecial = 2;

// Pieces this short are cheaper to merge than to look up; pieces this long rarely repeat.
constexpr size_t kMinCachedPiece = 3;
constexpr size_t kMaxCachedPiece = 48;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace

// Results of frequent pieces, shared by all threads using one Tokenizer. Sharded so that threads
// encoding at once rarely wait on the same lock; each shard is cleared when full, which bounds
// memory and lets the cache follow a changing workload. Encoding is deterministic, so a cached
// result is always the result.
class PieceCache {
 public:
  bool Lookup(std::string_view piece, size_t hash, std::vector<int32_t>* ids) {
    Shard& shard = shards_[hash % kShards];
    std::lock_guard<std::mutex> lock(shard.mutex);
    auto it = shard.map.find(piece);
    if (it == shard.map.end()) return false;
    ids->insert(ids->end(), it->second.begin(), it->second.end());
    return true;
  }
  void Insert(std::string_view piece, size_t hash, const int32_t* ids, size_t count) {
    Shard& shard = shards_[hash % kShards];
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.map.size() >= kShardCapacity) shard.map.clear();
    shard.map.emplace(std::string(piece), std::vector<int32_t>(ids, ids + count));
  }

 private:
  static constexpr size_t kShards = 64;
  static constexpr size_t kShardCapacity = 4096;
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> map;
  };
  std::array<Shard, kShards> shards_;
};

Tokenizer::Tokenizer() : cache_(std::make_unique<PieceCache>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Result<Tokenizer> Tokenizer::Load(const std::string& tokenizer_json_path) {
  auto json = io::ReadJsonFile(tokenizer_json_path);
  if (!json.ok()) return json.status();
  auto tokenizer = FromJson(*json);
  if (!tokenizer.ok()) return tokenizer.status().WithContext(tokenizer_json_path);
  return tokenizer;
}

Result<Tokenizer> LoadTokenizerFromDir(const std::string& model_dir) {
  return Tokenizer::Load(model_dir + "/tokenizer.json");
}

Result<Tokenizer> Tokenizer::FromJson(const nlohmann::json& j) {
  // nlohmann::json throws on type mismatches we did not foresee; turn any of them into an error
  // value here, at the boundary.
  try {
    if (!j.is_object()) return Err("expected a JSON object");
    if (!j.contains("model") || j["model"].is_null()) return Err("model: missing");
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      const auto& norm = j["normalizer"];
      const bool empty_sequence = norm.is_object() && norm.value("type", "") == "Sequence" &&
                                  norm.contains("normalizers") && norm["normalizers"].is_array() &&
                                  norm["normalizers"].empty();
      if (!empty_sequence) {
        return Err("normalizer: only none or an empty Sequence is supported, got {}",
                   norm.dump().substr(0, 200));
      }
    }
    if (j.contains("decoder") && !j["decoder"].is_null() &&
        j["decoder"].value("type", "") != "ByteLevel") {
      return Err("decoder: only ByteLevel is supported, got {}",
                 j["decoder"].dump().substr(0, 200));
    }

    Tokenizer tok;
    DSV3_ASSIGN_OR_RETURN(tok.pre_tokenizer_,
                          PreTokenizer::FromJson(j.value("pre_tokenizer", nlohmann::json())));
    DSV3_ASSIGN_OR_RETURN(tok.bpe_, BpeModel::FromJson(j["model"], tok.byte_table_));

    const std::vector<std::string>& vocab = tok.bpe_.id_to_token();
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      if (!j["added_tokens"].is_array()) return Err("added_tokens: expected an array");
      std::unordered_set<int32_t> seen_ids;
      const auto& list = j["added_tokens"];
      for (size_t i = 0; i < list.size(); ++i) {
        const auto& a = list[i];
        const std::string where = fmt::format("added_tokens[{}]", i);
        if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
            !a.contains("content") || !a["content"].is_string()) {
          return Err("{}: expected an object with an integer \"id\" and a string \"content\"",
                     where);
        }
        AddedToken token;
        const int64_t id = a["id"].get<int64_t>();
        if (id < 0 || id > (int64_t{1} << 30)) return Err("{}: id {} out of range", where, id);
        token.id = static_cast<int32_t>(id);
        token.content = a["content"].get<std::string>();
        token.special = a.value("special", false);
        token.normalized = a.value("normalized", !token.special);
        for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
          if (a.value(flag, false)) return Err("{}: {}: true is not supported", where, flag);
        }
        if (token.content.empty()) return Err("{}: empty content", where);
        if (!seen_ids.insert(token.id).second) {
          return Err("{}: id {} is used by another added token", where, token.id);
        }
        const std::string as_vocab = tok.byte_table_.FromBytes(token.content);
        if (static_cast<size_t>(token.id) < vocab.size() && !vocab[token.id].empty() &&
            vocab[token.id] != token.content && vocab[token.id] != as_vocab) {
          return Err("{}: id {} of '{}' is already the vocab token '{}'", where, token.id,
                     token.content, vocab[token.id]);
        }
        tok.added_tokens_.push_back(std::move(token));
      }
    }

    std::vector<AddedToken> raw, normalized;
    size_t limit = vocab.size();
    for (const AddedToken& t : tok.added_tokens_) {
      (t.normalized ? normalized : raw).push_back(t);
      limit = std::max(limit, static_cast<size_t>(t.id) + 1);
    }
    tok.raw_matcher_ = AddedTokenMatcher(raw);
    tok.normalized_matcher_ = AddedTokenMatcher(normalized);

    tok.decode_bytes_.assign(limit, std::string());
    tok.flags_.assign(limit, 0);
    for (size_t id = 0; id < vocab.size(); ++id) {
      if (vocab[id].empty()) continue;
      tok.decode_bytes_[id] = tok.byte_table_.DecodeToken(vocab[id]);
      tok.flags_[id] = kKnown;
    }
    for (const AddedToken& t : tok.added_tokens_) {
      tok.decode_bytes_[t.id] = tok.byte_table_.DecodeToken(t.content);
      tok.flags_[t.id] = kKnown | (t.special ? kSpecial : 0);
    }
    return tok;
  } catch (const nlohmann::json::exception& e) {
    return Err("malformed tokenizer.json: {}", e.what());
  }
}

Result<std::vector<int32_t>> Tokenizer::Encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  DSV3_RETURN_IF_ERROR(EncodeAppend(text, &ids));
  return ids;
}

Status Tokenizer::EncodeAppend(std::string_view text, std::vector<int32_t>* ids) const {
  if (const std::optional<size_t> bad = FindInvalidUtf8(text); bad.has_value()) {
    return Err("text is not valid UTF-8 (byte {} of {})", *bad, text.size());
  }
  std::vector<Segment> segments;
  raw_matcher_.Split(text, 0, text.size(), &segments);
  if (!normalized_matcher_.empty()) {
    // The identity normalizer leaves offsets unchanged, so the second pass runs on the same text.
    std::vector<Segment> refined;
    for (const Segment& s : segments) {
      if (s.added_id >= 0) {
        refined.push_back(s);
      } else {
        normalized_matcher_.Split(text, s.begin, s.end, &refined);
      }
    }
    segments.swap(refined);
  }
  MatchScratch match;
  BpeScratch bpe_scratch;
  for (const Segment& s : segments) {
    if (s.added_id >= 0) {
      ids->push_back(s.added_id);
    } else {
      DSV3_RETURN_IF_ERROR(
          EncodeText(text.substr(s.begin, s.end - s.begin), ids, &match, &bpe_scratch));
    }
  }
  return Status::Ok();
}

Status Tokenizer::EncodeText(std::string_view text, std::vector<int32_t>* ids, MatchScratch* match,
                             BpeScratch* bpe_scratch) const {
  std::vector<std::string_view> pieces;
  DSV3_RETURN_IF_ERROR(pre_tokenizer_.Split(text, &pieces, match));
  for (std::string_view piece : pieces) EncodePieceCached(piece, ids, bpe_scratch);
  return Status::Ok();
}

void Tokenizer::EncodePieceCached(std::string_view piece, std::vector<int32_t>* ids,
                                  BpeScratch* scratch) const {
  if (piece.size() < kMinCachedPiece || piece.size() > kMaxCachedPiece) {
    bpe_.EncodePiece(piece, ids, scratch);
    return;
  }
  const size_t hash = StringHash{}(piece);
  if (cache_->Lookup(piece, hash, ids)) return;
  const size_t first = ids->size();
  bpe_.EncodePiece(piece, ids, scratch);
  cache_->Insert(piece, hash, ids->data() + first, ids->size() - first);
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids) {
    if (!IsKnown(id) || (skip_special && IsSpecial(id))) continue;
    bytes += decode_bytes_[id];
  }
  std::string text;
  text.reserve(bytes.size());
  AppendUtf8Lossy(bytes, /*final=*/true, &text);
  return text;
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  return IsKnown(id) ? std::string_view(decode_bytes_[id]) : std::string_view();
}

bool Tokenizer::IsKnown(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < flags_.size() && (flags_[id] & kKnown) != 0;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return IsKnown(id) && (flags_[id] & kSpecial) != 0;
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  for (const AddedToken& t : added_tokens_) {
    if (t.content == token) return t.id;
  }
  return bpe_.TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (!IsKnown(id)) return std::nullopt;
  for (const AddedToken& t : added_tokens_) {
    if (t.id == id) return t.content;
  }
  return bpe_.id_to_token()[id];
}

}  // namespace dsv3::tokenizer
