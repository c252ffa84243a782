// The methods templates call on strings (strip, split, startswith,
// replace...) and dicts (get, items, keys, values), with Python's meaning.
#pragma once

#include "runtime/chat/Value.h"

#include <string>
#include <string_view>

namespace moe::chat {

// `object.name` as a callable bound to `object`, or undefined when the
// object's kind has no such method.
Value method(const Value &object, const std::string &name);

// str.split(sep, maxsplit): on runs of whitespace without `separator`.
List split(const std::string &text, const std::string *separator,
           int64_t maxSplit, int line);
// str.replace(old, new, count); a negative count replaces every one.
std::string replaced(const std::string &text, const std::string &old,
                     const std::string &with, int64_t count);

} // namespace moe::chat
