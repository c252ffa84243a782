// Pre-tokenizers: cut normalized text into the words the model encodes one
// at a time (regex splits, sentencepiece's metaspace, GPT-2's byte level).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/support/Result.h"
#include "runtime/tokenizer/JsonAccess.h"

namespace moe::tokenizer {

// Text cut into pieces. Pieces are byte ranges of `text`, in order; bytes
// between pieces were dropped. Steps that rewrite characters build a new
// `text`, steps that only cut rewrite `pieces`.
struct PreTokenizedText {
  struct Piece {
    uint32_t begin, end;
  };
  std::string text;
  std::vector<Piece> pieces;

  std::string_view piece(const Piece &p) const {
    return std::string_view(text).substr(p.begin, p.end - p.begin);
  }
};

class PreTokenizer {
public:
  virtual ~PreTokenizer() = default;
  // `atTextStart` tells whether the text begins the input (sentencepiece
  // prepends "▁" only there with prepend_scheme "first").
  virtual Status preTokenize(PreTokenizedText &text, bool atTextStart,
                             PreTokenizedText &scratch) const = 0;
};

struct ParsedPreTokenizer {
  std::unique_ptr<PreTokenizer> preTokenizer;
  // The pipeline ends with ByteLevel: the model then sees raw bytes, each
  // standing for its byte-level character.
  bool endsWithByteLevel = false;
};

// Supported types: Sequence, Split, ByteLevel, Metaspace. ByteLevel must be
// the last step, since the runtime keeps text as raw bytes.
Result<ParsedPreTokenizer> parsePreTokenizer(const Json &config,
                                             std::string_view path);

} // namespace moe::tokenizer
