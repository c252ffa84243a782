#include "runtime/chat/Lexer.h"

#include "runtime/chat/TemplateError.h"
#include "runtime/chat/Unicode.h"

#include <array>
#include <fmt/format.h>

namespace moe::chat {
namespace {

// The source as it is tokenized, each byte with the line it came from, so
// that whitespace removed before tokenizing leaves line numbers right.
struct Source {
  std::string text;
  std::vector<int> lines;

  // The source without the bytes marked in `removed`.
  Source without(const std::vector<bool> &removed) const {
    Source kept;
    for (size_t i = 0; i < text.size(); ++i)
      if (!removed[i]) {
        kept.text.push_back(text[i]);
        kept.lines.push_back(lines[i]);
      }
    return kept;
  }
};

bool isAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
         c == '\f';
}

// The length of the whitespace (JavaScript's \s) starting at `at`.
size_t spaceRun(std::string_view text, size_t at) {
  size_t end = at;
  while (end < text.size()) {
    if (isAsciiSpace(text[end])) {
      ++end;
      continue;
    }
    if (static_cast<unsigned char>(text[end]) < 0x80)
      break;
    size_t length = 1;
    while (end + length < text.size() &&
           (static_cast<unsigned char>(text[end + length]) & 0xC0) == 0x80)
      ++length;
    std::vector<char32_t> point = codePoints(text.substr(end, length));
    if (point.size() != 1 || !isJsSpace(point[0]))
      break;
    end += length;
  }
  return end - at;
}

// Whitespace handling before tokenizing, as transformers configures Jinja:
// the final newline dropped (keep_trailing_newline off), spaces and tabs
// before a block tag at the start of a line removed (lstrip_blocks), the
// newline after a block tag removed (trim_blocks), and the `{% generation %}`
// markers of training templates dropped.
Source prepared(std::string_view template_) {
  Source source;
  int line = 1;
  for (char c : template_) {
    source.text.push_back(c);
    source.lines.push_back(line);
    line += c == '\n';
  }
  if (!source.text.empty() && source.text.back() == '\n') {
    source.text.pop_back();
    source.lines.pop_back();
  }

  const std::string &text = source.text;
  std::vector<bool> removed(text.size(), false);
  for (size_t lineStart = 0; lineStart < text.size();) {
    size_t at = lineStart;
    while (at < text.size() && (text[at] == ' ' || text[at] == '\t'))
      ++at;
    if (at + 1 < text.size() && text[at] == '{' &&
        (text[at + 1] == '%' || text[at + 1] == '#' || text[at + 1] == '-'))
      std::fill(removed.begin() + long(lineStart), removed.begin() + long(at),
                true);
    size_t next = text.find_first_of("\n\r", at);
    if (next == std::string::npos)
      break;
    lineStart = next + 1;
  }
  source = source.without(removed);

  removed.assign(source.text.size(), false);
  for (size_t at = 0; at + 2 < source.text.size(); ++at) {
    char c = source.text[at];
    if ((c == '%' || c == '#' || c == '-') && source.text[at + 1] == '}' &&
        source.text[at + 2] == '\n')
      removed[at + 2] = true;
  }
  source = source.without(removed);

  removed.assign(source.text.size(), false);
  std::string_view view = source.text;
  for (size_t open = view.find("{%"); open != std::string_view::npos;
       open = view.find("{%", open + 2)) {
    size_t at = open + 2;
    bool stripBefore = at < view.size() && view[at] == '-';
    at += stripBefore;
    at += spaceRun(view, at);
    if (view.substr(at, 3) == "end")
      at += 3;
    if (view.substr(at, 10) != "generation")
      continue;
    at += 10;
    at += spaceRun(view, at);
    bool stripAfter = at < view.size() && view[at] == '-';
    at += stripAfter;
    if (view.substr(at, 2) != "%}")
      continue;
    size_t before = open;
    while (before > 0 && isAsciiSpace(view[before - 1]))
      --before;
    size_t end = at + 2, after = end + spaceRun(view, end);
    std::fill(removed.begin() + long(stripBefore ? before : open),
              removed.begin() + long(stripAfter ? after : end), true);
  }
  return source.without(removed);
}

// Longest first where one symbol starts another ("**" before "*").
constexpr std::array kSymbols = {
    "{%", "%}", "{{", "}}", "(",  ")",  "{",  "}",  "[", "]",
    ",",  ".",  ":",  "|",  "<=", ">=", "==", "!=", "<", ">",
    "+",  "-",  "~",  "**", "*",  "//", "/",  "%",  "="};

bool isWordChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '_';
}

