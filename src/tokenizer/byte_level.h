// GPT-2's byte <-> character table used by byte-level BPE (spec/tokenizer.md §3): tokenizer.json
// stores tokens as strings of these characters, one character per byte. We run BPE on raw bytes
// and use this table only to translate the file's strings at load time and for decoding.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dsv3::tokenizer {

class ByteLevelTable {
 public:
  ByteLevelTable();

  // The character (code point) that stands for byte b.
  uint32_t CharOf(uint8_t b) const { return byte_to_char_[b]; }
  // The UTF-8 string of that character.
  const std::string& StringOf(uint8_t b) const { return byte_to_string_[b]; }

  // Maps a byte-level string back to bytes; nullopt if a character is outside the table (tokens
  // such as "<｜User｜>" that were added verbatim).
  std::optional<std::string> ToBytes(std::string_view byte_level) const;

  // The byte-level string for raw bytes.
  std::string FromBytes(std::string_view bytes) const;

  // The bytes a token string decodes to (Hugging Face ByteLevel decoder): the mapped bytes if
  // every character is in the table, otherwise the string's own UTF-8 bytes.
  std::string DecodeToken(std::string_view token) const;

 private:
  std::array<uint32_t, 256> byte_to_char_{};
  std::array<std::string, 256> byte_to_string_;
  // Characters of the table are all below U+0144; index by code point.
  std::array<int16_t, 0x144> char_to_byte_{};
};

}  // namespace dsv3::tokenizer
