#include "runtime/chat/Value.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace moe::chat {

const Value *Dict::find(std::string_view key) const {
  for (const auto &[name, value] : entries_)
    if (name == key)
      return &value;
  return nullptr;
}

void Dict::set(std::string key, Value value) {
  for (auto &[name, existing] : entries_)
    if (name == key) {
      existing = std::move(value);
      return;
    }
  entries_.emplace_back(std::move(key), std::move(value));
}

const Value *CallArguments::keyword(std::string_view name) const {
  for (const auto &[key, value] : keywords)
    if (key == name)
      return &value;
  return nullptr;
}

const Value *CallArguments::get(size_t index, std::string_view name) const {
  return index < positional.size() ? &positional[index] : keyword(name);
}

Value::Value(List list) : data_(std::make_shared<List>(std::move(list))) {}

Value::Value(Dict dict) : data_(std::make_shared<Dict>(std::move(dict))) {}

Value Value::none() {
  Value value;
  value.data_ = None{};
  return value;
}

Value Value::fromJson(const nlohmann::ordered_json &json) {
  switch (json.type()) {
  case nlohmann::ordered_json::value_t::null:
  case nlohmann::ordered_json::value_t::discarded:
    return none();
  case nlohmann::ordered_json::value_t::boolean:
    return json.get<bool>();
  case nlohmann::ordered_json::value_t::number_integer:
    return json.get<int64_t>();
  case nlohmann::ordered_json::value_t::number_unsigned:
    // Beyond int64_t only as a float, as JSON readers without big integers.
    return json.get<uint64_t>() > uint64_t(INT64_MAX)
               ? Value(json.get<double>())
               : Value(int64_t(json.get<uint64_t>()));
  case nlohmann::ordered_json::value_t::number_float:
    return json.get<double>();
  case nlohmann::ordered_json::value_t::string:
    return json.get<std::string>();
  case nlohmann::ordered_json::value_t::array: {
    List list;
    list.reserve(json.size());
    for (const auto &item : json)
      list.push_back(fromJson(item));
    return list;
  }
  case nlohmann::ordered_json::value_t::object: {
    Dict dict;
    for (const auto &[key, item] : json.items())
      dict.set(key, fromJson(item));
    return dict;
  }
  case nlohmann::ordered_json::value_t::binary:
    break;
  }
  return none();
}

double Value::asNumber() const {
  if (is(Kind::floating))
    return std::get<double>(data_);
  if (is(Kind::boolean))
    return asBool() ? 1 : 0;
  return double(asInteger());
}

bool Value::truthy() const {
  switch (kind()) {
  case Kind::undefined:
  case Kind::none:
    return false;
  case Kind::boolean:
    return asBool();
  case Kind::integer:
    return asInteger() != 0;
  case Kind::floating:
    return asNumber() != 0;
  case Kind::string:
    return !asString().empty();
  case Kind::list:
    return !asList().empty();
  case Kind::dict:
    return asDict().size() != 0;
  case Kind::nameSpace:
  case Kind::callable:
    return true;
  }
  return false;
}

std::string formatFloat(double value) {
  if (std::isnan(value))
    return "nan";
  if (std::isinf(value))
    return value < 0 ? "-inf" : "inf";
  // The shortest round-trip digits, laid out by Python's repr rule: plain
  // notation for exponents from -4 to 15, scientific beyond.
  char buffer[64];
  auto [end, error] = std::to_chars(buffer, buffer + sizeof(buffer), value,
                                    std::chars_format::scientific);
  std::string text(buffer, end);
  bool negative = text[0] == '-';
  if (negative)
    text.erase(0, 1);
  size_t e = text.find('e');
  int exponent = std::atoi(text.c_str() + e + 1);
  std::string digits = text.substr(0, 1) + (e > 2 ? text.substr(2, e - 2) : "");
  std::string out;
  if (exponent < -4 || exponent >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1)
      out += "." + digits.substr(1);
    out +=
        fmt::format("e{}{:02}", exponent < 0 ? '-' : '+', std::abs(exponent));
  } else if (exponent < 0) {
    out = "0." + std::string(size_t(-exponent - 1), '0') + digits;
  } else if (size_t(exponent) + 1 >= digits.size()) {
    out =
        digits + std::string(size_t(exponent) + 1 - digits.size(), '0') + ".0";
  } else {
    out = digits.substr(0, size_t(exponent) + 1) + "." +
          digits.substr(size_t(exponent) + 1);
  }
  return negative ? "-" + out : out;
}

namespace {

std::string reprString(const std::string &text) {
  char quote = text.find('\'') != std::string::npos &&
                       text.find('"') == std::string::npos
                   ? '"'
                   : '\'';
  std::string out(1, quote);
  for (unsigned char c : text) {
    if (c == '\\' || c == static_cast<unsigned char>(quote))
      out += {'\\', char(c)};
    else if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7F)
      out += fmt::format("\\x{:02x}", c);
    else
      out.push_back(char(c));
  }
  return out + quote;
}

} // namespace

std::string Value::str() const {
  switch (kind()) {
  case Kind::undefined:
    return "";
  case Kind::string:
    return asString();
  default:
    return repr();
  }
}

std::string Value::repr() const {
  switch (kind()) {
  case Kind::undefined:
    return "";
  case Kind::none:
    return "None";
  case Kind::boolean:
    return asBool() ? "True" : "False";
  case Kind::integer:
    return std::to_string(asInteger());
  case Kind::floating:
    return formatFloat(asNumber());
  case Kind::string:
    return reprString(asString());
  case Kind::list: {
    std::string out = "[";
    for (const Value &item : asList())
      out += (out.size() > 1 ? ", " : "") + item.repr();
    return out + "]";
  }
  case Kind::dict: {
    std::string out = "{";
    for (const auto &[key, item] : asDict().entries())
      out +=
          (out.size() > 1 ? ", " : "") + reprString(key) + ": " + item.repr();
    return out + "}";
  }
  case Kind::nameSpace:
    return "<Namespace>";
  case Kind::callable:
    return "<function " + asCallable().name + ">";
  }
  return "";
}

bool operator==(const Value &a, const Value &b) {
  using Kind = Value::Kind;
  bool aNumeric = a.isNumber() || a.is(Kind::boolean);
  bool bNumeric = b.isNumber() || b.is(Kind::boolean);
  if (aNumeric && bNumeric)
    return a.asNumber() == b.asNumber();
  if (a.kind() != b.kind())
    return false;
  switch (a.kind()) {
  case Kind::undefined:
  case Kind::none:
    return true;
  case Kind::string:
    return a.asString() == b.asString();
  case Kind::list:
    return a.asList() == b.asList();
  case Kind::dict: {
    const Dict &x = a.asDict(), &y = b.asDict();
    if (x.size() != y.size())
      return false;
    for (const auto &[key, value] : x.entries()) {
      const Value *other = y.find(key);
      if (!other || !(*other == value))
        return false;
    }
    return true;
  }
  case Kind::nameSpace:
    return &a.asNamespace() == &b.asNamespace();
  case Kind::callable:
    return &a.asCallable() == &b.asCallable();
  default:
    return false;
  }
}

std::string_view kindPhrase(Value::Kind kind) {
  static constexpr std::string_view kNames[] = {
      "undefined", "none",   "a boolean", "an integer",  "a float",
      "a string",  "a list", "a dict",    "a namespace", "a callable"};
  return kNames[size_t(kind)];
}

} // namespace moe::chat
