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

} // namespace moe::chat
