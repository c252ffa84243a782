// Jinja's filters as chat templates use them (`value | trim`,
// `tools | tojson(indent=4)`, `messages | selectattr("role", "equalto",
// "user") | list`), with the meaning transformers' Jinja gives them.
#pragma once

#include "runtime/chat/Value.h"

#include <string_view>

namespace moe::chat {

bool isFilter(std::string_view name);
// Throws TemplateError at `line` when the filter cannot apply.
Value applyFilter(std::string_view name, const Value &operand,
                  const CallArguments &arguments, int line);

} // namespace moe::chat
