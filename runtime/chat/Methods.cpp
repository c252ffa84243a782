#include "runtime/chat/Methods.h"

#include "runtime/chat/TemplateError.h"
#include "runtime/chat/Unicode.h"

#include <fmt/format.h>

namespace moe::chat {
namespace {

using Kind = Value::Kind;

const std::string &stringArgument(const CallArguments &arguments, size_t index,
                                  std::string_view name,
                                  std::string_view method, int line) {
  const Value *value = arguments.get(index, name);
  if (!value || !value->is(Kind::string))
    fail(line, fmt::format("{}() needs a string argument '{}'", method, name));
  return value->asString();
}

// startswith/endswith: a string or a tuple of strings to try.
bool affixMatches(const std::string &text, const Value &affixes, bool atStart) {
  auto matches = [&](const Value &affix) {
    if (!affix.is(Kind::string))
      return false;
    const std::string &a = affix.asString();
    return atStart ? text.starts_with(a) : text.ends_with(a);
  };
  if (affixes.is(Kind::list)) {
    for (const Value &affix : affixes.asList())
      if (matches(affix))
        return true;
    return false;
  }
  return matches(affixes);
}

Value boundMethod(std::string name,
                  std::function<Value(const CallArguments &)> call) {
  return Value(std::make_shared<const Callable>(
      Callable{std::move(name), std::move(call)}));
}

Value stringMethod(const std::string &text, const std::string &name) {
  if (name == "upper" || name == "lower" || name == "title" ||
      name == "capitalize")
    return boundMethod(name, [text, name](const CallArguments &) {
      return Value(name == "upper"   ? upper(text)
                   : name == "lower" ? lower(text)
                   : name == "title" ? title(text)
                                     : capitalize(text));
    });
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return boundMethod(name, [text, name](const CallArguments &arguments) {
      const Value *chars = arguments.get(0, "chars");
      std::u32string set;
      if (chars && chars->is(Kind::string)) {
        std::vector<char32_t> points = codePoints(chars->asString());
        set.assign(points.begin(), points.end());
      }
      return Value(stripped(text, name != "rstrip", name != "lstrip",
                            chars && chars->is(Kind::string) ? &set : nullptr));
    });
  if (name == "startswith" || name == "endswith")
    return boundMethod(name, [text, name](const CallArguments &arguments) {
      const Value *affix = arguments.get(0, "prefix");
      if (!affix)
        fail(0, fmt::format("{}() needs an argument", name));
      return Value(affixMatches(text, *affix, name == "startswith"));
    });
  if (name == "split")
    return boundMethod(name, [text](const CallArguments &arguments) {
      const Value *separator = arguments.get(0, "sep");
      const Value *maxSplit = arguments.get(1, "maxsplit");
      return Value(split(
          text,
          separator && separator->is(Kind::string) ? &separator->asString()
                                                   : nullptr,
          maxSplit && maxSplit->is(Kind::integer) ? maxSplit->asInteger() : -1,
          0));
    });
  if (name == "replace")
    return boundMethod(name, [text](const CallArguments &arguments) {
      const Value *count = arguments.get(2, "count");
      return Value(replaced(
          text, stringArgument(arguments, 0, "old", "replace", 0),
          stringArgument(arguments, 1, "new", "replace", 0),
          count && count->is(Kind::integer) ? count->asInteger() : -1));
    });
  if (name == "join")
    return boundMethod(name, [text](const CallArguments &arguments) {
      const Value *items = arguments.get(0, "iterable");
      if (!items || !items->is(Kind::list))
        fail(0, "join() needs a list");
      std::string out;
      for (size_t i = 0; i < items->asList().size(); ++i)
        out += (i ? text : "") + items->asList()[i].str();
      return Value(out);
    });
  return Value();
}

Value dictMethod(const Value &object, const std::string &name) {
  if (name == "get")
    return boundMethod(name, [object](const CallArguments &arguments) {
      const Value *key = arguments.get(0, "key");
      if (!key || !key->is(Kind::string))
        fail(0, "get() needs a string key");
      if (const Value *found = object.asDict().find(key->asString()))
        return *found;
      const Value *fallback = arguments.get(1, "default");
      return fallback ? *fallback : Value::none();
    });
  if (name == "items" || name == "keys" || name == "values")
    return boundMethod(name, [object, name](const CallArguments &) {
      List list;
      for (const auto &[key, value] : object.asDict().entries())
        list.push_back(name == "items"  ? Value(List{key, value})
                       : name == "keys" ? Value(key)
                                        : value);
      return Value(std::move(list));
    });
  return Value();
}

} // namespace

List split(const std::string &text, const std::string *separator,
           int64_t maxSplit, int line) {
  List parts;
  if (!separator) {
    std::vector<char32_t> points = codePoints(text);
    size_t at = 0;
    while (true) {
      while (at < points.size() && isPythonSpace(points[at]))
        ++at;
      if (at == points.size())
        break;
      if (maxSplit >= 0 && int64_t(parts.size()) == maxSplit) {
        // The rest, trailing whitespace removed, is the last part.
        size_t end = points.size();
        while (end > at && isPythonSpace(points[end - 1]))
          --end;
        parts.push_back(
            toUtf8({points.begin() + long(at), points.begin() + long(end)}));
        break;
      }
      size_t end = at;
      while (end < points.size() && !isPythonSpace(points[end]))
        ++end;
      parts.push_back(
          toUtf8({points.begin() + long(at), points.begin() + long(end)}));
      at = end;
    }
    return parts;
  }
  if (separator->empty())
    fail(line, "split() with an empty separator");
  size_t at = 0;
  while (maxSplit < 0 || int64_t(parts.size()) < maxSplit) {
    size_t found = text.find(*separator, at);
    if (found == std::string::npos)
      break;
    parts.push_back(text.substr(at, found - at));
    at = found + separator->size();
  }
  parts.push_back(text.substr(at));
  return parts;
}

std::string replaced(const std::string &text, const std::string &old,
                     const std::string &with, int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `with` before every character and at the end.
    std::vector<char32_t> points = codePoints(text);
    for (size_t i = 0; i <= points.size(); ++i) {
      if (count < 0 || int64_t(i) < count)
        out += with;
      if (i < points.size())
        appendUtf8(out, points[i]);
    }
    return out;
  }
  size_t at = 0;
  for (int64_t done = 0; count < 0 || done < count; ++done) {
    size_t found = text.find(old, at);
    if (found == std::string::npos)
      break;
    out.append(text, at, found - at);
    out += with;
    at = found + old.size();
  }
  return out + text.substr(at);
}

Value method(const Value &object, const std::string &name) {
  if (object.is(Kind::string))
    return stringMethod(object.asString(), name);
  if (object.is(Kind::dict))
    return dictMethod(object, name);
  return Value();
}

} // namespace moe::chat
