// The tojson filter: values as JSON text the way transformers' tojson
// writes them (Python's json.dumps with ensure_ascii=False unless asked).
#pragma once

#include "runtime/chat/Value.h"

#include <optional>
#include <string>

namespace moe::chat {

struct JsonFormat {
  std::optional<int64_t> indent; // spaces per level; items on their own lines
  bool ensureAscii = false;      // non-ASCII characters as \uXXXX
  bool sortKeys = false;
  // Between items and after keys; json.dumps's defaults when absent (", "
  // and ": ", or "," before a newline when indenting).
  std::optional<std::string> itemSeparator, keySeparator;
};

// Throws TemplateError at `line` for values JSON cannot hold (callables).
std::string toJson(const Value &value, const JsonFormat &format, int line);

} // namespace moe::chat
