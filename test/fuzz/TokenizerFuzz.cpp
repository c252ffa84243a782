// Text through a byte-level BPE tokenizer (make_tokenizer.py): encoding
// never fails, every id decodes, and valid UTF-8 comes back unchanged.
#include "runtime/tokenizer/Tokenizer.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

namespace {

std::optional<moe::Tokenizer> tokenizer;

bool isValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    auto byte = static_cast<unsigned char>(text[i]);
    size_t length = byte < 0x80           ? 1
                    : (byte >> 5) == 0x6  ? 2
                    : (byte >> 4) == 0xE  ? 3
                    : (byte >> 3) == 0x1E ? 4
                                          : 0;
    if (length == 0 || i + length > text.size())
      return false;
    uint32_t code = length == 1 ? byte : byte & (0x7F >> length);
    for (size_t k = 1; k < length; ++k) {
      auto next = static_cast<unsigned char>(text[i + k]);
      if ((next >> 6) != 0x2)
        return false;
      code = (code << 6) | (next & 0x3F);
    }
    static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kSmallest[length] || code > 0x10FFFF ||
        (code >= 0xD800 && code <= 0xDFFF))
      return false;
    i += length;
  }
  return true;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  auto loaded = moe::Tokenizer::fromFile(MOE_FUZZ_TOKENIZER);
  if (!loaded.ok())
    std::abort();
  tokenizer.emplace(std::move(*loaded));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view text(reinterpret_cast<const char *>(data), size);
  auto ids = tokenizer->encode(text, /*addSpecialTokens=*/false);
  if (!ids.ok())
    std::abort();
  auto decoded = tokenizer->decode(*ids);
  if (!decoded.ok())
    std::abort();
  if (isValidUtf8(text) && *decoded != text)
    std::abort();
  return 0;
}
