// Added (special) tokens are cut out of the text before any regex or BPE (spec/tokenizer.md §2):
// leftmost-longest matching over all token strings, as Hugging Face's AddedVocabulary does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsv3::tokenizer {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;     // skipped by Decode(skip_special = true); no effect on encoding
  bool normalized = false;  // matched on normalized text (second pass) instead of raw text
};

// A piece of the input: either plain text [begin, end) or one added token.
struct Segment {
  size_t begin = 0;
  size_t end = 0;
  int32_t added_id = -1;  // -1: plain text
};

// Leftmost-longest matcher over a fixed set of strings: a byte trie, scanned from each position
// whose byte can start a token. DeepSeek's 818 tokens all start with '<', so the scan is a memchr.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  bool empty() const { return nodes_.size() <= 1; }

  // Splits text[begin, end) into plain-text and added-token segments, appended to out.
  void Split(std::string_view text, size_t begin, size_t end, std::vector<Segment>* out) const;

 private:
  struct Node {
    int32_t token_id = -1;
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
  };
  int32_t Child(int32_t node, uint8_t byte) const;
  // Length and id of the longest token starting at text[pos], or {0, -1}.
  std::pair<size_t, int32_t> LongestAt(std::string_view text, size_t pos, size_t end) const;

  std::vector<Node> nodes_;
  bool can_start_[256] = {};
  int distinct_first_bytes_ = 0;
  uint8_t only_first_byte_ = 0;
};

}  // namespace dsv3::tokenizer
