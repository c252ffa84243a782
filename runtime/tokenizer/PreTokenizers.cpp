#include "runtime/tokenizer/PreTokenizers.h"

#include <algorithm>

#include "runtime/tokenizer/Pattern.h"

namespace moe::tokenizer {

namespace {

using Piece = PreTokenizedText::Piece;

// How Split treats the matches of its pattern (Rust's
// SplitDelimiterBehavior).
enum class SplitBehavior {
  Removed,
  Isolated,
  MergedWithPrevious,
  MergedWithNext,
  Contiguous
};

// Cuts every piece at the matches of `pattern`.
class SplitPreTokenizer final : public PreTokenizer {
public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

  Status preTokenize(PreTokenizedText &text, bool,
                     PreTokenizedText &scratch) const override {
    scratch.pieces.clear();
    for (const Piece &piece : text.pieces)
      MOE_RETURN_IF_ERROR(splitPiece(text, piece, scratch.pieces));
    text.pieces.swap(scratch.pieces);
    return Status::success();
  }

private:
  struct Segment {
    uint32_t begin, end;
    bool isMatch;
  };

  Status splitPiece(const PreTokenizedText &text, const Piece &piece,
                    std::vector<Piece> &out) const {
    // Segments alternate between the text between matches and the matches;
    // `invert` swaps their roles.
    segments_.clear();
    uint32_t previous = piece.begin;
    MOE_RETURN_IF_ERROR(pattern_.forEachMatch(
        text.piece(piece), [&](size_t begin, size_t end) {
          uint32_t matchBegin = piece.begin + static_cast<uint32_t>(begin);
          uint32_t matchEnd = piece.begin + static_cast<uint32_t>(end);
          if (matchBegin > previous)
            segments_.push_back({previous, matchBegin, invert_});
          segments_.push_back({matchBegin, matchEnd, !invert_});
          previous = matchEnd;
        }));
    if (previous < piece.end)
      segments_.push_back({previous, piece.end, invert_});

    auto emit = [&](uint32_t begin, uint32_t end) {
      if (end > begin)
        out.push_back({begin, end});
    };
    bool previousIsMatch = false;
    size_t firstOut = out.size();
    switch (behavior_) {
    case SplitBehavior::Removed:
      for (const Segment &s : segments_)
        if (!s.isMatch)
          emit(s.begin, s.end);
      break;
    case SplitBehavior::Isolated:
      for (const Segment &s : segments_)
        emit(s.begin, s.end);
      break;
    case SplitBehavior::MergedWithPrevious:
      for (const Segment &s : segments_) {
        if (s.isMatch && !previousIsMatch && out.size() > firstOut)
          out.back().end = s.end;
        else
          emit(s.begin, s.end);
        previousIsMatch = s.isMatch;
      }
      break;
    case SplitBehavior::MergedWithNext:
      // Mirror of MergedWithPrevious: walk backwards, then restore order.
      for (auto s = segments_.rbegin(); s != segments_.rend(); ++s) {
        if (s->isMatch && !previousIsMatch && out.size() > firstOut)
          out.back().begin = s->begin;
        else
          emit(s->begin, s->end);
        previousIsMatch = s->isMatch;
      }
      std::reverse(out.begin() + static_cast<ptrdiff_t>(firstOut), out.end());
      break;
    case SplitBehavior::Contiguous:
      for (size_t i = 0; i < segments_.size(); ++i) {
        const Segment &s = segments_[i];
        if (i > 0 && s.isMatch == previousIsMatch && out.size() > firstOut)
          out.back().end = s.end;
        else
          emit(s.begin, s.end);
        previousIsMatch = s.isMatch;
      }
      break;
    }
    return Status::success();
  }

  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
  // Reused across pieces; a tokenizer encodes one text at a time.
  mutable std::vector<Segment> segments_;
};

// GPT-2's byte-level step. Mapping bytes to the byte-level alphabet is left
// to the model, which works on raw bytes.
class ByteLevelPreTokenizer final : public PreTokenizer {
public:
  ByteLevelPreTokenizer(bool addPrefixSpace,
                        std::unique_ptr<SplitPreTokenizer> gpt2Split)
      : addPrefixSpace_(addPrefixSpace), gpt2Split_(std::move(gpt2Split)) {}

