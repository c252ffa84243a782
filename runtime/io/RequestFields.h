// The request fields both prompt formats share, read from a JSON object the
// same way: token id lists and stops. Each returns the error that makes the
// request fail, empty when the field is absent, null or good.
#pragma once

#include "runtime/engine/Engine.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace moe {

bool isTokenId(const nlohmann::json &id);
// `ids`, a list of token ids, appended to `out`; `field` names it.
std::string readTokenIds(const nlohmann::json &ids, const std::string &field,
                         std::vector<int32_t> &out);
// "stop" (a non-empty string or a list of them) and "stop_token_ids".
std::string readStops(const nlohmann::json &object, Request &request);

} // namespace moe
