#include "runtime/tokenizer/StopStrings.h"

#include <algorithm>

namespace moe {

StopStrings::StopStrings(const Tokenizer &tokenizer,
                         std::vector<std::string> stops)
    : decoder_(tokenizer, /*skipSpecialTokens=*/true),
      stops_(std::move(stops)) {
  for (const std::string &stop : stops_)
    longest_ = std::max(longest_, stop.size());
}

Result<std::optional<StopStrings::Match>> StopStrings::push(int32_t id) {
  Result<std::string> chunk = decoder_.push(id);
  if (!chunk.ok())
    return chunk.error();
  if (chunk->empty())
    return std::optional<Match>();
  // Only a stop string ending in the new text is new: earlier text was
  // searched when it arrived.
  size_t from =
      text_.size() >= longest_ ? text_.size() - longest_ + 1 : size_t(0);
  text_ += *chunk;
  std::optional<Match> first;
  for (const std::string &stop : stops_) {
    size_t at = text_.find(stop, from);
    if (at == std::string::npos)
      continue;
    if (!first || at < first->textBytes ||
        (at == first->textBytes && stop.size() > first->stop.size()))
      first = Match{stop, at};
  }
  return first;
}

} // namespace moe
