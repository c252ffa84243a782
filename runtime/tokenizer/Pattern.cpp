#include "runtime/tokenizer/Pattern.h"

#include <algorithm>
#include <vector>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "runtime/tokenizer/Utf8.h"

namespace moe::tokenizer {

namespace {

// Oniguruma's \w: what tokenizers.js also uses.
constexpr std::string_view kWordClassBody =
    "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}";
constexpr std::string_view kHexDigitClassBody = "0-9A-Fa-f";

bool isAsciiLetter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

char otherCase(char c) { return static_cast<char>(c ^ 0x20); }

bool isHexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}

Error patternError(std::string_view pattern, size_t offset,
                   std::string_view what) {
  return makeError("invalid regex \"{}\" at offset {}: {}", pattern, offset,
                   what);
}

} // namespace

Result<std::string> translateOnigurumaPattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  bool inClass = false;
  // Whether each open group (and the pattern itself, at the bottom) matches
  // ASCII letters case-insensitively.
  std::vector<bool> caseless{false};
  size_t i = 0;
  auto copyCharacter = [&] {
    size_t length = utf8SequenceLength(static_cast<unsigned char>(pattern[i]));
    out.append(pattern.substr(i, length));
    i += length;
  };
  while (i < pattern.size()) {
    char c = pattern[i];
    if (c == '\\') {
      if (i + 1 == pattern.size())
        return patternError(pattern, i, "trailing backslash");
      char escaped = pattern[i + 1];
      switch (escaped) {
      case 's':
        out += "\\p{White_Space}";
        i += 2;
        continue;
      case 'S':
        out += "\\P{White_Space}";
        i += 2;
        continue;
      case 'h':
        out += inClass ? std::string(kHexDigitClassBody)
                       : fmt::format("[{}]", kHexDigitClassBody);
        i += 2;
        continue;
      case 'w':
        out += inClass ? std::string(kWordClassBody)
                       : fmt::format("[{}]", kWordClassBody);
        i += 2;
        continue;
      case 'H':
      case 'W':
        if (inClass)
          return patternError(pattern, i,
                              "\\H and \\W inside a character class are "
                              "not supported");
        out += fmt::format("[^{}]", escaped == 'H' ? kHexDigitClassBody
                                                   : kWordClassBody);
        i += 2;
        continue;
      case 'u': {
        std::string_view digits = pattern.substr(i + 2, 4);
        if (digits.size() != 4 || !std::all_of(digits.begin(), digits.end(),
                                               isHexDigit))
          return patternError(pattern, i, "\\u needs four hex digits");
        out += fmt::format("\\x{{{}}}", digits);
        i += 6;
        continue;
      }
      case 'p':
      case 'P':
      case 'x':
        if (i + 2 < pattern.size() && pattern[i + 2] == '{') {
          size_t close = pattern.find('}', i + 2);
          if (close == std::string_view::npos)
            return patternError(pattern, i, "unterminated \\p{...} or \\x{...}");
          out.append(pattern.substr(i, close + 1 - i));
          i = close + 1;
          continue;
        }
        break;
      default:
        break;
      }
      out.push_back('\\');
      ++i;
      copyCharacter();
      continue;
    }

    if (inClass) {
      if (c == ']') {
        inClass = false;
        out.push_back(']');
        ++i;
        continue;
      }
      if (c == '[') {
        size_t close = pattern.find(":]", i + 2);
        if (i + 1 < pattern.size() && pattern[i + 1] == ':' &&
            close != std::string_view::npos) {
          out.append(pattern.substr(i, close + 2 - i)); // [:alpha:]
          i = close + 2;
          continue;
        }
        return patternError(pattern, i,
                            "nested character classes are not supported");
      }
      if (caseless.back() && isAsciiLetter(c)) {
        bool isRange = i + 2 < pattern.size() && pattern[i + 1] == '-' &&
                       isAsciiLetter(pattern[i + 2]) &&
                       ((c >= 'a') == (pattern[i + 2] >= 'a'));
        if (isRange) {
          char last = pattern[i + 2];
          out += fmt::format("{}-{}{}-{}", c, last, otherCase(c),
                             otherCase(last));
          i += 3;
        } else {
          out.push_back(c);
          out.push_back(otherCase(c));
          ++i;
        }
        continue;
      }
      copyCharacter();
      continue;
    }

    switch (c) {
    case '[':
      inClass = true;
      out.push_back('[');
      ++i;
      if (i < pattern.size() && pattern[i] == '^') {
        out.push_back('^');
        ++i;
      }
      if (i < pattern.size() && pattern[i] == ']') {
        out += "\\]";
        ++i;
      }
      continue;
    case '(': {
      std::string_view rest = pattern.substr(i);
      if (rest.starts_with("(?i:") || rest.starts_with("(?-i:")) {
        caseless.push_back(rest[2] == 'i');
        out += "(?:";
        i += rest[2] == 'i' ? 4 : 5;
      } else if (rest.starts_with("(?i)") || rest.starts_with("(?-i)")) {
        caseless.back() = rest[2] == 'i';
        i += rest[2] == 'i' ? 4 : 5;
      } else if (rest.starts_with("(?") && !rest.starts_with("(?:") &&
                 !rest.starts_with("(?=") && !rest.starts_with("(?!") &&
                 !rest.starts_with("(?<") && !rest.starts_with("(?>")) {
        return patternError(pattern, i, "unsupported group option");
      } else {
        caseless.push_back(caseless.back());
        out.push_back('(');
        ++i;
      }
      continue;
    }
    case ')':
      if (caseless.size() > 1)
        caseless.pop_back();
      out.push_back(')');
      ++i;
      continue;
    default:
      if (caseless.back() && isAsciiLetter(c)) {
        out += fmt::format("[{}{}]", c, otherCase(c));
        ++i;
        continue;
      }
      copyCharacter();
      continue;
    }
  }
  if (inClass)
    return patternError(pattern, pattern.size(), "unterminated character class");
  return out;
}

