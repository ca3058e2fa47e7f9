// Streaming decode (spec/tokenizer.md §6): text is emitted as tokens arrive, never splitting a
// UTF-8 character; the concatenated chunks equal Tokenizer::Decode of all ids.
#pragma once

#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace dsv3::tokenizer {

// Belongs to one sequence; holds a reference to the tokenizer, which must outlive it.
class DecodeStream {
 public:
  DecodeStream(const Tokenizer& tokenizer, bool skip_special)
      : tokenizer_(&tokenizer), skip_special_(skip_special) {}

  // The text this token completes (often empty while a multi-byte character is in flight).
  std::string Next(int32_t id);
  // Appends that text to out instead; returns the number of bytes appended.
  size_t NextTo(int32_t id, std::string* out);

  // Flushes what is held back: an incomplete trailing character becomes one U+FFFD. The stream
  // can be reused for a new sequence afterwards.
  std::string Finish();

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::string pending_;  // at most 3 bytes: a valid but incomplete character
};

}  // namespace dsv3::tokenizer
