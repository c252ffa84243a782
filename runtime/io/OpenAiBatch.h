// OpenAI Batch API lines (what `vllm run-batch` and hosted batch services
// read and write): a request line {"custom_id", "method": "POST", "url",
// "body"} becomes a Request; an answer becomes {"id", "custom_id",
// "response": {"status_code", "request_id", "body"}, "error"}.
//
// "/v1/completions" bodies are supported: "prompt" (text, with a
// tokenizer, or token ids; one prompt), "max_tokens", "temperature",
// "top_p", "top_k", "seed", "stop", "stop_token_ids", "logprobs" (the
// alternatives a token comes with, 0 to 20), "n" (1), "stream" (false),
// "model" and "user" (echoed and ignored). "/v1/chat/completions" bodies
// hold "messages" instead of "prompt", rendered by the checkpoint's chat
// template with their "tools", "chat_template_kwargs" and
// "add_generation_prompt" (ChatPrompt.h), may give the budget as
// "max_completion_tokens", and ask for log-probabilities with "logprobs"
// (true) and "top_logprobs" (0 to 20); their answers are chat completions.
// Any other field is an error naming it. Log-probabilities are the
// model's, before temperature, top-k or top-p (Sampler.h).
#pragma once

#include "runtime/engine/Engine.h"
#include "runtime/io/ChatPrompt.h"

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>

namespace moe {

class Tokenizer;

// What an answer line repeats of its request.
struct BatchEcho {
  nlohmann::json customId;
  std::string model;
  bool chat = false; // a /v1/chat/completions request
};

// Fills `request` from one batch request line (an object with "custom_id");
// returns the error that makes it a failed request, empty when it can run.
// `jobSampling` is what fields the body leaves out take.
std::string parseBatchRequest(const nlohmann::ordered_json &line,
                              const Tokenizer *tokenizer,
                              const ChatPrompting &chat,
                              const SamplingParams &jobSampling,
                              Request &request, BatchEcho &echo);

// The text of one token; nothing without a tokenizer or when the token is
// part of a character (a byte token): such a token is named
// "token_id:<id>", with null "bytes".
using TokenText = std::function<std::optional<std::string>(int32_t id)>;

// The answer line of `completion`; `text` is its answer's text (empty
// without a tokenizer), `created` the Unix time it is stamped with,
// `tokenText` names the tokens of its log-probabilities.
nlohmann::json batchAnswer(const Completion &completion, const BatchEcho &echo,
                           const std::string &text, int64_t created,
                           const TokenText &tokenText);

// The request index of an answer line written by batchAnswer, or -1.
int64_t batchAnswerIndex(const nlohmann::json &answer);

} // namespace moe
