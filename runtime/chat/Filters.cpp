#include "runtime/chat/Filters.h"

#include "runtime/chat/Json.h"
#include "runtime/chat/Methods.h"
#include "runtime/chat/TemplateError.h"
#include "runtime/chat/Tests.h"
#include "runtime/chat/Unicode.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace moe::chat {
namespace {

using Kind = Value::Kind;

constexpr std::array kFilters = {
    "abs",    "capitalize", "count",      "d",       "default", "dictsort",
    "first",  "float",      "indent",     "int",     "items",   "join",
    "last",   "length",     "list",       "lower",   "map",     "max",
    "min",    "reject",     "rejectattr", "replace", "reverse", "safe",
    "select", "selectattr", "sort",       "string",  "title",   "tojson",
    "trim",   "unique",     "upper"};

[[noreturn]] void notFor(std::string_view filter, const Value &operand,
                         int line) {
  fail(line, fmt::format("filter '{}' does not apply to {}", filter,
                         kindPhrase(operand.kind())));
}

const std::string &text(std::string_view filter, const Value &operand,
                        int line) {
  if (!operand.is(Kind::string))
    notFor(filter, operand, line);
  return operand.asString();
}

// The text of the filters that Python's Jinja applies to str(operand): an
// undefined value is the empty text there (`schema.type | upper` of a
// schema without a type).
const std::string &textOrEmpty(std::string_view filter, const Value &operand,
                               int line) {
  static const std::string kEmpty;
  return operand.is(Kind::undefined) ? kEmpty : text(filter, operand, line);
}

bool flag(const CallArguments &arguments, size_t index, std::string_view name,
          bool fallback) {
  const Value *value = arguments.get(index, name);
  return value ? value->truthy() : fallback;
}

// The items a filter over sequences reads: a list's, a string's characters
// or a dict's keys; none of an undefined value, as Jinja iterates it.
List items(std::string_view filter, const Value &operand, int line) {
  switch (operand.kind()) {
  case Kind::undefined:
    return {};
  case Kind::list:
    return operand.asList();
  case Kind::string: {
    List characters;
    for (char32_t c : codePoints(operand.asString())) {
      std::string character;
      appendUtf8(character, c);
      characters.push_back(std::move(character));
    }
    return characters;
  }
  case Kind::dict: {
    List keys;
    for (const auto &[key, value] : operand.asDict().entries())
      keys.push_back(key);
    return keys;
  }
  default:
    notFor(filter, operand, line);
  }
}

// `text` as a list index: decimal digits that fit.
bool readIndex(const std::string &text, size_t &index) {
  const char *end = text.data() + text.size();
  auto [stop, error] = std::from_chars(text.data(), end, index);
  return !text.empty() && error == std::errc() && stop == end;
}

// An item's attribute by a dotted path ("function.name", "0"), undefined
// where the path leads nowhere.
Value attributeOf(const Value &item, const std::string &path) {
  Value value = item;
  size_t at = 0;
  while (true) {
    size_t dot = path.find('.', at);
    std::string part =
        path.substr(at, dot == std::string::npos ? dot : dot - at);
    if (value.is(Kind::dict)) {
      const Value *found = value.asDict().find(part);
      value = found ? *found : Value();
    } else if (value.is(Kind::nameSpace)) {
      const Value *found = value.asNamespace().attributes.find(part);
      value = found ? *found : Value();
    } else if (size_t index = 0;
               value.is(Kind::list) && readIndex(part, index)) {
      value = index < value.asList().size() ? value.asList()[index] : Value();
    } else {
      return Value();
    }
    if (dot == std::string::npos)
      return value;
    at = dot + 1;
  }
}

// Orders values for sort and dictsort: numbers by value, strings (case
// folded unless asked) by code point.
bool lessThan(const Value &a, const Value &b, bool caseSensitive, int line) {
  bool aNumber = a.isNumber() || a.is(Kind::boolean);
  bool bNumber = b.isNumber() || b.is(Kind::boolean);
  if (aNumber && bNumber)
    return a.asNumber() < b.asNumber();
  if (a.is(Kind::string) && b.is(Kind::string))
    return caseSensitive ? a.asString() < b.asString()
                         : lower(a.asString()) < lower(b.asString());
  fail(line, fmt::format("cannot order {} and {}", kindPhrase(a.kind()),
                         kindPhrase(b.kind())));
}

Value toInteger(const Value &operand, const Value &fallback) {
  switch (operand.kind()) {
  case Kind::integer:
    return operand;
  case Kind::boolean:
    return int64_t(operand.asBool());
  case Kind::floating:
    return int64_t(std::trunc(operand.asNumber()));
  case Kind::string: {
    std::string trimmed = stripped(operand.asString(), true, true);
    int64_t value = 0;
    const char *end = trimmed.data() + trimmed.size();
    auto [stop, error] = std::from_chars(
        trimmed.data() + (trimmed.starts_with('+') ? 1 : 0), end, value);
    if (error == std::errc() && stop == end && !trimmed.empty())
      return value;
    // As Jinja: text that reads as a float truncates.
    char *floatEnd = nullptr;
    double number = std::strtod(trimmed.c_str(), &floatEnd);
    if (!trimmed.empty() && floatEnd == trimmed.c_str() + trimmed.size() &&
        std::isfinite(number))
      return int64_t(std::trunc(number));
    return fallback;
  }
  default:
    return fallback;
  }
}

Value toFloat(const Value &operand, const Value &fallback) {
  if (operand.isNumber() || operand.is(Kind::boolean))
    return operand.asNumber();
  if (operand.is(Kind::string)) {
    std::string trimmed = stripped(operand.asString(), true, true);
    char *end = nullptr;
    double number = std::strtod(trimmed.c_str(), &end);
    if (!trimmed.empty() && end == trimmed.c_str() + trimmed.size())
      return number;
  }
  return fallback;
}

JsonFormat jsonFormat(const CallArguments &arguments, int line) {
  JsonFormat format;
  if (const Value *indent = arguments.get(0, "indent");
      indent && !indent->is(Kind::none)) {
    if (!indent->is(Kind::integer))
      fail(line, "tojson's indent must be an integer");
    format.indent = indent->asInteger();
  }
  const Value *ensureAscii = arguments.keyword("ensure_ascii");
  format.ensureAscii = ensureAscii && ensureAscii->truthy();
  const Value *sortKeys = arguments.keyword("sort_keys");
  format.sortKeys = sortKeys && sortKeys->truthy();
  if (const Value *separators = arguments.keyword("separators");
      separators && !separators->is(Kind::none)) {
    if (!separators->is(Kind::list) || separators->asList().size() != 2 ||
        !separators->asList()[0].is(Kind::string) ||
        !separators->asList()[1].is(Kind::string))
      fail(line, "tojson's separators must be two strings");
    format.itemSeparator = separators->asList()[0].asString();
    format.keySeparator = separators->asList()[1].asString();
  }
  return format;
}

// select/reject and selectattr/rejectattr: the items whose value (or
// attribute) passes the test named by the first argument after the
// attribute, or is true without one.
Value selected(std::string_view filter, const Value &operand,
               const CallArguments &arguments, int line) {
  bool byAttribute = filter.ends_with("attr");
  bool keep = filter.starts_with("select");
  size_t next = 0;
  std::string attribute;
  if (byAttribute) {
    const Value *name = arguments.get(next++, "attribute");
    if (!name || !name->is(Kind::string))
      fail(line, fmt::format("{} needs an attribute name", filter));
    attribute = name->asString();
  }
  std::string test;
  std::vector<Value> testArguments;
  if (next < arguments.positional.size()) {
    const Value &name = arguments.positional[next++];
    if (!name.is(Kind::string) || !isTest(name.asString()))
      fail(line,
           fmt::format("{}: test {} is not supported", filter, name.repr()));
    test = name.asString();
    testArguments.assign(arguments.positional.begin() + long(next),
                         arguments.positional.end());
  }
  List out;
  for (const Value &item : items(filter, operand, line)) {
    Value tested = byAttribute ? attributeOf(item, attribute) : item;
    bool passes = test.empty() ? tested.truthy()
                               : applyTest(test, tested, testArguments, line);
    if (passes == keep)
      out.push_back(item);
  }
  return out;
}

Value mapped(const Value &operand, const CallArguments &arguments, int line) {
  List out;
  if (const Value *attribute = arguments.keyword("attribute")) {
    if (!attribute->is(Kind::string))
      fail(line, "map's attribute must be a string");
    const Value *fallback = arguments.keyword("default");
    for (const Value &item : items("map", operand, line)) {
      Value value = attributeOf(item, attribute->asString());
      out.push_back(value.is(Kind::undefined) && fallback ? *fallback : value);
    }
    return out;
  }
  if (arguments.positional.empty() || !arguments.positional[0].is(Kind::string))
    fail(line, "map needs a filter name or attribute=");
  const std::string &filter = arguments.positional[0].asString();
  if (!isFilter(filter))
    fail(line, fmt::format("map: filter '{}' is not supported", filter));
  CallArguments rest{
      {arguments.positional.begin() + 1, arguments.positional.end()},
      arguments.keywords,
      nullptr};
  for (const Value &item : items("map", operand, line))
    out.push_back(applyFilter(filter, item, rest, line));
  return out;
}

std::string indented(const std::string &text, const CallArguments &arguments,
                     int line) {
  std::string prefix(4, ' ');
  if (const Value *width = arguments.get(0, "width")) {
    if (width->is(Kind::integer))
      prefix.assign(size_t(std::max<int64_t>(0, width->asInteger())), ' ');
    else if (width->is(Kind::string))
      prefix = width->asString();
    else
      fail(line, "indent's width must be an integer or a string");
  }
  bool first = flag(arguments, 1, "first", false);
  bool blank = flag(arguments, 2, "blank", false);
  std::string out;
  size_t at = 0;
  for (size_t index = 0;; ++index) {
    size_t end = text.find('\n', at);
    std::string lineText =
        text.substr(at, end == std::string::npos ? end : end - at);
    if ((index > 0 || first) && (blank || !lineText.empty()))
      out += prefix;
    out += lineText;
    if (end == std::string::npos)
      return out;
    out += '\n';
    at = end + 1;
  }
}

} // namespace