bool isDigit(char c) { return c >= '0' && c <= '9'; }

class Lexer {
public:
  explicit Lexer(Source source) : source_(std::move(source)) {}

  std::vector<Token> run() {
    const std::string &text = source_.text;
    while (at_ < text.size()) {
      if (inText_) {
        size_t end = at_;
        while (end < text.size() &&
               !(text[end] == '{' && end + 1 < text.size() &&
                 (text[end + 1] == '%' || text[end + 1] == '{' ||
                  text[end + 1] == '#')))
          ++end;
        if (end > at_) {
          push(TokenKind::text, text.substr(at_, end - at_));
          at_ = end;
        }
        inText_ = false;
        continue;
      }
      if (starts("{#")) {
        comment();
        continue;
      }
      if (starts("{%-") || starts("{{-")) {
        trimLastText();
        bool statement = text[at_ + 1] == '%';
        push(statement ? TokenKind::openStatement : TokenKind::openExpression,
             statement ? "{%" : "{{");
        braceDepth_ = 0;
        at_ += 3;
        continue;
      }
      at_ += spaceRun(text, at_);
      if (at_ >= text.size())
        break;
      if (starts("-%}") || starts("-}}")) {
        bool statement = text[at_ + 1] == '%';
        push(statement ? TokenKind::closeStatement : TokenKind::closeExpression,
             statement ? "%}" : "}}");
        at_ += 3;
        at_ += spaceRun(text, at_);
        inText_ = true;
        continue;
      }
      char c = text[at_];
      if ((c == '-' || c == '+') && !followsOperand()) {
        unarySign();
        continue;
      }
      if (symbol())
        continue;
      if (c == '\'' || c == '"') {
        stringLiteral(c);
        continue;
      }
      if (isDigit(c)) {
        number("");
        continue;
      }
      if (isWordChar(c)) {
        size_t end = at_;
        while (end < text.size() && isWordChar(text[end]))
          ++end;
        push(TokenKind::identifier, text.substr(at_, end - at_));
        at_ = end;
        continue;
      }
      fail(line(), fmt::format("unexpected character '{}'", c));
    }
    return std::move(tokens_);
  }

private:
  int line() const {
    return source_.lines.empty()
               ? 1
               : source_.lines[std::min(at_, source_.lines.size() - 1)];
  }
  bool starts(std::string_view prefix) const {
    return std::string_view(source_.text).substr(at_, prefix.size()) == prefix;
  }
  void push(TokenKind kind, std::string text) {
    tokens_.push_back({kind, std::move(text), line()});
    afterComment_ = false;
  }

  // A `-` marker strips the text right before its tag; a comment there
  // leaves none to strip, and the text before the comment stays.
  void trimLastText() {
    if (afterComment_ || tokens_.empty() ||
        tokens_.back().kind != TokenKind::text)
      return;
    tokens_.back().text = jsTrimmedEnd(tokens_.back().text);
    if (tokens_.back().text.empty())
      tokens_.pop_back();
  }

  void comment() {
    int startLine = line();
    at_ += 2;
    if (starts("-")) {
      trimLastText();
      ++at_;
    }
    size_t end = source_.text.find("#}", at_);
    if (end == std::string::npos)
      fail(startLine, "comment {# without its closing #}");
    bool stripAfter = end > at_ && source_.text[end - 1] == '-';
    at_ = end + 2;
    if (stripAfter)
      at_ += spaceRun(source_.text, at_);
    inText_ = true;
    afterComment_ = true;
  }

