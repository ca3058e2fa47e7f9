// Byte-level BPE model (spec/tokenizer.md §4): vocab and merges from tokenizer.json, keyed by raw
// bytes; a piece is encoded by repeatedly merging the adjacent pair of lowest merge rank (leftmost
// on ties), which is what the Hugging Face BPE model does with its (rank, position) heap.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/byte_level.h"
#include "util/status.h"

namespace dsv3::tokenizer {

// Reusable buffers for EncodePiece; one per thread (or per call).
struct BpeScratch {
  std::vector<int32_t> symbols;
  std::vector<uint32_t> ranks;
  std::vector<int32_t> prev, next;
  struct HeapEntry {
    uint32_t rank;
    int32_t pos;
    int32_t merged;
  };
  std::vector<HeapEntry> heap;
};

class BpeModel {
 public:
  // model is the "model" object of tokenizer.json (type BPE). Errors name the key at fault.
  static Result<BpeModel> FromJson(const nlohmann::json& model, const ByteLevelTable& table);

  // Appends the ids for one pre-tokenized piece of raw bytes.
  void EncodePiece(std::string_view piece, std::vector<int32_t>* ids, BpeScratch* scratch) const;

  // The vocabulary as written in tokenizer.json (byte-level strings).
  std::optional<int32_t> TokenToId(std::string_view token) const;
  const std::vector<std::string>& id_to_token() const { return id_to_token_; }
  size_t merge_count() const { return merge_count_; }

  static constexpr uint32_t kNoMerge = 0xFFFFFFFFu;

 private:
  struct MergeSlot {
    uint64_t key = kEmptyKey;
    uint32_t rank = kNoMerge;
    int32_t merged = -1;
  };
  static constexpr uint64_t kEmptyKey = ~uint64_t{0};
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  // Open-addressing lookup: the merge table is the innermost loop of encoding.
  const MergeSlot* FindMerge(int32_t a, int32_t b) const;
  void InsertMerge(int32_t a, int32_t b, uint32_t rank, int32_t merged);
  uint32_t RankOf(int32_t a, int32_t b) const {
    const MergeSlot* slot = FindMerge(a, b);
    return slot == nullptr ? kNoMerge : slot->rank;
  }

  void MergeShort(BpeScratch* scratch) const;
  void MergeLong(BpeScratch* scratch) const;

  std::vector<std::string> id_to_token_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  int32_t byte_ids_[256];
  std::vector<MergeSlot> merges_;
  uint64_t merge_mask_ = 0;
  size_t merge_count_ = 0;
};

}  // namespace dsv3::tokenizer
