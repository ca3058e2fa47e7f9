#include "tokenizer/bpe.h"

#include <algorithm>

namespace dsv3::tokenizer {
namespace {

// Pieces up to this many bytes use the quadratic scan (fewer cache misses than a heap); longer
// ones the heap, so a megabyte-long word stays O(n log n). Both merge the same pairs.
constexpr size_t kShortPiece = 64;

Result<std::string> MergePart(const nlohmann::json& merge, size_t index, int part) {
  if (merge.is_string()) {
    const std::string& s = merge.get_ref<const std::string&>();
    const size_t space = s.find(' ');
    if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
      return Err("model.merges[{}]: '{}' is not two tokens separated by one space", index, s);
    }
    return part == 0 ? s.substr(0, space) : s.substr(space + 1);
  }
  if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
    return merge[part].get<std::string>();
  }
  return Err("model.merges[{}]: expected \"a b\" or [\"a\", \"b\"]", index);
}

}  // namespace

Result<BpeModel> BpeModel::FromJson(const nlohmann::json& model, const ByteLevelTable& table) {
  if (!model.is_object()) return Err("model: expected an object");
  if (model.contains("type") && model["type"] != "BPE") {
    return Err("model.type: '{}' is not supported (only BPE)",
               model["type"].is_string() ? model["type"].get<std::string>() : model["type"].dump());
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return Err("model.vocab: missing or not an object");
  }
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return Err("model.merges: missing or not an array");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() && model[key] != "") {
      return Err("model.{}: not supported by byte-level BPE", key);
    }
  }
  if (model.value("byte_fallback", false)) return Err("model.byte_fallback: not supported");
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"] != 0) {
    return Err("model.dropout: BPE dropout is not supported (it makes encoding random)");
  }

  BpeModel bpe;
  const auto& vocab = model["vocab"];
  int64_t max_id = -1;
  for (const auto& [token, id_json] : vocab.items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
        id_json.get<int64_t>() > (int64_t{1} << 30)) {
      return Err("model.vocab['{}']: id must be a non-negative integer", token);
    }
    max_id = std::max(max_id, id_json.get<int64_t>());
  }
  bpe.id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  std::vector<bool> used(static_cast<size_t>(max_id + 1), false);
  bpe.token_to_id_.reserve(vocab.size());
  for (const auto& [token, id_json] : vocab.items()) {
    const auto id = static_cast<int32_t>(id_json.get<int64_t>());
    if (used[id]) {
      return Err("model.vocab: id {} is used by both '{}' and '{}'", id, bpe.id_to_token_[id],
                 token);
    }
    used[id] = true;
    bpe.id_to_token_[id] = token;
    bpe.token_to_id_.emplace(token, id);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = bpe.token_to_id_.find(table.StringOf(static_cast<uint8_t>(b)));
    bpe.byte_ids_[b] = it == bpe.token_to_id_.end() ? -1 : it->second;
  }

  const auto& merges = model["merges"];
  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity *= 2;
  bpe.merges_.assign(capacity, MergeSlot{});
  bpe.merge_mask_ = capacity - 1;
  for (size_t i = 0; i < merges.size(); ++i) {
    int32_t ids[2];
    std::string parts[2];
    for (int part = 0; part < 2; ++part) {
      DSV3_ASSIGN_OR_RETURN(parts[part], MergePart(merges[i], i, part));
      auto it = bpe.token_to_id_.find(parts[part]);
      if (it == bpe.token_to_id_.end()) {
        return Err("model.merges[{}]: token '{}' is not in the vocab", i, parts[part]);
      }
      ids[part] = it->second;
    }
    auto merged = bpe.token_to_id_.find(parts[0] + parts[1]);
    if (merged == bpe.token_to_id_.end()) {
      return Err("model.merges[{}]: merged token '{}' is not in the vocab", i, parts[0] + parts[1]);
    }
    // A pair listed twice keeps its last rank, as the reference's HashMap collect does.
    bpe.InsertMerge(ids[0], ids[1], static_cast<uint32_t>(i), merged->second);
  }
  bpe.merge_count_ = merges.size();
  return bpe;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = token_to_id_.find(std::string(token));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

const BpeModel::MergeSlot* BpeModel::FindMerge(int32_t a, int32_t b) const {
  const uint64_t key = PairKey(a, b);
  uint64_t slot = (key * 0x9E3779B97F4A7C15ULL) >> 20 & merge_mask_;
  while (true) {
    const MergeSlot& s = merges_[slot];
    if (s.key == key) return &s;
    if (s.key == kEmptyKey) return nullptr;
    slot = (slot + 1) & merge_mask_;
  }
}

