// The values a template computes with: Jinja's undefined and none, booleans,
// integers, floats, strings, lists, dicts (insertion-ordered, as Python's),
// namespaces (the one mutable object a template may assign into) and
// callables (builtins, methods bound to their object, macros).
//
// Lists, dicts and namespaces are shared by reference, as in Python: a
// namespace changed inside a loop is changed outside it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace moe::chat {

class Dict;
struct Namespace;
struct Callable;
class Value;

using List = std::vector<Value>;

class Value {
public:
  enum class Kind {
    undefined,
    none,
    boolean,
    integer,
    floating,
    string,
    list,
    dict,
    nameSpace,
    callable
  };

  Value() = default; // undefined
  static Value none();
  Value(bool value) : data_(value) {}
  Value(int64_t value) : data_(value) {}
  Value(int value) : data_(int64_t(value)) {}
  Value(double value) : data_(value) {}
  Value(std::string value) : data_(std::move(value)) {}
  Value(const char *value) : data_(std::string(value)) {}
  Value(List list);
  Value(Dict dict);
  Value(std::shared_ptr<Namespace> ns) : data_(std::move(ns)) {}
  Value(std::shared_ptr<const Callable> callable)
      : data_(std::move(callable)) {}
  static Value fromJson(const nlohmann::ordered_json &json);

  Kind kind() const { return Kind(data_.index()); }
  bool is(Kind kind) const { return this->kind() == kind; }
  bool isNumber() const { return is(Kind::integer) || is(Kind::floating); }

  bool asBool() const { return std::get<bool>(data_); }
  int64_t asInteger() const { return std::get<int64_t>(data_); }
  double asNumber() const; // integer, float or boolean
  const std::string &asString() const { return std::get<std::string>(data_); }
  const List &asList() const { return *std::get<std::shared_ptr<List>>(data_); }
  const Dict &asDict() const { return *std::get<std::shared_ptr<Dict>>(data_); }
  Namespace &asNamespace() const {
    return *std::get<std::shared_ptr<Namespace>>(data_);
  }
  const Callable &asCallable() const {
    return *std::get<std::shared_ptr<const Callable>>(data_);
  }

  bool truthy() const;
  // What `{{ value }}` prints: Python's str() (undefined prints nothing).
  std::string str() const;
  // Python's repr(), as str() shows the items of lists and dicts.
  std::string repr() const;

private:
  struct Undefined {};
  struct None {};
  std::variant<Undefined, None, bool, int64_t, double, std::string,
               std::shared_ptr<List>, std::shared_ptr<Dict>,
               std::shared_ptr<Namespace>, std::shared_ptr<const Callable>>
      data_;
};

// A dict or a namespace's attributes, in insertion order.
class Dict {
public:
  const Value *find(std::string_view key) const;
  void set(std::string key, Value value);
  const std::vector<std::pair<std::string, Value>> &entries() const {
    return entries_;
  }
  size_t size() const { return entries_.size(); }

private:
  std::vector<std::pair<std::string, Value>> entries_;
};

struct Namespace {
  Dict attributes;
};

// The arguments of one call: positional, then keyword ones in call order;
// `caller` is the body of a `{% call %}` block, when the call is one.
struct CallArguments {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keywords;
  std::shared_ptr<const Callable> caller;

  const Value *keyword(std::string_view name) const;
  // Positional `index`, else keyword `name`, else nullptr.
  const Value *get(size_t index, std::string_view name) const;
};

struct Callable {
  std::string name; // in error messages
  std::function<Value(const CallArguments &)> call;
};

// Python's ==: numbers by value, lists and dicts item by item.
bool operator==(const Value &a, const Value &b);

// The kind in error messages: "a string", "an integer", "none"...
std::string_view kindPhrase(Value::Kind kind);

// Python's repr() of a float: the shortest text that reads back the same,
// with ".0" on integral values.
std::string formatFloat(double value);

} // namespace moe::chat
