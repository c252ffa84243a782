#include "runtime/io/RequestFields.h"

#include <fmt/format.h>

#include <variant>

namespace moe {

bool isTokenId(const nlohmann::json &id) {
  return id.is_number_integer() && id.get<int64_t>() >= 0 &&
         id.get<int64_t>() <= INT32_MAX;
}

std::string readTokenIds(const nlohmann::json &ids, const std::string &field,
                         std::vector<int32_t> &out) {
  if (!ids.is_array())
    return fmt::format("\"{}\" must be a list of token ids", field);
  for (const nlohmann::json &id : ids) {
    if (!isTokenId(id))
      return fmt::format("\"{}\" must hold non-negative integers", field);
    out.push_back(id.get<int32_t>());
  }
  return "";
}

std::string readMaxNewTokens(const nlohmann::json &object,
                             const std::string &key, Request &request) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null())
    return "";
  if (!it->is_number_integer() || it->get<int64_t>() <= 0 ||
      it->get<int64_t>() > INT32_MAX)
    return fmt::format("\"{}\" must be an integer from 1 to 2^31 - 1", key);
  request.maxNewTokens = it->get<int32_t>();
  return "";
}

std::string readStops(const nlohmann::json &object, Request &request) {
  if (auto it = object.find("stop"); it != object.end() && !it->is_null()) {
    // A string or a list of them, as OpenAI's and vLLM's "stop".
    nlohmann::json stops = it->is_string() ? nlohmann::json::array({*it}) : *it;
    if (!stops.is_array())
      return "\"stop\" must be a non-empty string or a list of them";
    for (const nlohmann::json &stop : stops) {
      if (!stop.is_string() || stop.get<std::string>().empty())
        return "\"stop\" must be a non-empty string or a list of them";
      request.stopStrings.push_back(stop.get<std::string>());
    }
  }
  if (auto it = object.find("stop_token_ids");
      it != object.end() && !it->is_null())
    return readTokenIds(*it, "stop_token_ids", request.stopTokenIds);
  return "";
}

std::string readTopLogprobs(const nlohmann::json &object,
                            const std::string &key, Request &request) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null())
    return "";
  if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
      it->get<int64_t>() > kMaxTopLogprobs)
    return fmt::format("\"{}\" must be an integer from 0 to {}", key,
                       kMaxTopLogprobs);
  request.topLogprobs = it->get<int32_t>();
  return "";
}

nlohmann::json stopReason(const Completion &completion) {
  if (const auto *stop = std::get_if<std::string>(&completion.stop))
    return *stop;
  if (const auto *id = std::get_if<int32_t>(&completion.stop))
    return *id;
  return nullptr;
}

} // namespace moe
