// The request fields both prompt formats share, read from a JSON object the
// same way: token id lists, the new-token budget and stops. Each reader
// returns the error that makes the request fail, empty when the field is
// absent, null or good. And the stop an answer of either format names.
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
// The new tokens asked for under `key` ("max_new_tokens", "max_tokens").
std::string readMaxNewTokens(const nlohmann::json &object,
                             const std::string &key, Request &request);
// "stop" (a non-empty string or a list of them) and "stop_token_ids".
std::string readStops(const nlohmann::json &object, Request &request);
// The alternatives a token's log-probability comes with, 0 to
// kMaxTopLogprobs, under `key`.
std::string readTopLogprobs(const nlohmann::json &object,
                            const std::string &key, Request &request);
// An answer's "stop_reason": the stop string or token id it ended at; null
// when it did not end at a stop.
nlohmann::json stopReason(const Completion &completion);

} // namespace moe
