// Added tokens (special tokens such as "<|im_start|>" and extra words) are
// cut out of the text before normalization and pre-tokenization, as the HF
// AddedVocabulary does: leftmost-longest matches, honoring single_word,
// lstrip and rstrip.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/tokenizer/Pattern.h"

namespace moe::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool singleWord = false; // Only matches as a whole word.
  bool leftStrip = false;  // Swallows the whitespace before it.
  bool rightStrip = false; // Swallows the whitespace after it.
  bool normalized = false; // Matched in normalized rather than raw text.
  bool special = false;    // Dropped by skipSpecialTokens.
};

class AddedTokenMatcher {
public:
  // A run of plain text (tokenId < 0) or an added token.
  struct Segment {
    size_t begin, end;
    int32_t tokenId;
  };

  // `tokens` are matched by `content` (already normalized where needed).
  explicit AddedTokenMatcher(const std::vector<AddedToken> &tokens);

  bool empty() const { return tokens_.empty(); }

  // Appends the segments covering `text`, in order.
  void split(std::string_view text, std::vector<Segment> &segments) const;

private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t token = -1; // Index into tokens_ of the token ending here.
  };

  // The longest token starting at `pos`, as an index into tokens_.
  std::optional<size_t> longestMatchAt(std::string_view text, size_t pos,
                                       size_t &end) const;
  bool isWordCharacterAt(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  std::array<bool, 256> startsToken_{};
  std::optional<Pattern> wordCharacter_; // Built when a token is single_word.
};

} // namespace moe::tokenizer