bool isFilter(std::string_view name) {
  return std::find(kFilters.begin(), kFilters.end(), name) != kFilters.end();
}

Value applyFilter(std::string_view name, const Value &operand,
                  const CallArguments &arguments, int line) {
  if (name == "safe")
    return operand;
  if (name == "default" || name == "d") {
    const Value *fallback = arguments.get(0, "default_value");
    bool boolean = flag(arguments, 1, "boolean", false);
    if (operand.is(Kind::undefined) || (boolean && !operand.truthy()))
      return fallback ? *fallback : Value("");
    return operand;
  }
  if (name == "tojson")
    return toJson(operand, jsonFormat(arguments, line), line);
  if (name == "string")
    return operand.str();
  if (name == "length" || name == "count") {
    if (operand.is(Kind::string))
      return int64_t(codePoints(operand.asString()).size());
    return int64_t(items(name, operand, line).size());
  }
  if (name == "list")
    return items(name, operand, line);
  if (name == "first" || name == "last") {
    List list = items(name, operand, line);
    if (list.empty())
      return Value();
    return name == "first" ? list.front() : list.back();
  }
  if (name == "reverse") {
    if (operand.is(Kind::string)) {
      std::vector<char32_t> points = codePoints(operand.asString());
      std::reverse(points.begin(), points.end());
      return toUtf8(points);
    }
    List list = items(name, operand, line);
    std::reverse(list.begin(), list.end());
    return list;
  }
  if (name == "join") {
    const Value *separator = arguments.get(0, "d");
    const Value *attribute = arguments.get(1, "attribute");
    std::string out;
    List list = items(name, operand, line);
    for (size_t i = 0; i < list.size(); ++i) {
      if (i && separator)
        out += separator->str();
      out +=
          (attribute ? attributeOf(list[i], attribute->str()) : list[i]).str();
    }
    return out;
  }
  if (name == "items") {
    if (operand.is(Kind::undefined) || operand.is(Kind::none))
      return List{};
    if (!operand.is(Kind::dict))
      notFor(name, operand, line);
    List pairs;
    for (const auto &[key, value] : operand.asDict().entries())
      pairs.push_back(List{key, value});
    return pairs;
  }
  if (name == "dictsort") {
    if (!operand.is(Kind::dict))
      notFor(name, operand, line);
    bool caseSensitive = flag(arguments, 0, "case_sensitive", false);
    const Value *by = arguments.get(1, "by");
    size_t key = by && by->is(Kind::string) && by->asString() == "value";
    List pairs = applyFilter("items", operand, {}, line).asList();
    std::stable_sort(pairs.begin(), pairs.end(),
                     [&](const Value &a, const Value &b) {
                       return lessThan(a.asList()[key], b.asList()[key],
                                       caseSensitive, line);
                     });
    if (flag(arguments, 2, "reverse", false))
      std::reverse(pairs.begin(), pairs.end());
    return pairs;
  }
  if (name == "sort") {
    List list = items(name, operand, line);
    bool reverse = flag(arguments, 0, "reverse", false);
    bool caseSensitive = flag(arguments, 1, "case_sensitive", false);
    const Value *attribute = arguments.get(2, "attribute");
    auto key = [&](const Value &item) {
      return attribute ? attributeOf(item, attribute->str()) : item;
    };
    std::stable_sort(
        list.begin(), list.end(), [&](const Value &a, const Value &b) {
          return reverse ? lessThan(key(b), key(a), caseSensitive, line)
                         : lessThan(key(a), key(b), caseSensitive, line);
        });
    return list;
  }
  if (name == "min" || name == "max") {
    // The first smallest (largest) item, undefined when there is none.
    List list = items(name, operand, line);
    bool caseSensitive = flag(arguments, 0, "case_sensitive", false);
    const Value *attribute = arguments.get(1, "attribute");
    auto key = [&](const Value &item) {
      return attribute ? attributeOf(item, attribute->str()) : item;
    };
    size_t best = 0;
    for (size_t i = 1; i < list.size(); ++i)
      if (name == "min"
              ? lessThan(key(list[i]), key(list[best]), caseSensitive, line)
              : lessThan(key(list[best]), key(list[i]), caseSensitive, line))
        best = i;
    return list.empty() ? Value() : list[best];
  }
  if (name == "unique") {
    List out;
    for (const Value &item : items(name, operand, line)) {
      auto folded = [](const Value &v) {
        return v.is(Kind::string) ? Value(lower(v.asString())) : v;
      };
      if (std::none_of(out.begin(), out.end(), [&](const Value &seen) {
            return folded(seen) == folded(item);
          }))
        out.push_back(item);
    }
    return out;
  }
  if (name == "select" || name == "reject" || name == "selectattr" ||
      name == "rejectattr")
    return selected(name, operand, arguments, line);
  if (name == "map")
    return mapped(operand, arguments, line);
  if (name == "int")
    return toInteger(operand, arguments.get(0, "default")
                                  ? *arguments.get(0, "default")
                                  : Value(int64_t(0)));
  if (name == "float")
    return toFloat(operand, arguments.get(0, "default")
                                ? *arguments.get(0, "default")
                                : Value(0.0));
  if (name == "abs") {
    if (operand.is(Kind::integer)) {
      if (operand.asInteger() == INT64_MIN)
        fail(line, "integer overflow in abs");
      return int64_t(std::llabs(operand.asInteger()));
    }
    if (operand.is(Kind::floating))
      return std::fabs(operand.asNumber());
    notFor(name, operand, line);
  }
  if (name == "trim") {
    const Value *chars = arguments.get(0, "chars");
    if (chars && chars->is(Kind::string)) {
      std::vector<char32_t> points = codePoints(chars->asString());
      std::u32string set(points.begin(), points.end());
      return stripped(textOrEmpty(name, operand, line), true, true, &set);
    }
    return stripped(textOrEmpty(name, operand, line), true, true);
  }
  if (name == "upper")
    return upper(textOrEmpty(name, operand, line));
  if (name == "lower")
    return lower(textOrEmpty(name, operand, line));
  if (name == "title")
    return title(textOrEmpty(name, operand, line));
  if (name == "capitalize")
    return capitalize(textOrEmpty(name, operand, line));
  if (name == "indent")
    return indented(text(name, operand, line), arguments, line);
  if (name == "replace") {
    const Value *old = arguments.get(0, "old");
    const Value *with = arguments.get(1, "new");
    const Value *count = arguments.get(2, "count");
    if (!old || !with)
      fail(line, "replace needs the text to replace and its replacement");
    return replaced(textOrEmpty(name, operand, line), old->str(), with->str(),
                    count && count->is(Kind::integer) ? count->asInteger()
                                                      : -1);
  }
  fail(line, fmt::format("filter '{}' is not supported", name));
}

} // namespace moe::chat
