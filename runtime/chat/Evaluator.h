// Renders a parsed template over its top-level variables.
#pragma once

#include "runtime/chat/Ast.h"
#include "runtime/chat/Value.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe::chat {

// The text `program` renders to with `variables` (and the globals every
// template sees: range, namespace, raise_exception, strftime_now, true,
// false, none); strftime_now() formats `now` (seconds since the epoch), the
// clock's time when unset. Throws TemplateError naming the line that failed.
std::string evaluate(const std::vector<Stmt> &program, const Dict &variables,
                     std::optional<int64_t> now = {});

} // namespace moe::chat
