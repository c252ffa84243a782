// Typed access to tokenizer.json values. Every failure names the JSON path of
// the offending value ("model.merges[3]: ..."), so a malformed file yields one
// precise error instead of an exception.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "runtime/support/Result.h"

// Binds the value of a Result expression (`lhs` may declare a variable) or
// returns its error from the enclosing function.
#define MOE_TOKENIZER_TRY(lhs, expr)                                           \
  MOE_TOKENIZER_TRY_IMPL(MOE_TOKENIZER_CONCAT(moeTryResult_, __LINE__), lhs,   \
                         expr)
#define MOE_TOKENIZER_TRY_IMPL(result, lhs, expr)                              \
  auto result = (expr);                                                        \
  if (!result.ok())                                                            \
    return result.error();                                                     \
  lhs = std::move(result).value()
#define MOE_TOKENIZER_CONCAT(a, b) MOE_TOKENIZER_CONCAT_IMPL(a, b)
#define MOE_TOKENIZER_CONCAT_IMPL(a, b) a##b

namespace moe::tokenizer {

using Json = nlohmann::json;

std::string memberPath(std::string_view parent, std::string_view key);
std::string elementPath(std::string_view parent, size_t index);

Error errorAt(std::string_view path, std::string_view what);

// The member `key` of `object`, or nullptr when it is absent or null.
const Json *findMember(const Json &object, std::string_view key);

Result<const Json *> requireMember(const Json &object, std::string_view key,
                                   std::string_view objectPath);
Result<const Json *> requireObject(const Json &object, std::string_view key,
                                   std::string_view objectPath);
Result<const Json *> requireArray(const Json &object, std::string_view key,
                                  std::string_view objectPath);
Result<std::string> requireString(const Json &object, std::string_view key,
                                  std::string_view objectPath);
Result<int64_t> requireInteger(const Json &object, std::string_view key,
                               std::string_view objectPath);

Result<std::string> optionalString(const Json &object, std::string_view key,
                                   std::string_view objectPath,
                                   std::string fallback);
Result<bool> optionalBool(const Json &object, std::string_view key,
                          std::string_view objectPath, bool fallback);
Result<int64_t> optionalInteger(const Json &object, std::string_view key,
                                std::string_view objectPath, int64_t fallback);

// The "type" member of a component, requiring the component to be an object.
Result<std::string> componentType(const Json &component, std::string_view path);

Error unsupportedType(std::string_view path, std::string_view type);

// A token id: an integer in [0, 2^31).
Result<int32_t> tokenId(const Json &value, std::string_view path);

} // namespace moe::tokenizer