  Status preTokenize(PreTokenizedText &text, bool atTextStart,
                     PreTokenizedText &scratch) const override {
    if (addPrefixSpace_) {
      scratch.text.clear();
      scratch.pieces.clear();
      for (const Piece &piece : text.pieces) {
        std::string_view content = text.piece(piece);
        auto begin = static_cast<uint32_t>(scratch.text.size());
        if (!content.starts_with(' '))
          scratch.text.push_back(' ');
        scratch.text.append(content);
        scratch.pieces.push_back(
            {begin, static_cast<uint32_t>(scratch.text.size())});
      }
      std::swap(text.text, scratch.text);
      std::swap(text.pieces, scratch.pieces);
    }
    if (gpt2Split_)
      return gpt2Split_->preTokenize(text, atTextStart, scratch);
    return Status::success();
  }

private:
  bool addPrefixSpace_;
  std::unique_ptr<SplitPreTokenizer> gpt2Split_; // Null without use_regex.
};

enum class PrependScheme { Always, First, Never };

// Sentencepiece style: spaces become the replacement character ("▁"), which
// is also prepended to words.
class MetaspacePreTokenizer final : public PreTokenizer {
public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme,
                        bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}

  Status preTokenize(PreTokenizedText &text, bool atTextStart,
                     PreTokenizedText &scratch) const override {
    scratch.text.clear();
    scratch.pieces.clear();
    for (const Piece &piece : text.pieces) {
      std::string_view content = text.piece(piece);
      auto begin = static_cast<uint32_t>(scratch.text.size());
      bool prepend = scheme_ == PrependScheme::Always ||
                     (scheme_ == PrependScheme::First && atTextStart &&
                      piece.begin == 0);
      // The check runs on the replaced text, so a leading space counts.
      bool startsWithReplacement =
          content.starts_with(replacement_) || content.starts_with(' ');
      if (prepend && !startsWithReplacement)
        scratch.text.append(replacement_);
      for (char c : content) {
        if (c == ' ')
          scratch.text.append(replacement_);
        else
          scratch.text.push_back(c);
      }
      auto end = static_cast<uint32_t>(scratch.text.size());
      if (!split_) {
        scratch.pieces.push_back({begin, end});
        continue;
      }
      // Each replacement character starts a new word.
      std::string_view replaced =
          std::string_view(scratch.text).substr(begin, end - begin);
      uint32_t wordBegin = begin;
      for (size_t at = replaced.find(replacement_, 1);
           at != std::string_view::npos;
           at = replaced.find(replacement_, at + replacement_.size())) {
        scratch.pieces.push_back({wordBegin, begin + static_cast<uint32_t>(at)});
        wordBegin = begin + static_cast<uint32_t>(at);
      }
      scratch.pieces.push_back({wordBegin, end});
    }
    std::swap(text.text, scratch.text);
    std::swap(text.pieces, scratch.pieces);
    return Status::success();
  }

private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePreTokenizer final : public PreTokenizer {
public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}

