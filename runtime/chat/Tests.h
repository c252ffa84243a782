// Jinja's tests (`value is defined`, `value is not none`), also applied by
// the selectattr and rejectattr filters.
#pragma once

#include "runtime/chat/Value.h"

#include <string_view>
#include <vector>

namespace moe::chat {

bool isTest(std::string_view name);
// Throws TemplateError at `line` when the test cannot apply to `value`.
bool applyTest(std::string_view name, const Value &value,
               const std::vector<Value> &arguments, int line);

// Python's `item in container`, for the operator and the `in` test: an
// element of a list, a key of a dict, a substring of a string; nothing is
// in undefined. Throws TemplateError at `line` for any other container (the
// error says `container` is what `right` describes) or a non-string item
// looked for in a string.
bool contains(const Value &container, const Value &item, int line,
              std::string_view right);

} // namespace moe::chat
