// UTF-8 validation and lossy decoding, shared by the encoder (which rejects invalid input) and the
// decoders (which must replace invalid bytes exactly like Rust's String::from_utf8_lossy, so that
// our decodes equal the Hugging Face tokenizer's byte for byte).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dsv3::tokenizer {

// Byte offset of the first invalid UTF-8 sequence in text, or nullopt if text is valid UTF-8
// (no overlongs, no surrogates, nothing above U+10FFFF).
std::optional<size_t> FindInvalidUtf8(std::string_view text);

// Appends the lossy decode of bytes to out: each maximal invalid subpart becomes U+FFFD (the
// Unicode "substitution of maximal subparts" rule that from_utf8_lossy follows).
//
// With final == false, a trailing sequence that is incomplete but could still become valid is not
// decoded; the return value is the number of bytes consumed (bytes.size() minus that tail, which
// is at most 3 bytes). With final == true everything is consumed, an incomplete tail becoming one
// U+FFFD.
size_t AppendUtf8Lossy(std::string_view bytes, bool final, std::string* out);

// Appends the UTF-8 encoding of a code point (must be a valid scalar value).
void AppendCodePoint(uint32_t cp, std::string* out);

// Decodes one code point at text[pos] of valid UTF-8 text and advances pos past it.
uint32_t NextCodePoint(std::string_view text, size_t* pos);

}  // namespace dsv3::tokenizer