  Status preTokenize(PreTokenizedText &text, bool atTextStart,
                     PreTokenizedText &scratch) const override {
    for (const auto &step : steps_)
      MOE_RETURN_IF_ERROR(step->preTokenize(text, atTextStart, scratch));
    return Status::success();
  }

private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// GPT-2's pattern, used by ByteLevel with use_regex.
constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|"
    "\\s+(?!\\S)|\\s+";

Result<SplitBehavior> parseSplitBehavior(const Json &config,
                                         std::string_view path) {
  MOE_TOKENIZER_TRY(std::string name, requireString(config, "behavior", path));
  if (name == "Removed")
    return SplitBehavior::Removed;
  if (name == "Isolated")
    return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious")
    return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext")
    return SplitBehavior::MergedWithNext;
  if (name == "Contiguous")
    return SplitBehavior::Contiguous;
  return errorAt(memberPath(path, "behavior"),
                 fmt::format("unknown split behavior \"{}\"", name));
}

Result<PrependScheme> parsePrependScheme(const Json &config,
                                         std::string_view path) {
  if (!findMember(config, "prepend_scheme")) {
    // Files written before prepend_scheme existed say add_prefix_space.
    MOE_TOKENIZER_TRY(bool addPrefixSpace,
                      optionalBool(config, "add_prefix_space", path, true));
    return addPrefixSpace ? PrependScheme::Always : PrependScheme::Never;
  }
  MOE_TOKENIZER_TRY(std::string name,
                    requireString(config, "prepend_scheme", path));
  if (name == "always")
    return PrependScheme::Always;
  if (name == "first")
    return PrependScheme::First;
  if (name == "never")
    return PrependScheme::Never;
  return errorAt(memberPath(path, "prepend_scheme"),
                 fmt::format("unknown prepend scheme \"{}\"", name));
}

} // namespace

Result<ParsedPreTokenizer> parsePreTokenizer(const Json &config,
                                             std::string_view path) {
  MOE_TOKENIZER_TRY(std::string type, componentType(config, path));
  ParsedPreTokenizer parsed;
  if (type == "Sequence") {
    MOE_TOKENIZER_TRY(const Json *list,
                      requireArray(config, "pretokenizers", path));
    std::string listPath = memberPath(path, "pretokenizers");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      std::string stepPath = elementPath(listPath, i);
      if (parsed.endsWithByteLevel)
        return errorAt(stepPath, "nothing may follow a ByteLevel "
                                 "pre-tokenizer");
      MOE_TOKENIZER_TRY(ParsedPreTokenizer step,
                        parsePreTokenizer((*list)[i], stepPath));
      parsed.endsWithByteLevel = step.endsWithByteLevel;
      steps.push_back(std::move(step.preTokenizer));
    }
    parsed.preTokenizer =
        std::make_unique<SequencePreTokenizer>(std::move(steps));
    return parsed;
  }
  if (type == "Split") {
    MOE_TOKENIZER_TRY(const Json *patternJson,
                      requireMember(config, "pattern", path));
    MOE_TOKENIZER_TRY(Pattern pattern,
                      Pattern::parse(*patternJson, memberPath(path, "pattern")));
    MOE_TOKENIZER_TRY(SplitBehavior behavior, parseSplitBehavior(config, path));
    MOE_TOKENIZER_TRY(bool invert, optionalBool(config, "invert", path, false));
    parsed.preTokenizer = std::make_unique<SplitPreTokenizer>(
        std::move(pattern), behavior, invert);
    return parsed;
  }
  if (type == "ByteLevel") {
    MOE_TOKENIZER_TRY(bool addPrefixSpace,
                      optionalBool(config, "add_prefix_space", path, true));
    MOE_TOKENIZER_TRY(bool useRegex,
                      optionalBool(config, "use_regex", path, true));
    std::unique_ptr<SplitPreTokenizer> gpt2Split;
    if (useRegex) {
      MOE_TOKENIZER_TRY(Pattern pattern,
                        Pattern::fromOniguruma(kGpt2Pattern, path));
      gpt2Split = std::make_unique<SplitPreTokenizer>(
          std::move(pattern), SplitBehavior::Isolated, false);
    }
    parsed.preTokenizer = std::make_unique<ByteLevelPreTokenizer>(
        addPrefixSpace, std::move(gpt2Split));
    parsed.endsWithByteLevel = true;
    return parsed;
  }
  if (type == "Metaspace") {
    MOE_TOKENIZER_TRY(std::string replacement,
                      optionalString(config, "replacement", path, "\u2581"));
    if (replacement.empty())
      return errorAt(memberPath(path, "replacement"), "empty replacement");
    MOE_TOKENIZER_TRY(PrependScheme scheme, parsePrependScheme(config, path));
    MOE_TOKENIZER_TRY(bool split, optionalBool(config, "split", path, true));
    parsed.preTokenizer = std::make_unique<MetaspacePreTokenizer>(
        std::move(replacement), scheme, split);
    return parsed;
  }
  return unsupportedType(path, type);
}

} // namespace moe::tokenizer
