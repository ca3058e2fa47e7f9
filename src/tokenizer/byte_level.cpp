#include "tokenizer/byte_level.h"

#include "tokenizer/utf8.h"

namespace dsv3::tokenizer {

ByteLevelTable::ByteLevelTable() {
  // Printable Latin-1 bytes stand for themselves; the other 68 bytes, in increasing order, take
  // U+0100, U+0101, ... so that every token is a string of visible characters.
  char_to_byte_.fill(-1);
  uint32_t next_extra = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const uint32_t cp = printable ? static_cast<uint32_t>(b) : next_extra++;
    byte_to_char_[b] = cp;
    byte_to_string_[b].clear();
    AppendCodePoint(cp, &byte_to_string_[b]);
    char_to_byte_[cp] = static_cast<int16_t>(b);
  }
}

std::optional<std::string> ByteLevelTable::ToBytes(std::string_view byte_level) const {
  std::string bytes;
  bytes.reserve(byte_level.size());
  size_t pos = 0;
  while (pos < byte_level.size()) {
    const uint32_t cp = NextCodePoint(byte_level, &pos);
    if (cp >= char_to_byte_.size() || char_to_byte_[cp] < 0) return std::nullopt;
    bytes.push_back(static_cast<char>(char_to_byte_[cp]));
  }
  return bytes;
}

std::string ByteLevelTable::FromBytes(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += byte_to_string_[static_cast<uint8_t>(c)];
  return out;
}

std::string ByteLevelTable::DecodeToken(std::string_view token) const {
  std::optional<std::string> bytes = ToBytes(token);
  if (bytes.has_value()) return std::move(*bytes);
  return std::string(token);
}

}  // namespace dsv3::tokenizer
