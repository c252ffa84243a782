#include "runtime/chat/Tests.h"

#include "runtime/chat/TemplateError.h"
#include "runtime/chat/Unicode.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>

namespace moe::chat {
namespace {

using Kind = Value::Kind;

constexpr std::array kTests = {
    "boolean", "callable", "defined", "divisibleby", "eq",        "equalto",
    "even",    "false",    "float",   "in",          "integer",   "iterable",
    "lower",   "mapping",  "ne",      "none",        "number",    "odd",
    "sameas",  "sequence", "string",  "true",        "undefined", "upper"};

const Value &argument(std::string_view test,
                      const std::vector<Value> &arguments, int line) {
  if (arguments.empty())
    fail(line, fmt::format("test '{}' needs an argument", test));
  return arguments[0];
}

int64_t integer(std::string_view test, const Value &value, int line) {
  if (!value.is(Kind::integer))
    fail(line, fmt::format("test '{}' applies to integers, not to {}", test,
                           kindPhrase(value.kind())));
  return value.asInteger();
}

} // namespace

bool isTest(std::string_view name) {
  return std::find(kTests.begin(), kTests.end(), name) != kTests.end();
}

bool applyTest(std::string_view name, const Value &value,
               const std::vector<Value> &arguments, int line) {
  if (name == "defined")
    return !value.is(Kind::undefined);
  if (name == "undefined")
    return value.is(Kind::undefined);
  if (name == "none")
    return value.is(Kind::none);
  if (name == "boolean")
    return value.is(Kind::boolean);
  if (name == "true" || name == "false")
    return value.is(Kind::boolean) && value.asBool() == (name == "true");
  if (name == "string")
    return value.is(Kind::string);
  if (name == "number")
    return value.isNumber();
  if (name == "integer")
    return value.is(Kind::integer);
  if (name == "float")
    return value.is(Kind::floating);
  if (name == "mapping")
    return value.is(Kind::dict);
  // Undefined iterates as empty and has a length, 0, as in Python's Jinja.
  if (name == "iterable" || name == "sequence")
    return value.is(Kind::list) || value.is(Kind::string) ||
           value.is(Kind::dict) || value.is(Kind::undefined);
  if (name == "callable")
    return value.is(Kind::callable);
  if (name == "lower" || name == "upper")
    return value.is(Kind::string) &&
           value.asString() == (name == "lower" ? lower(value.asString())
                                                : upper(value.asString()));
  if (name == "odd" || name == "even")
    return (integer(name, value, line) % 2 != 0) == (name == "odd");
  if (name == "divisibleby") {
    int64_t divisor = integer(name, argument(name, arguments, line), line);
    if (divisor == 0)
      fail(line, "divisibleby(0)");
    return integer(name, value, line) % divisor == 0;
  }
  if (name == "eq" || name == "equalto")
    return value == argument(name, arguments, line);
  if (name == "ne")
    return !(value == argument(name, arguments, line));
  if (name == "in")
    return contains(argument(name, arguments, line), value, line,
                    "the argument of test 'in'");
  if (name == "sameas") {
    const Value &other = argument(name, arguments, line);
    return value.kind() == other.kind() && value == other;
  }
  fail(line, fmt::format("test '{}' is not supported", name));
}

bool contains(const Value &container, const Value &item, int line,
              std::string_view right) {
  switch (container.kind()) {
  case Kind::undefined:
    return false;
  case Kind::list:
    return std::any_of(container.asList().begin(), container.asList().end(),
                       [&](const Value &v) { return v == item; });
  case Kind::dict:
    return item.is(Kind::string) && container.asDict().find(item.asString());
  case Kind::string:
    if (!item.is(Kind::string))
      fail(line, fmt::format("'in <string>' needs a string on its left, not {}",
                             kindPhrase(item.kind())));
    return container.asString().find(item.asString()) != std::string::npos;
  default:
    fail(line, fmt::format("'in' needs a list, dict or string on its right: "
                           "{} is {}",
                           right, kindPhrase(container.kind())));
  }
}

} // namespace moe::chat