  // Whether a + or - here is binary: it follows an operand.
  bool followsOperand() const {
    if (tokens_.empty())
      return false;
    const Token &last = tokens_.back();
    return last.kind == TokenKind::identifier ||
           last.kind == TokenKind::integer ||
           last.kind == TokenKind::floating || last.kind == TokenKind::string ||
           (last.kind == TokenKind::symbol &&
            (last.text == ")" || last.text == "]"));
  }

  void unarySign() {
    if (tokens_.empty() || tokens_.back().kind == TokenKind::text)
      fail(line(), fmt::format("unexpected '{}'", source_.text[at_]));
    std::string sign(1, source_.text[at_++]);
    if (at_ < source_.text.size() && isDigit(source_.text[at_]))
      number(sign);
    else
      push(TokenKind::unarySign, sign);
  }

  void number(const std::string &sign) {
    const std::string &text = source_.text;
    size_t end = at_;
    while (end < text.size() && isDigit(text[end]))
      ++end;
    bool fraction = end + 1 < text.size() && text[end] == '.' &&
                    isDigit(text[end + 1]) &&
                    !(sign.empty() && !tokens_.empty() &&
                      tokens_.back().kind == TokenKind::symbol &&
                      tokens_.back().text == ".");
    if (fraction)
      for (++end; end < text.size() && isDigit(text[end]);)
        ++end;
    push(fraction ? TokenKind::floating : TokenKind::integer,
         sign + text.substr(at_, end - at_));
    at_ = end;
  }

  bool symbol() {
    for (std::string_view symbol : kSymbols) {
      if (symbol == "}}" && braceDepth_ > 0)
        continue;
      if (!starts(symbol))
        continue;
      if (symbol == "%}" || symbol == "}}") {
        push(symbol == "%}" ? TokenKind::closeStatement
                            : TokenKind::closeExpression,
             std::string(symbol));
        inText_ = true;
      } else if (symbol == "{%" || symbol == "{{") {
        push(symbol == "{%" ? TokenKind::openStatement
                            : TokenKind::openExpression,
             std::string(symbol));
        braceDepth_ = 0;
      } else {
        push(TokenKind::symbol, std::string(symbol));
        braceDepth_ += symbol == "{" ? 1 : symbol == "}" ? -1 : 0;
      }
      at_ += symbol.size();
      return true;
    }
    return false;
  }

  void stringLiteral(char quote) {
    const std::string &text = source_.text;
    int startLine = line();
    std::string value;
    for (++at_;; ++at_) {
      if (at_ >= text.size())
        fail(startLine, "string literal without its closing quote");
      char c = text[at_];
      if (c == quote)
        break;
      if (c != '\\') {
        value.push_back(c);
        continue;
      }
      if (++at_ >= text.size())
        fail(startLine, "string literal without its closing quote");
      char escaped = text[at_];
      if (escaped == 'x' || escaped == 'u') {
        size_t digits = escaped == 'x' ? 2 : 4;
        std::string hex = text.substr(at_ + 1, digits);
        if (hex.size() != digits ||
            hex.find_first_not_of("0123456789abcdefABCDEF") !=
                std::string::npos)
          fail(line(), fmt::format("invalid escape \\{}{}", escaped, hex));
        appendUtf8(value, char32_t(std::stoul(hex, nullptr, 16)));
        at_ += digits;
        continue;
      }
      static constexpr std::string_view kFrom = "ntrbfv'\"\\";
      static constexpr std::string_view kTo = "\n\t\r\b\f\v'\"\\";
      size_t which = kFrom.find(escaped);
      if (which == std::string_view::npos)
        fail(line(),
             fmt::format("unknown escape \\{} in a string literal", escaped));
      value.push_back(kTo[which]);
    }
    ++at_;
    tokens_.push_back({TokenKind::string, std::move(value), startLine});
  }

  Source source_;
  size_t at_ = 0;
  bool inText_ = true;
  bool afterComment_ = false; // no token since the last comment
  int braceDepth_ = 0;
  std::vector<Token> tokens_;
};

} // namespace

std::vector<Token> tokenize(std::string_view source) {
  return Lexer(prepared(source)).run();
}

} // namespace moe::chat
