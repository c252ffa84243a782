// A Jinja template as HF chat templates are written: parsed once, rendered
// for each conversation. Errors name the template and the line, and are
// returned, never thrown.
#pragma once

#include "runtime/support/Result.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace moe::chat {

struct Stmt;

class Template {
public:
  // `name` starts every error ("chat_template.jinja line 3: ...").
  static Result<Template> parse(std::string_view source, std::string name);

  // The text rendered with the members of `variables` (an object) as the
  // template's top-level variables; strftime_now() formats `now` (seconds
  // since the epoch), the clock's time when unset.
  Result<std::string> render(const nlohmann::ordered_json &variables,
                             std::optional<int64_t> now = {}) const;

private:
  Template(std::string name, std::shared_ptr<const std::vector<Stmt>> program)
      : name_(std::move(name)), program_(std::move(program)) {}

  std::string name_;
  std::shared_ptr<const std::vector<Stmt>> program_;
};

} // namespace moe::chat
