// Tokens to statements, by Jinja's grammar as chat templates use it. The
// names of filters and tests are checked here, so that a template using one
// this library does not implement fails when it is loaded, not later on
// some conversation.
#pragma once

#include "runtime/chat/Ast.h"
#include "runtime/chat/Lexer.h"

#include <vector>

namespace moe::chat {

// Throws TemplateError naming the line and the construct it cannot read.
std::vector<Stmt> parse(const std::vector<Token> &tokens);

} // namespace moe::chat
