// UTF-8 helpers for the tokenizer: walking code points, repairing ill-formed
// input, and finding where a byte stream can be cut without splitting a
// character.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace moe::tokenizer {

// Number of bytes of the sequence introduced by `lead` (1 for ASCII and for
// bytes that cannot start a sequence).
inline size_t utf8SequenceLength(unsigned char lead) {
  if (lead < 0xC0)
    return 1;
  if (lead < 0xE0)
    return 2;
  if (lead < 0xF0)
    return 3;
  return lead < 0xF8 ? 4 : 1;
}

// Decodes the code point starting at `text[pos]`; `text` must be valid UTF-8.
inline uint32_t decodeUtf8(std::string_view text, size_t pos, size_t &length) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(text[pos + i]); };
  unsigned char lead = byte(0);
  length = utf8SequenceLength(lead);
  switch (length) {
  case 2:
    return (lead & 0x1Fu) << 6 | (byte(1) & 0x3Fu);
  case 3:
    return (lead & 0x0Fu) << 12 | (byte(1) & 0x3Fu) << 6 | (byte(2) & 0x3Fu);
  case 4:
    return (lead & 0x07u) << 18 | (byte(1) & 0x3Fu) << 12 |
           (byte(2) & 0x3Fu) << 6 | (byte(3) & 0x3Fu);
  default:
    return lead;
  }
}

void appendUtf8(std::string &out, uint32_t codePoint);

// Unicode's White_Space property (Rust's char::is_whitespace).
inline bool isWhiteSpace(uint32_t codePoint) {
  switch (codePoint) {
  case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20:
  case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029:
  case 0x202F: case 0x205F: case 0x3000:
    return true;
  default:
    return codePoint >= 0x2000 && codePoint <= 0x200A;
  }
}

// Start of the character that ends at `end` in valid UTF-8 text.
inline size_t previousCharacterStart(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80)
    --start;
  return start;
}

// Length of the longest prefix of `bytes` that is well-formed UTF-8.
size_t validUtf8PrefixLength(std::string_view bytes);

inline bool isValidUtf8(std::string_view bytes) {
  return validUtf8PrefixLength(bytes) == bytes.size();
}

// Appends `bytes`, replacing each maximal ill-formed subpart by U+FFFD exactly
// as the WHATWG decoder (TextDecoder) and Rust's from_utf8_lossy do. A
// sequence cut off at the end of `bytes` counts as ill-formed.
void appendUtf8Lossy(std::string &out, std::string_view bytes);

// Number of trailing bytes (0-3) that begin a well-formed sequence still
// waiting for continuation bytes. Cutting `bytes` before them leaves the
// lossy decoding of the whole unchanged, which is what makes streaming safe.
size_t incompleteUtf8TailLength(std::string_view bytes);

} // namespace moe::tokenizer