void BpeModel::InsertMerge(int32_t a, int32_t b, uint32_t rank, int32_t merged) {
  const uint64_t key = PairKey(a, b);
  uint64_t slot = (key * 0x9E3779B97F4A7C15ULL) >> 20 & merge_mask_;
  while (merges_[slot].key != kEmptyKey && merges_[slot].key != key) {
    slot = (slot + 1) & merge_mask_;
  }
  merges_[slot] = {key, rank, merged};
}

void BpeModel::EncodePiece(std::string_view piece, std::vector<int32_t>* ids,
                           BpeScratch* scratch) const {
  std::vector<int32_t>& symbols = scratch->symbols;
  symbols.clear();
  for (char c : piece) {
    // A byte missing from the vocab is dropped, as the reference does without an unk_token.
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id >= 0) symbols.push_back(id);
  }
  if (symbols.size() > 1) {
    if (symbols.size() <= kShortPiece) {
      MergeShort(scratch);
    } else {
      MergeLong(scratch);
    }
  }
  ids->insert(ids->end(), symbols.begin(), symbols.end());
}

void BpeModel::MergeShort(BpeScratch* scratch) const {
  std::vector<int32_t>& symbols = scratch->symbols;
  std::vector<uint32_t>& ranks = scratch->ranks;  // ranks[i]: rank of (symbols[i], symbols[i+1])
  ranks.resize(symbols.size() - 1);
  for (size_t i = 0; i + 1 < symbols.size(); ++i) ranks[i] = RankOf(symbols[i], symbols[i + 1]);
  while (!ranks.empty()) {
    size_t best = 0;
    for (size_t i = 1; i < ranks.size(); ++i) {
      if (ranks[i] < ranks[best]) best = i;
    }
    if (ranks[best] == kNoMerge) break;
    symbols[best] = FindMerge(symbols[best], symbols[best + 1])->merged;
    symbols.erase(symbols.begin() + static_cast<ptrdiff_t>(best) + 1);
    ranks.erase(ranks.begin() + static_cast<ptrdiff_t>(best));
    if (best > 0) ranks[best - 1] = RankOf(symbols[best - 1], symbols[best]);
    if (best < ranks.size()) ranks[best] = RankOf(symbols[best], symbols[best + 1]);
  }
}

void BpeModel::MergeLong(BpeScratch* scratch) const {
  std::vector<int32_t>& symbols = scratch->symbols;  // -1 once merged into its left neighbour
  const auto n = static_cast<int32_t>(symbols.size());
  std::vector<int32_t>& prev = scratch->prev;
  std::vector<int32_t>& next = scratch->next;
  prev.resize(n);
  next.resize(n);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  auto& heap = scratch->heap;
  heap.clear();
  // Min-heap on (rank, pos): std heap functions build a max-heap, so the comparison is reversed.
  auto later = [](const BpeScratch::HeapEntry& x, const BpeScratch::HeapEntry& y) {
    return x.rank != y.rank ? x.rank > y.rank : x.pos > y.pos;
  };
  auto push = [&](int32_t pos) {
    const int32_t right = next[pos];
    if (right < 0) return;
    const MergeSlot* slot = FindMerge(symbols[pos], symbols[right]);
    if (slot == nullptr) return;
    heap.push_back({slot->rank, pos, slot->merged});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const BpeScratch::HeapEntry top = heap.back();
    heap.pop_back();
    const int32_t pos = top.pos;
    if (symbols[pos] < 0) continue;
    const int32_t right = next[pos];
    if (right < 0) continue;
    // Stale entry: the pair at pos changed since it was queued. Two pairs at one position that
    // merge into the same token cannot both be queued (the merged token fixes the byte span and
    // the left symbol only grows), so comparing the merged id is exact.
    const MergeSlot* slot = FindMerge(symbols[pos], symbols[right]);
    if (slot == nullptr || slot->merged != top.merged) continue;
    symbols[pos] = top.merged;
    symbols[right] = -1;
    next[pos] = next[right];
    if (next[pos] >= 0) prev[next[pos]] = pos;
    if (prev[pos] >= 0) push(prev[pos]);
    push(pos);
  }
  size_t out = 0;
  for (int32_t i = 0; i < n; ++i) {
    if (symbols[i] >= 0) symbols[out++] = symbols[i];
  }
  symbols.resize(out);
}

}  // namespace dsv3::tokenizer
