// Post-processors: add the special tokens a model expects around a sequence
// (typically BOS), when the caller asks for special tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/support/Result.h"
#include "runtime/tokenizer/JsonAccess.h"

namespace moe::tokenizer {

class PostProcessor {
public:
  virtual ~PostProcessor() = default;
  // Only called when special tokens are wanted.
  virtual void addSpecialTokens(std::vector<int32_t> &ids) const = 0;
};

// Supported types: TemplateProcessing, ByteLevel (a no-op on ids),
// Sequence.
Result<std::unique_ptr<PostProcessor>> parsePostProcessor(const Json &config,
                                                          std::string_view path);

} // namespace moe::tokenizer
