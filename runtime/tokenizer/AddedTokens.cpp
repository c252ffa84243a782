#include "runtime/tokenizer/AddedTokens.h"

#include <algorithm>

#include "runtime/tokenizer/Utf8.h"

namespace moe::tokenizer {

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken> &tokens) {
  nodes_.emplace_back();
  for (const AddedToken &token : tokens) {
    if (token.content.empty())
      continue;
    int32_t node = 0;
    for (char c : token.content) {
      auto byte = static_cast<unsigned char>(c);
      auto &children = nodes_[static_cast<size_t>(node)].children;
      auto child = std::find_if(children.begin(), children.end(),
                                [&](const auto &edge) { return edge.first == byte; });
      if (child != children.end()) {
        node = child->second;
        continue;
      }
      auto next = static_cast<int32_t>(nodes_.size());
      children.emplace_back(byte, next);
      nodes_.emplace_back();
      node = next;
    }
    // A repeated content keeps its last definition.
    nodes_[static_cast<size_t>(node)].token = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(token);
    startsToken_[static_cast<unsigned char>(token.content[0])] = true;
    if (token.singleWord && !wordCharacter_) {
      // The regex crate's \w, which HF uses for this check.
      Result<Pattern> word = Pattern::fromOniguruma(
          "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]", "");
      if (word)
        wordCharacter_ = std::move(*word);
    }
  }
}

std::optional<size_t>
AddedTokenMatcher::longestMatchAt(std::string_view text, size_t pos,
                                  size_t &end) const {
  std::optional<size_t> found;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    auto byte = static_cast<unsigned char>(text[i]);
    const auto &children = nodes_[static_cast<size_t>(node)].children;
    auto child = std::find_if(children.begin(), children.end(),
                              [&](const auto &edge) { return edge.first == byte; });
    if (child == children.end())
      break;
    node = child->second;
    if (int32_t token = nodes_[static_cast<size_t>(node)].token; token >= 0) {
      found = static_cast<size_t>(token);
      end = i + 1;
    }
  }
  return found;
}

bool AddedTokenMatcher::isWordCharacterAt(std::string_view text,
                                          size_t pos) const {
  if (!wordCharacter_)
    return false;
  size_t length = utf8SequenceLength(static_cast<unsigned char>(text[pos]));
  Result<bool> word = wordCharacter_->contains(text.substr(pos, length));
  return word.ok() && *word;
}

void AddedTokenMatcher::split(std::string_view text,
                              std::vector<Segment> &segments) const {
  size_t plainBegin = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    if (!startsToken_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    size_t start = pos, stop;
    std::optional<size_t> index = longestMatchAt(text, pos, stop);
    if (!index) {
      ++pos;
      continue;
    }
    const AddedToken &token = tokens_[*index];
    pos = stop;
    if (token.singleWord) {
      bool wordBefore =
          start > 0 && isWordCharacterAt(text, previousCharacterStart(text, start));
      bool wordAfter = stop < text.size() && isWordCharacterAt(text, stop);
      // Like the Aho-Corasick scan HF uses, a rejected match is skipped whole.
      if (wordBefore || wordAfter)
        continue;
    }
    size_t length;
    if (token.leftStrip) {
      while (start > plainBegin) {
        size_t previous = previousCharacterStart(text, start);
        if (!isWhiteSpace(decodeUtf8(text, previous, length)))
          break;
        start = previous;
      }
    }
    if (token.rightStrip) {
      while (stop < text.size() && isWhiteSpace(decodeUtf8(text, stop, length)))
        stop += length;
      pos = stop;
    }
    if (start > plainBegin)
      segments.push_back({plainBegin, start, -1});
    segments.push_back({start, stop, token.id});
    plainBegin = stop;
  }
  if (plainBegin < text.size())
    segments.push_back({plainBegin, text.size(), -1});
}

} // namespace moe::tokenizer
