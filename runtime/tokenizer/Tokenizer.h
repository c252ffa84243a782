// HuggingFace tokenizer.json in the runtime: text to token ids and back.
//
// Supports the BPE tokenizers of the models this project runs: byte-level
// ones with regex pre-tokenizers (DeepSeek-V3, Qwen3, GPT-OSS) and
// sentencepiece-style ones with byte fallback (Mistral, Mixtral, Llama 2).
// Results match HF's tokenizers.js exactly on real tokenizer files (the
// tokenizer-reference test). Where tokenizers.js and HF's Rust library
// differ on a component those files do not use, this follows Rust.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/support/Result.h"

namespace moe {

class Tokenizer {
public:
  static Result<Tokenizer> fromFile(const std::string &path);
  // `sourceName` starts every error message (normally the file's path).
  static Result<Tokenizer> fromJson(std::string_view json,
                                    std::string_view sourceName);

  Tokenizer(Tokenizer &&) noexcept;
  Tokenizer &operator=(Tokenizer &&) noexcept;
  ~Tokenizer();

  // Token ids of `text`. Ill-formed UTF-8 reads as U+FFFD (one per maximal
  // ill-formed subpart). `addSpecialTokens` runs the post-processor, which
  // typically prepends BOS. Fails only if the regex engine does. Safe to
  // call from several threads; calls take turns on the shared word cache.
  Result<std::vector<int32_t>> encode(std::string_view text,
                                      bool addSpecialTokens = true) const;

  // Text of `ids`; ill-formed UTF-8 produced by byte tokens becomes U+FFFD.
  // Fails on an id the tokenizer does not define.
  Result<std::string> decode(std::span<const int32_t> ids,
                             bool skipSpecialTokens = false) const;

  // One past the largest defined token id.
  size_t vocabularySize() const;
  // The id of a token as spelled in tokenizer.json (added tokens first).
  std::optional<int32_t> tokenToId(std::string_view token) const;
  bool isSpecialToken(int32_t id) const;

private:
  friend class StreamingDecoder;
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

// Decodes ids as they are generated. Everything push() and finish() return,
// concatenated, equals decode() of all ids: bytes of a character split over
// several tokens are held back until the character is complete, so no chunk
// ever ends in broken UTF-8. The tokenizer must outlive the decoder.
class StreamingDecoder {
public:
  explicit StreamingDecoder(const Tokenizer &tokenizer,
                            bool skipSpecialTokens = false);

  // The text that `id` completes (often empty). Fails on an undefined id.
  Result<std::string> push(int32_t id);
  // Releases held-back bytes (an unfinished character becomes U+FFFD) and
  // starts over for a new sequence.
  std::string finish();

private:
  const Tokenizer *tokenizer_;
  bool skipSpecialTokens_;
  // Ids whose text was emitted last (the context that decoders such as
  // Strip or Metaspace need to treat the next ids as mid-text), followed by
  // ids not emitted yet.
  std::vector<int32_t> window_;
  size_t contextLength_ = 0;
  std::string contextBytes_; // Decoding of the context ids alone.
  std::string pendingBytes_; // Emitted-to-be bytes ending mid-character.
};

} // namespace moe
