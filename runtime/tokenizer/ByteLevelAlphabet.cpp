#include "runtime/tokenizer/ByteLevelAlphabet.h"

#include <array>

#include "runtime/tokenizer/Utf8.h"

namespace moe::tokenizer {

namespace {

struct Alphabet {
  Alphabet() {
    byteOf.fill(-1);
    uint32_t next = 256;
    for (unsigned byte = 0; byte < 256; ++byte) {
      // Printable Latin-1 stands for itself; the rest are moved past 255.
      bool printable = (byte >= 0x21 && byte <= 0x7E) ||
                       (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE;
      codePointOf[byte] = printable ? byte : next++;
      byteOf[codePointOf[byte]] = static_cast<int16_t>(byte);
    }
  }
  std::array<uint32_t, 256> codePointOf;
  std::array<int16_t, 324> byteOf; // All code points of the alphabet are < 324.
};

const Alphabet &alphabet() {
  static const Alphabet instance;
  return instance;
}

} // namespace

uint32_t byteLevelCodePoint(unsigned char byte) {
  return alphabet().codePointOf[byte];
}

bool appendByteLevelBytes(std::string_view token, std::string &out) {
  const Alphabet &table = alphabet();
  size_t originalSize = out.size();
  for (size_t pos = 0; pos < token.size();) {
    size_t length;
    uint32_t codePoint = decodeUtf8(token, pos, length);
    if (codePoint >= table.byteOf.size() || table.byteOf[codePoint] < 0) {
      out.resize(originalSize);
      return false;
    }
    out.push_back(static_cast<char>(table.byteOf[codePoint]));
    pos += length;
  }
  return true;
}

} // namespace moe::tokenizer
