#include "runtime/tokenizer/JsonAccess.h"

#include <limits>

namespace moe::tokenizer {

std::string memberPath(std::string_view parent, std::string_view key) {
  if (parent.empty())
    return std::string(key);
  return fmt::format("{}.{}", parent, key);
}

std::string elementPath(std::string_view parent, size_t index) {
  return fmt::format("{}[{}]", parent, index);
}

Error errorAt(std::string_view path, std::string_view what) {
  if (path.empty())
    return Error(std::string(what));
  return makeError("{}: {}", path, what);
}

const Json *findMember(const Json &object, std::string_view key) {
  if (!object.is_object())
    return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null())
    return nullptr;
  return &*it;
}

Result<const Json *> requireMember(const Json &object, std::string_view key,
                                   std::string_view objectPath) {
  if (!object.is_object())
    return errorAt(objectPath, fmt::format("expected an object, found {}",
                                           object.type_name()));
  const Json *member = findMember(object, key);
  if (!member)
    return errorAt(objectPath, fmt::format("missing \"{}\"", key));
  return member;
}

namespace {

Result<const Json *> requireKind(const Json &object, std::string_view key,
                                 std::string_view objectPath,
                                 Json::value_t kind, std::string_view kindName) {
  Result<const Json *> member = requireMember(object, key, objectPath);
  if (!member)
    return member;
  if ((*member)->type() != kind)
    return errorAt(memberPath(objectPath, key),
                   fmt::format("expected {}, found {}", kindName,
                               (*member)->type_name()));
  return member;
}

} // namespace

Result<const Json *> requireObject(const Json &object, std::string_view key,
                                   std::string_view objectPath) {
  return requireKind(object, key, objectPath, Json::value_t::object,
                     "an object");
}

Result<const Json *> requireArray(const Json &object, std::string_view key,
                                  std::string_view objectPath) {
  return requireKind(object, key, objectPath, Json::value_t::array,
                     "an array");
}

Result<std::string> requireString(const Json &object, std::string_view key,
                                  std::string_view objectPath) {
  Result<const Json *> member = requireKind(
      object, key, objectPath, Json::value_t::string, "a string");
  if (!member)
    return member.error();
  return (*member)->get<std::string>();
}

Result<int64_t> requireInteger(const Json &object, std::string_view key,
                               std::string_view objectPath) {
  Result<const Json *> member = requireMember(object, key, objectPath);
  if (!member)
    return member.error();
  if (!(*member)->is_number_integer())
    return errorAt(memberPath(objectPath, key),
                   fmt::format("expected an integer, found {}",
                               (*member)->type_name()));
  return (*member)->get<int64_t>();
}

Result<std::string> optionalString(const Json &object, std::string_view key,
                                   std::string_view objectPath,
                                   std::string fallback) {
  if (!findMember(object, key))
    return fallback;
  return requireString(object, key, objectPath);
}

Result<bool> optionalBool(const Json &object, std::string_view key,
                          std::string_view objectPath, bool fallback) {
  const Json *member = findMember(object, key);
  if (!member)
    return fallback;
  if (!member->is_boolean())
    return errorAt(memberPath(objectPath, key),
                   fmt::format("expected a boolean, found {}",
                               member->type_name()));
  return member->get<bool>();
}

Result<int64_t> optionalInteger(const Json &object, std::string_view key,
                                std::string_view objectPath,
                                int64_t fallback) {
  if (!findMember(object, key))
    return fallback;
  return requireInteger(object, key, objectPath);
}

Result<std::string> componentType(const Json &component,
                                  std::string_view path) {
  if (!component.is_object())
    return errorAt(path, fmt::format("expected an object, found {}",
                                     component.type_name()));
  return requireString(component, "type", path);
}

Error unsupportedType(std::string_view path, std::string_view type) {
  return errorAt(path, fmt::format("unsupported type \"{}\"", type));
}

Result<int32_t> tokenId(const Json &value, std::string_view path) {
  if (!value.is_number_integer())
    return errorAt(path, fmt::format("expected a token id, found {}",
                                     value.type_name()));
  int64_t id = value.get<int64_t>();
  if (id < 0 || id > std::numeric_limits<int32_t>::max())
    return errorAt(path, fmt::format("token id {} is out of range", id));
  return static_cast<int32_t>(id);
}

} // namespace moe::tokenizer
