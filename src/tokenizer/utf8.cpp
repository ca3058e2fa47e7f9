#include "tokenizer/utf8.h"

namespace dsv3::tokenizer {
namespace {

// Length of the longest prefix of bytes[pos..] that is a valid (possibly incomplete) start of a
// UTF-8 sequence, and the length the complete sequence would have. Table 3-7 of the Unicode
// standard: the second byte's range depends on the lead byte.
struct SequenceCheck {
  int valid_prefix = 0;  // bytes that belong to a well-formed (maybe incomplete) sequence
  int needed = 0;        // total length of the sequence the lead byte announces (0: invalid lead)
};

SequenceCheck CheckSequence(std::string_view bytes, size_t pos) {
  const auto b0 = static_cast<uint8_t>(bytes[pos]);
  if (b0 < 0x80) return {1, 1};
  int needed = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    needed = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    needed = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    needed = 4;
    if (b0 == 0xF0) lo = 0x90;  // no overlongs
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {0, 0};
  }
  int valid = 1;
  for (int k = 1; k < needed && pos + k < bytes.size(); ++k) {
    const auto b = static_cast<uint8_t>(bytes[pos + k]);
    const uint8_t min = k == 1 ? lo : 0x80;
    const uint8_t max = k == 1 ? hi : 0xBF;
    if (b < min || b > max) break;
    ++valid;
  }
  return {valid, needed};
}

}  // namespace

std::optional<size_t> FindInvalidUtf8(std::string_view text) {
  size_t pos = 0;
  const size_t n = text.size();
  while (pos < n) {
    // ASCII fast path, 8 bytes at a time.
    while (pos + 8 <= n) {
      uint64_t word;
      __builtin_memcpy(&word, text.data() + pos, 8);
      if (word & 0x8080808080808080ULL) break;
      pos += 8;
    }
    if (pos >= n) break;
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const SequenceCheck check = CheckSequence(text, pos);
    if (check.needed == 0 || check.valid_prefix != check.needed) return pos;
    pos += check.needed;
  }
  return std::nullopt;
}

size_t AppendUtf8Lossy(std::string_view bytes, bool final, std::string* out) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  size_t pos = 0;
  size_t run_start = 0;  // valid bytes not yet copied: appended in one go
  const size_t n = bytes.size();
  while (pos < n) {
    if (static_cast<uint8_t>(bytes[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const SequenceCheck check = CheckSequence(bytes, pos);
    if (check.needed != 0 && check.valid_prefix == check.needed) {
      pos += check.needed;
      continue;
    }
    out->append(bytes.data() + run_start, pos - run_start);
    const bool truncated_by_end =
        check.needed != 0 && pos + static_cast<size_t>(check.valid_prefix) == n;
    if (truncated_by_end && !final) return pos;  // could still be completed by later bytes
    out->append(kReplacement);
    pos += check.valid_prefix == 0 ? 1 : check.valid_prefix;
    run_start = pos;
  }
  out->append(bytes.data() + run_start, pos - run_start);
  return pos;
}

void AppendCodePoint(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t NextCodePoint(std::string_view text, size_t* pos) {
  const auto b0 = static_cast<uint8_t>(text[*pos]);
  int len = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  uint32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (int k = 1; k < len && *pos + k < text.size(); ++k) {
    cp = (cp << 6) | (static_cast<uint8_t>(text[*pos + k]) & 0x3F);
  }
  *pos += len;
  return cp;
}

}  // namespace dsv3::tokenizer