struct Pattern::CompiledRegex {
  CompiledRegex(pcre2_code *compiled, bool checkSubjectUtf)
      : code(compiled), checkUtf(checkSubjectUtf) {}
  ~CompiledRegex() { pcre2_code_free(code); }
  CompiledRegex(const CompiledRegex &) = delete;
  CompiledRegex &operator=(const CompiledRegex &) = delete;

  pcre2_code *code;
  bool checkUtf;
};

namespace {

// Per-thread matching state: the compiled patterns are shared and immutable,
// the match data and JIT stack are not.
struct MatchScratch {
  MatchScratch() {
    matchData = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    // The tokenizers' patterns never backtrack deeply; a large stack and
    // match limit keep pathological inputs from failing mid-text.
    jitStack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(context, nullptr, jitStack);
    pcre2_set_match_limit(context, 0xFFFFFFFFu);
  }
  ~MatchScratch() {
    pcre2_match_data_free(matchData);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(jitStack);
  }
  MatchScratch(const MatchScratch &) = delete;
  MatchScratch &operator=(const MatchScratch &) = delete;

  pcre2_match_data *matchData;
  pcre2_match_context *context;
  pcre2_jit_stack *jitStack;
};

MatchScratch &matchScratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

std::string pcre2Message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char *>(buffer);
}

} // namespace

Result<Pattern> Pattern::fromOniguruma(std::string_view pattern,
                                       std::string_view path,
                                       bool subjectsMayBeInvalidUtf8) {
  Result<std::string> translated = translateOnigurumaPattern(pattern);
  if (!translated)
    return translated.error().withContext(std::string(path));

  pcre2_compile_context *context = pcre2_compile_context_create(nullptr);
  // Oniguruma: '.' excludes only \n, and ^/$ are always line anchors.
  pcre2_set_newline(context, PCRE2_NEWLINE_LF);
  uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
  if (subjectsMayBeInvalidUtf8)
    options |= PCRE2_MATCH_INVALID_UTF;
  int errorCode;
  PCRE2_SIZE errorOffset;
  pcre2_code *code = pcre2_compile(
      reinterpret_cast<PCRE2_SPTR>(translated->data()), translated->size(),
      options, &errorCode, &errorOffset, context);
  pcre2_compile_context_free(context);
  if (!code)
    return errorAt(path, fmt::format("invalid regex \"{}\": {}", pattern,
                                     pcre2Message(errorCode)));
  // Without JIT (unsupported CPU) pcre2_match interprets: slower, same result.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return Pattern("", std::make_shared<const CompiledRegex>(
                         code, subjectsMayBeInvalidUtf8));
}

Pattern Pattern::fromLiteral(std::string literal) {
  return Pattern(std::move(literal), nullptr);
}

Result<Pattern> Pattern::parse(const Json &pattern, std::string_view path,
                               bool subjectsMayBeInvalidUtf8) {
  if (!pattern.is_object() || pattern.size() != 1)
    return errorAt(path, "expected {\"String\": ...} or {\"Regex\": ...}");
  if (const Json *literal = findMember(pattern, "String")) {
    if (!literal->is_string())
      return errorAt(memberPath(path, "String"), "expected a string");
    std::string text = literal->get<std::string>();
    if (text.empty())
      return errorAt(memberPath(path, "String"), "empty pattern");
    return fromLiteral(std::move(text));
  }
  if (const Json *regex = findMember(pattern, "Regex")) {
    if (!regex->is_string())
      return errorAt(memberPath(path, "Regex"), "expected a string");
    return fromOniguruma(regex->get<std::string>(), memberPath(path, "Regex"),
                         subjectsMayBeInvalidUtf8);
  }
  return errorAt(path, "expected {\"String\": ...} or {\"Regex\": ...}");
}

size_t Pattern::nextCharacter(std::string_view subject, size_t pos) {
  if (pos >= subject.size())
    return pos + 1;
  return pos + utf8SequenceLength(static_cast<unsigned char>(subject[pos]));
}

Result<bool> Pattern::find(std::string_view subject, size_t from,
                           size_t &begin, size_t &end) const {
  if (!regex_) {
    size_t at = subject.find(literal_, from);
    if (at == std::string_view::npos)
      return false;
    begin = at;
    end = at + literal_.size();
    return true;
  }
  MatchScratch &scratch = matchScratch();
  // PCRE2 rejects a null subject pointer even for an empty subject.
  PCRE2_SPTR data = reinterpret_cast<PCRE2_SPTR>(
      subject.empty() ? "" : subject.data());
  int rc = pcre2_match(regex_->code, data, subject.size(), from,
                       regex_->checkUtf ? 0 : PCRE2_NO_UTF_CHECK,
                       scratch.matchData, scratch.context);
  if (rc == PCRE2_ERROR_NOMATCH)
    return false;
  if (rc < 0)
    return makeError("regex match failed: {}", pcre2Message(rc));
  PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(scratch.matchData);
  begin = ovector[0];
  end = ovector[1];
  return true;
}

Status Pattern::replaceAll(std::string_view subject,
                           std::string_view replacement,
                           std::string &out) const {
  size_t copied = 0;
  Status status = forEachMatch(subject, [&](size_t begin, size_t end) {
    out.append(subject.substr(copied, begin - copied));
    out.append(replacement);
    copied = end;
  });
  if (!status.ok())
    return status;
  out.append(subject.substr(copied));
  return Status::success();
}

} // namespace moe::tokenizer
