// Decoders: turn token strings back into text. They work on raw bytes, and
// the tokenizer repairs ill-formed UTF-8 once at the end; that is what keeps
// streamed output identical to decoding all ids at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "runtime/support/Result.h"
#include "runtime/tokenizer/JsonAccess.h"

namespace moe::tokenizer {

struct DecodingToken {
  std::string bytes;
  bool isAddedToken; // Added tokens pass ByteLevel decoding unchanged.
};

class Decoder {
public:
  virtual ~Decoder() = default;
  virtual Status decodeChain(std::vector<DecodingToken> &tokens) const = 0;
};

// Supported types: Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip,
// Metaspace.
Result<std::unique_ptr<Decoder>> parseDecoder(const Json &config,
                                              std::string_view path);

} // namespace moe::tokenizer
