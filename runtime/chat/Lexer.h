// Template source to tokens, with the whitespace rules of transformers'
// chat templates (trim_blocks and lstrip_blocks on, the final newline
// dropped) and Jinja's `-` markers, as the reference @huggingface/jinja
// applies them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace moe::chat {

enum class TokenKind {
  text,            // literal text between tags
  openStatement,   // {%
  closeStatement,  // %}
  openExpression,  // {{
  closeExpression, // }}
  identifier,
  integer,
  floating,
  string,    // a literal, its escapes resolved
  symbol,    // punctuation and operators: ( ) [ ] { } , . : | = + - ~ ...
  unarySign, // + or - that cannot be binary where it stands
};

struct Token {
  TokenKind kind;
  std::string text;
  int line;
};

// Throws TemplateError naming the line of a malformed construct.
std::vector<Token> tokenize(std::string_view source);

} // namespace moe::chat
