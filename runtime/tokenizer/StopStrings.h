// Stop strings over the text a sequence generates. Fed the sequence's ids
// one at a time, it decodes them as a stream (StreamingDecoder, special
// tokens skipped, as answers are) and reports the first stop string the
// text holds as soon as the id completing it arrives: across token
// boundaries and inside multi-byte characters alike.
#pragma once

#include "runtime/tokenizer/Tokenizer.h"

#include <optional>
#include <string>
#include <vector>

namespace moe {

class StopStrings {
public:
  // The stop string found and where it begins: the answer's text is the
  // first textBytes bytes of the output's text.
  struct Match {
    std::string stop;
    size_t textBytes = 0;
  };

  // `stops` are non-empty; the tokenizer outlives this.
  StopStrings(const Tokenizer &tokenizer, std::vector<std::string> stops);

  // The next id of the sequence: the stop string beginning earliest in the
  // text once one is complete (the longest of those beginning there), or
  // nothing. Fails on an id the tokenizer does not define.
  Result<std::optional<Match>> push(int32_t id);

private:
  StreamingDecoder decoder_;
  std::vector<std::string> stops_;
  size_t longest_ = 0;
  std::string text_;
};

} // namespace moe
