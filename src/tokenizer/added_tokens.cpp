#include "tokenizer/added_tokens.h"

#include <algorithm>
#include <cstring>

namespace dsv3::tokenizer {

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) {
  nodes_.emplace_back();
  for (const AddedToken& token : tokens) {
    if (token.content.empty()) continue;
    int32_t node = 0;
    for (char c : token.content) {
      const auto byte = static_cast<uint8_t>(c);
      int32_t next = Child(node, byte);
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_.emplace_back();
        auto& children = nodes_[node].children;
        auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                                   [](const auto& a, const auto& b) { return a.first < b.first; });
        children.insert(it, {byte, next});
      }
      node = next;
    }
    // A string listed twice keeps its first id.
    if (nodes_[node].token_id < 0) nodes_[node].token_id = token.id;
    const auto first = static_cast<uint8_t>(token.content[0]);
    if (!can_start_[first]) {
      can_start_[first] = true;
      ++distinct_first_bytes_;
      only_first_byte_ = first;
    }
  }
}

int32_t AddedTokenMatcher::Child(int32_t node, uint8_t byte) const {
  const auto& children = nodes_[node].children;
  auto it = std::lower_bound(children.begin(), children.end(), std::make_pair(byte, 0),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
  return it != children.end() && it->first == byte ? it->second : -1;
}

std::pair<size_t, int32_t> AddedTokenMatcher::LongestAt(std::string_view text, size_t pos,
                                                        size_t end) const {
  std::pair<size_t, int32_t> best{0, -1};
  int32_t node = 0;
  for (size_t i = pos; i < end; ++i) {
    node = Child(node, static_cast<uint8_t>(text[i]));
    if (node < 0) break;
    if (nodes_[node].token_id >= 0) best = {i + 1 - pos, nodes_[node].token_id};
  }
  return best;
}

void AddedTokenMatcher::Split(std::string_view text, size_t begin, size_t end,
                              std::vector<Segment>* out) const {
  size_t text_start = begin;
  size_t pos = begin;
  while (pos < end) {
    // Jump to the next byte that can start a token.
    if (distinct_first_bytes_ == 1) {
      const void* hit = std::memchr(text.data() + pos, only_first_byte_, end - pos);
      if (hit == nullptr) break;
      pos = static_cast<size_t>(static_cast<const char*>(hit) - text.data());
    } else {
      while (pos < end && !can_start_[static_cast<uint8_t>(text[pos])]) ++pos;
      if (pos >= end) break;
    }
    const auto [length, id] = LongestAt(text, pos, end);
    if (length == 0) {
      ++pos;
      continue;
    }
    if (pos > text_start) out->push_back({text_start, pos, -1});
    out->push_back({pos, pos + length, id});
    pos += length;
    text_start = pos;
  }
  if (text_start < end) out->push_back({text_start, end, -1});
}

}  // namespace dsv3::tokenizer
