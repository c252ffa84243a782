#include "runtime/chat/Template.h"

#include "runtime/chat/Evaluator.h"
#include "runtime/chat/Lexer.h"
#include "runtime/chat/Parser.h"
#include "runtime/chat/TemplateError.h"

namespace moe::chat {
namespace {

Error located(const std::string &name, const TemplateError &error) {
  return error.line > 0
             ? makeError("{} line {}: {}", name, error.line, error.message)
             : makeError("{}: {}", name, error.message);
}

} // namespace

Result<Template> Template::parse(std::string_view source, std::string name) {
  try {
    auto program = std::make_shared<const std::vector<Stmt>>(
        chat::parse(tokenize(source)));
    return Template(std::move(name), std::move(program));
  } catch (const TemplateError &error) {
    return located(name, error);
  }
}

Result<std::string> Template::render(const nlohmann::ordered_json &variables,
                                     std::optional<int64_t> now) const {
  Value values = Value::fromJson(variables);
  if (!values.is(Value::Kind::dict))
    return makeError("{}: the variables must be a JSON object", name_);
  try {
    return evaluate(*program_, values.asDict(), now);
  } catch (const TemplateError &error) {
    return located(name_, error);
  }
}

} // namespace moe::chat
