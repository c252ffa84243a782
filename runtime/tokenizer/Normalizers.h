// Normalizers: rewrite the text between added tokens before pre-tokenization
// (Unicode normalization forms, sentencepiece's "▁" for spaces, ...).
#pragma once

#include <memory>
#include <string>

#include "runtime/support/Result.h"
#include "runtime/tokenizer/JsonAccess.h"

namespace moe::tokenizer {

class Normalizer {
public:
  virtual ~Normalizer() = default;
  // `text` is valid UTF-8 and stays so.
  virtual Status normalize(std::string &text) const = 0;
};

// Supported types: Sequence, NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip.
Result<std::unique_ptr<Normalizer>> parseNormalizer(const Json &config,
                                                    std::string_view path);

} // namespace moe::tokenizer
