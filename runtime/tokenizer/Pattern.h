// Patterns of Split pre-tokenizers, Replace normalizers and Replace decoders:
// {"String": "..."} matches literally, {"Regex": "..."} is an Oniguruma
// pattern (what the Rust tokenizers crate compiles) run with PCRE2.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "runtime/support/Result.h"
#include "runtime/tokenizer/JsonAccess.h"

namespace moe::tokenizer {

// Rewrites the Oniguruma constructs whose PCRE2 meaning differs: \s and \S
// (Oniguruma: White_Space, which includes U+0085), \h (hex digit), \w
// (Alphabetic, marks, decimal digits, connector punctuation) and inline
// case-insensitive groups, which fold ASCII letters only, as tokenizers.js
// does. Nested character classes are rejected.
Result<std::string> translateOnigurumaPattern(std::string_view pattern);

class Pattern {
public:
  // Parses {"String": s} or {"Regex": r}. `subjectsMayBeInvalidUtf8` is for
  // decoders, whose tokens may hold raw bytes; they then never match inside
  // an ill-formed sequence.
  static Result<Pattern> parse(const Json &pattern, std::string_view path,
                               bool subjectsMayBeInvalidUtf8 = false);
  static Result<Pattern> fromOniguruma(std::string_view pattern,
                                       std::string_view path,
                                       bool subjectsMayBeInvalidUtf8 = false);
  static Pattern fromLiteral(std::string literal);

  // Calls onMatch(begin, end) for every match, left to right; after an empty
  // match the search resumes one character later, like String.matchAll.
  template <typename Callback>
  Status forEachMatch(std::string_view subject, Callback &&onMatch) const {
    size_t from = 0;
    while (from <= subject.size()) {
      size_t begin, end;
      Result<bool> found = find(subject, from, begin, end);
      if (!found)
        return found.error();
      if (!*found)
        break;
      onMatch(begin, end);
      from = end > begin ? end : nextCharacter(subject, end);
    }
    return Status::success();
  }

  // Appends `subject` with every match replaced by `replacement`.
  Status replaceAll(std::string_view subject, std::string_view replacement,
                    std::string &out) const;

  // Whether the pattern matches anywhere in `subject`.
  Result<bool> contains(std::string_view subject) const {
    size_t begin, end;
    return find(subject, 0, begin, end);
  }

  bool isLiteral() const { return !regex_; }

private:
  struct CompiledRegex;

  Pattern(std::string literal, std::shared_ptr<const CompiledRegex> regex)
      : literal_(std::move(literal)), regex_(std::move(regex)) {}

  // Finds the first match at or after `from`; false when there is none.
  Result<bool> find(std::string_view subject, size_t from, size_t &begin,
                    size_t &end) const;
  static size_t nextCharacter(std::string_view subject, size_t pos);

  std::string literal_;
  std::shared_ptr<const CompiledRegex> regex_; // Null for literal patterns.
};

} // namespace moe::tokenizer
