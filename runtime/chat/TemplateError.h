// The one error type inside the template library: thrown where a template
// cannot be read or rendered, caught at Template's API and returned as an
// Error naming the template and the line.
#pragma once

#include <string>
#include <utility>

namespace moe::chat {

struct TemplateError {
  int line; // 1-based line of the template source; 0 when none applies
  std::string message;
};

[[noreturn]] inline void fail(int line, std::string message) {
  throw TemplateError{line, std::move(message)};
}

} // namespace moe::chat
