#include "runtime/tokenizer/Utf8.h"

#include <cstring>

namespace moe::tokenizer {

namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

// Bounds of the first continuation byte after `lead` (Unicode Table 3-7);
// later continuation bytes are always 0x80-0xBF. Returns false for bytes
// that cannot start a multi-byte sequence.
bool continuationRange(unsigned char lead, unsigned char &lower,
                       unsigned char &upper, size_t &needed) {
  lower = 0x80;
  upper = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    needed = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    needed = 2;
    if (lead == 0xE0)
      lower = 0xA0;
    else if (lead == 0xED)
      upper = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    needed = 3;
    if (lead == 0xF0)
      lower = 0x90;
    else if (lead == 0xF4)
      upper = 0x8F;
  } else {
    return false;
  }
  return true;
}

// Outcome of reading one sequence at `pos`: `length` bytes were consumed;
// `valid` tells whether they form a character; `truncated` whether the input
// ended while the sequence was still well-formed.
struct SequenceScan {
  size_t length;
  bool valid;
  bool truncated;
};

SequenceScan scanSequence(std::string_view bytes, size_t pos) {
  auto lead = static_cast<unsigned char>(bytes[pos]);
  if (lead < 0x80)
    return {1, true, false};
  unsigned char lower, upper;
  size_t needed;
  if (!continuationRange(lead, lower, upper, needed))
    return {1, false, false};
  size_t length = 1;
  for (size_t i = 0; i < needed; ++i) {
    if (pos + length >= bytes.size())
      return {length, false, true};
    auto next = static_cast<unsigned char>(bytes[pos + length]);
    if (next < lower || next > upper)
      return {length, false, false};
    lower = 0x80;
    upper = 0xBF;
    ++length;
  }
  return {length, true, false};
}

} // namespace

void appendUtf8(std::string &out, uint32_t codePoint) {
  if (codePoint < 0x80) {
    out.push_back(static_cast<char>(codePoint));
  } else if (codePoint < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (codePoint >> 6)));
    out.push_back(static_cast<char>(0x80 | (codePoint & 0x3F)));
  } else if (codePoint < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (codePoint >> 12)));
    out.push_back(static_cast<char>(0x80 | ((codePoint >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (codePoint & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (codePoint >> 18)));
    out.push_back(static_cast<char>(0x80 | ((codePoint >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((codePoint >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (codePoint & 0x3F)));
  }
}

size_t validUtf8PrefixLength(std::string_view bytes) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    // Most text is ASCII: skip it eight bytes at a time.
    while (pos + 8 <= bytes.size()) {
      uint64_t word;
      std::memcpy(&word, bytes.data() + pos, 8);
      if (word & 0x8080808080808080ull)
        break;
      pos += 8;
    }
    if (pos == bytes.size())
      break;
    SequenceScan scan = scanSequence(bytes, pos);
    if (!scan.valid)
      return pos;
    pos += scan.length;
  }
  return pos;
}

void appendUtf8Lossy(std::string &out, std::string_view bytes) {
  size_t pos = validUtf8PrefixLength(bytes);
  out.append(bytes.substr(0, pos));
  while (pos < bytes.size()) {
    SequenceScan scan = scanSequence(bytes, pos);
    if (scan.valid)
      out.append(bytes.substr(pos, scan.length));
    else
      out.append(kReplacementCharacter);
    pos += scan.length;
  }
}

size_t incompleteUtf8TailLength(std::string_view bytes) {
  size_t maxTail = bytes.size() < 3 ? bytes.size() : 3;
  for (size_t tail = 1; tail <= maxTail; ++tail) {
    size_t pos = bytes.size() - tail;
    auto byte = static_cast<unsigned char>(bytes[pos]);
    if (byte >= 0x80 && byte < 0xC0)
      continue; // A continuation byte: the lead, if any, is further back.
    SequenceScan scan = scanSequence(bytes, pos);
    return scan.truncated ? tail : 0;
  }
  return 0;
}

} // namespace moe::tokenizer
