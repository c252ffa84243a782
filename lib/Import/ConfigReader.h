//===- ConfigReader.h - typed access to a HuggingFace config.json ---------===//
//
// Part of the config importer (HFConfig.cpp): reads config.json fields with
// errors that name the field.
//
//===----------------------------------------------------------------------===//

#pragma once

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Location.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mlir::moe::hf {

namespace json = llvm::json;

/// Typed access to config.json. The first problem is reported as one error
/// at the file's location naming the field; later reads return neutral
/// values and `ok()` tells the caller to stop.
class ConfigReader {
public:
  ConfigReader(const json::Object &object, Location loc)
      : object(object), loc(loc) {}
  /// The object under `parent`'s field `key`. Both share one failure state:
  /// a config gets one error, whichever reader finds it first.
  ConfigReader(const json::Object &object, ConfigReader &parent, StringRef key)
      : object(object), loc(parent.loc),
        fieldPrefix((Twine(parent.fieldPrefix) + key + ".").str()),
        failed(parent.failed) {}
  ConfigReader(const ConfigReader &) = delete;
  ConfigReader &operator=(const ConfigReader &) = delete;

  bool ok() const { return !*failed; }
  bool has(StringRef key) const {
    const json::Value *value = object.get(key);
    return value && value->kind() != json::Value::Null;
  }

  /// Reports `message` about `key` unless an error was already reported.
  void fail(StringRef key, const Twine &message) {
    if (*failed)
      return;
    *failed = true;
    emitError(loc) << "field '" << fieldPrefix << key << "' " << message;
  }
  /// Reports an inconsistency between fields (`key` is the one to fix).
  bool require(bool condition, StringRef key, const Twine &message) {
    if (!condition)
      fail(key, message);
    return condition;
  }

  std::optional<int64_t> optionalInteger(StringRef key) {
    if (!has(key))
      return std::nullopt;
    std::optional<int64_t> value = object.getInteger(key);
    // Some configs write integers as 4096.0.
    if (std::optional<double> number = object.getNumber(key);
        !value && number && *number == std::floor(*number) &&
        std::fabs(*number) < 0x1p62)
      value = static_cast<int64_t>(*number);
    if (!value) {
      fail(key, "must be an integer");
      return std::nullopt;
    }
    // Dimensions, counts and ids are int32 in the plan and the runtime.
    if (*value > INT32_MAX || *value < INT32_MIN) {
      fail(key,
           llvm::formatv("is {0}, beyond what a 32-bit integer holds", *value));
      return std::nullopt;
    }
    return value;
  }
  int64_t integer(StringRef key) {
    if (!has(key)) {
      fail(key, "is missing");
      return 0;
    }
    return optionalInteger(key).value_or(0);
  }
  int64_t integer(StringRef key, int64_t defaultValue) {
    return has(key) ? optionalInteger(key).value_or(0) : defaultValue;
  }
  /// A positive value; 1 after reporting any other, so that the readers
  /// computing with it go on to report the config's other errors.
  int64_t positive(StringRef key) { return checkPositive(key, integer(key)); }
  int64_t positive(StringRef key, int64_t defaultValue) {
    return checkPositive(key, integer(key, defaultValue));
  }
  int64_t checkPositive(StringRef key, int64_t value) {
    require(!ok() || value > 0, key,
            llvm::formatv("must be positive, got {0}", value));
    return value > 0 ? value : 1;
  }
  /// A count or size that may be 0; 0 after reporting a negative one.
  int64_t nonNegative(StringRef key, int64_t defaultValue) {
    int64_t value = integer(key, defaultValue);
    require(!ok() || value >= 0, key,
            llvm::formatv("must not be negative, got {0}", value));
    return value >= 0 ? value : 0;
  }
  double number(StringRef key, std::optional<double> defaultValue = {}) {
    if (!has(key)) {
      if (defaultValue)
        return *defaultValue;
      fail(key, "is missing");
      return 0;
    }
    if (std::optional<double> value = object.getNumber(key))
      return *value;
    fail(key, "must be a number");
    return 0;
  }
  bool boolean(StringRef key, bool defaultValue) {
    if (!has(key))
      return defaultValue;
    if (std::optional<bool> value = object.getBoolean(key))
      return *value;
    fail(key, "must be true or false");
    return defaultValue;
  }
  std::string string(StringRef key, StringRef defaultValue = "") {
    if (!has(key))
      return defaultValue.str();
    if (std::optional<StringRef> value = object.getString(key))
      return value->str();
    fail(key, "must be a string");
    return defaultValue.str();
  }
  std::vector<std::string> strings(StringRef key) {
    std::vector<std::string> result;
    const json::Array *array = arrayOf(key);
    for (const json::Value &item : array ? *array : json::Array()) {
      if (std::optional<StringRef> text = item.getAsString())
        result.push_back(text->str());
      else
        fail(key, "must be a list of strings");
    }
    return result;
  }
  std::vector<int64_t> integers(StringRef key) {
    std::vector<int64_t> result;
    const json::Array *array = arrayOf(key);
    for (const json::Value &item : array ? *array : json::Array()) {
      std::optional<int64_t> value = item.getAsInteger();
      // int32, as single integers are (ids and layer numbers).
      if (value && *value >= INT32_MIN && *value <= INT32_MAX)
        result.push_back(*value);
      else
        fail(key, "must be a list of 32-bit integers");
    }
    return result;
  }
  /// Integer or list of integers (eos_token_id); empty when absent.
  std::vector<int64_t> integerOrList(StringRef key) {
    if (!has(key))
      return {};
    if (object.get(key)->getAsArray())
      return integers(key);
    return {integer(key)};
  }
  const json::Object *nestedObject(StringRef key) {
    if (!has(key))
      return nullptr;
    if (const json::Object *nested = object.getObject(key))
      return nested;
    fail(key, "must be an object");
    return nullptr;
  }

  Location location() const { return loc; }

private:
  const json::Array *arrayOf(StringRef key) {
    if (!has(key))
      return nullptr;
    if (const json::Array *array = object.getArray(key))
      return array;
    fail(key, "must be a list");
    return nullptr;
  }

  const json::Object &object;
  Location loc;
  std::string fieldPrefix; // "rope_scaling." for a nested object
  bool ownFailed = false;
  bool *failed = &ownFailed; // or the outermost reader's, if nested
};

} // namespace mlir::moe::hf
