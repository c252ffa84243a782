#include "runtime/io/OpenAiBatch.h"

#include "runtime/io/RequestFields.h"
#include "runtime/tokenizer/Tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <string_view>

namespace moe {
namespace {

constexpr std::string_view kCompletions = "/v1/completions";
constexpr std::string_view kChatCompletions = "/v1/chat/completions";

// The prompt of a completions body: text or token ids, alone or as the one
// element of a list.
std::string readPrompt(const nlohmann::json &prompt, const Tokenizer *tokenizer,
                       Request &request) {
  nlohmann::json one = prompt;
  if (prompt.is_array() && !prompt.empty() &&
      (prompt[0].is_string() || prompt[0].is_array())) {
    if (prompt.size() != 1)
      return "\"prompt\" holds several prompts; send one request each";
    one = prompt[0];
  }
  if (one.is_string()) {
    if (!tokenizer)
      return "a text \"prompt\" needs a tokenizer.json in the checkpoint; "
             "give token ids instead";
    Result<std::vector<int32_t>> ids =
        tokenizer->encode(one.get<std::string>(), /*addSpecial=*/true);
    if (!ids.ok())
      return ids.error().message();
    request.promptIds = std::move(*ids);
  } else if (one.is_array()) {
    if (std::string why = readTokenIds(one, "prompt", request.promptIds);
        !why.empty())
      return why;
  } else {
    return "\"prompt\" must be text or a list of token ids";
  }
  return request.promptIds.empty() ? "the prompt is empty" : "";
}

// The body's sampling fields over the job's.
std::string readSampling(const nlohmann::json &body,
                         const SamplingParams &jobSampling, Request &request) {
  SamplingParams sampling = jobSampling;
  bool own = false;
  auto number = [&](const char *key, double low, double high, bool openLow,
                    float &into) -> std::string {
    auto it = body.find(key);
    if (it == body.end() || it->is_null())
      return "";
    double value = it->is_number() ? it->get<double>() : -1e300;
    if (!it->is_number() || value < low || value > high ||
        (openLow && value == low))
      return fmt::format("\"{}\" must be a number in {}{}, {}]", key,
                         openLow ? "(" : "[", low, high);
    into = float(value);
    own = true;
    return "";
  };
  for (std::string why :
       {number("temperature", 0, 2, false, sampling.temperature),
        number("top_p", 0, 1, true, sampling.topP)})
    if (!why.empty())
      return why;
  if (auto it = body.find("top_k"); it != body.end() && !it->is_null()) {
    // vLLM's -1 is no limit, as 0 here.
    if (!it->is_number_integer() || it->get<int64_t>() < -1 ||
        it->get<int64_t>() > INT32_MAX)
      return "\"top_k\" must be an integer from -1 (no limit)";
    sampling.topK = std::max<int32_t>(0, it->get<int32_t>());
    own = true;
  }
  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer())
      return "\"seed\" must be an integer";
    sampling.seed = it->is_number_unsigned() ? it->get<uint64_t>()
                                             : uint64_t(it->get<int64_t>());
    request.seeded = own = true;
  }
  if (own)
    request.sampling = sampling;
  return "";
}

// Completions: "logprobs", the alternatives a token comes with. Chat:
// "logprobs" (true) and "top_logprobs", the alternatives (0 without).
std::string readLogprobs(const nlohmann::json &body, bool chat,
                         Request &request) {
  if (!chat)
    return readTopLogprobs(body, "logprobs", request);
  auto wanted = body.find("logprobs");
  bool on = wanted != body.end() && *wanted == true;
  if (wanted != body.end() && !wanted->is_null() && !wanted->is_boolean())
    return "\"logprobs\" must be true or false";
  if (!on) {
    auto top = body.find("top_logprobs");
    return top == body.end() || top->is_null()
               ? ""
               : "\"top_logprobs\" needs \"logprobs\": true";
  }
  request.topLogprobs = 0;
  return readTopLogprobs(body, "top_logprobs", request);
}

// A token as the answer names it: its text, or "token_id:<id>".
std::string tokenName(const TokenText &tokenText, int32_t id) {
  return tokenText(id).value_or(fmt::format("token_id:{}", id));
}

// A chat choice's "logprobs": {"content": [{"token", "logprob", "bytes",
// "top_logprobs"}], "refusal": null}.
nlohmann::json chatLogprobs(const Completion &completion,
                            const TokenText &tokenText) {
  auto entry = [&](int32_t id, float logprob) {
    std::optional<std::string> text = tokenText(id);
    nlohmann::json bytes = nullptr;
    if (text) {
      bytes = nlohmann::json::array();
      for (char c : *text)
        bytes.push_back(int(static_cast<unsigned char>(c)));
    }
    return nlohmann::json{
        {"token", text.value_or(fmt::format("token_id:{}", id))},
        {"logprob", logprob},
        {"bytes", std::move(bytes)}};
  };
  nlohmann::json content = nlohmann::json::array();
  for (size_t i = 0; i < completion.logprobs.size(); ++i) {
    const TokenLogprobs &token = completion.logprobs[i];
    nlohmann::json item = entry(completion.outputIds[i], token.logprob);
    item["top_logprobs"] = nlohmann::json::array();
    for (auto [id, logprob] : token.top)
      item["top_logprobs"].push_back(entry(id, logprob));
    content.push_back(std::move(item));
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

// A completion choice's "logprobs": {"tokens", "token_logprobs",
// "top_logprobs" (one {token: logprob} a token), "text_offset" (where each
// token's name starts in the concatenated names, in bytes)}.
nlohmann::json completionLogprobs(const Completion &completion,
                                  const TokenText &tokenText) {
  nlohmann::json tokens = nlohmann::json::array(),
                 values = nlohmann::json::array(),
                 tops = nlohmann::json::array(),
                 offsets = nlohmann::json::array();
  size_t offset = 0;
  for (size_t i = 0; i < completion.logprobs.size(); ++i) {
    std::string text = tokenName(tokenText, completion.outputIds[i]);
    offsets.push_back(offset);
    offset += text.size();
    tokens.push_back(std::move(text));
    values.push_back(completion.logprobs[i].logprob);
    nlohmann::json top = nlohmann::json::object();
    for (auto [id, logprob] : completion.logprobs[i].top)
      top[tokenName(tokenText, id)] = logprob;
    tops.push_back(std::move(top));
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(values)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

std::string readBody(const nlohmann::ordered_json &orderedBody,
                     const Tokenizer *tokenizer, const ChatPrompting &chat,
                     const SamplingParams &jobSampling, Request &request,
                     BatchEcho &echo) {
  static constexpr std::array kShared = {
      "model", "max_tokens", "temperature",    "top_p",  "top_k", "seed",
      "stop",  "n",          "stop_token_ids", "stream", "user",  "logprobs"};
  auto listed = [](const auto &names, const std::string &key) {
    return std::find(names.begin(), names.end(), key) != names.end();
  };
  nlohmann::json body(orderedBody);
  for (const auto &[key, value] : body.items()) {
    bool known =
        listed(kShared, key) ||
        (echo.chat ? listed(kChatFields, key) ||
                         key == "max_completion_tokens" || key == "top_logprobs"
                   : key == "prompt");
    if (!known)
      return fmt::format("body field \"{}\" is not supported{}", key,
                         !echo.chat && key == "messages"
                             ? fmt::format(" by {}: send it to {}",
                                           kCompletions, kChatCompletions)
                             : "");
  }
  if (auto it = body.find("model"); it != body.end() && it->is_string())
    echo.model = it->get<std::string>();
  if (auto it = body.find("n"); it != body.end() && !it->is_null() &&
                                (!it->is_number_integer() || *it != 1))
    return "\"n\" must be 1: send one request per completion";
  if (auto it = body.find("stream");
      it != body.end() && !it->is_null() && *it != false)
    return "\"stream\" must be false in a batch";
  if (std::string why = readLogprobs(body, echo.chat, request); !why.empty())
    return why;
  if (echo.chat) {
    if (!body.contains("messages"))
      return "the body has no \"messages\"";
    if (std::string why = readChatPrompt(orderedBody, tokenizer, chat, request);
        !why.empty())
      return why;
  } else {
    auto prompt = body.find("prompt");
    if (prompt == body.end())
      return "the body has no \"prompt\"";
    if (std::string why = readPrompt(*prompt, tokenizer, request); !why.empty())
      return why;
  }
  // OpenAI's chat API names the budget max_completion_tokens now.
  bool completionTokens = echo.chat && body.contains("max_completion_tokens");
  if (std::string why = readMaxNewTokens(
          body, completionTokens ? "max_completion_tokens" : "max_tokens",
          request);
      !why.empty())
    return why;
  if (std::string why = readSampling(body, jobSampling, request); !why.empty())
    return why;
  return readStops(body, request);
}

} // namespace

std::string parseBatchRequest(const nlohmann::ordered_json &line,
                              const Tokenizer *tokenizer,
                              const ChatPrompting &chat,
                              const SamplingParams &jobSampling,
                              Request &request, BatchEcho &echo) {
  echo.customId = nlohmann::json(line.at("custom_id"));
  for (const auto &[key, value] : line.items())
    if (key != "custom_id" && key != "method" && key != "url" && key != "body")
      return fmt::format("\"{}\" is not supported (a batch line holds "
                         "\"custom_id\", \"method\", \"url\" and \"body\")",
                         key);
  if (!echo.customId.is_string())
    return "\"custom_id\" must be a string";
  if (line.value("method", "") != "POST")
    return "\"method\" must be \"POST\"";
  std::string url = line.value("url", "");
  if (url != kCompletions && url != kChatCompletions)
    return fmt::format("\"url\" must be \"{}\" or \"{}\"", kCompletions,
                       kChatCompletions);
  echo.chat = url == kChatCompletions;
  auto body = line.find("body");
  if (body == line.end() || !body->is_object())
    return "\"body\" must be an object";
  return readBody(*body, tokenizer, chat, jobSampling, request, echo);
}

nlohmann::json batchAnswer(const Completion &completion, const BatchEcho &echo,
                           const std::string &text, int64_t created,
                           const TokenText &tokenText) {
  nlohmann::json line{{"id", fmt::format("batch_req_{}", completion.index)},
                      {"custom_id", echo.customId}};
  if (completion.finishReason == "error") {
    line["response"] = nullptr;
    line["error"] = {{"code", "invalid_request"},
                     {"message", completion.error}};
    return line;
  }
  // OpenAI's reasons: a stop or EOS is "stop", a token budget "length".
  bool stopped =
      completion.finishReason == "eos" || completion.finishReason == "stop";
  nlohmann::json choice{{"index", 0}};
  if (echo.chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else
    choice["text"] = text;
  choice["logprobs"] = completion.logprobs.empty() ? nlohmann::json(nullptr)
                       : echo.chat ? chatLogprobs(completion, tokenText)
                                   : completionLogprobs(completion, tokenText);
  choice["finish_reason"] = stopped ? "stop" : "length";
  choice["token_ids"] = completion.outputIds;
  if (nlohmann::json stop = stopReason(completion); !stop.is_null())
    choice["stop_reason"] = std::move(stop);
  int64_t generated = int64_t(completion.outputIds.size());
  nlohmann::json body{
      {"id",
       fmt::format("{}-{}", echo.chat ? "chatcmpl" : "cmpl", completion.index)},
      {"object", echo.chat ? "chat.completion" : "text_completion"},
      {"created", created},
      {"model", echo.model},
      {"choices", nlohmann::json::array({choice})},
      {"usage",
       {{"prompt_tokens", completion.promptTokens},
        {"completion_tokens", generated},
        {"total_tokens", completion.promptTokens + generated}}}};
  line["response"] = {{"status_code", 200},
                      {"request_id", fmt::format("req_{}", completion.index)},
                      {"body", std::move(body)}};
  line["error"] = nullptr;
  return line;
}

int64_t batchAnswerIndex(const nlohmann::json &answer) {
  constexpr std::string_view kPrefix = "batch_req_";
  auto id = answer.find("id");
  if (id == answer.end() || !id->is_string())
    return -1;
  std::string text = id->get<std::string>();
  if (!text.starts_with(kPrefix) || text.size() == kPrefix.size() ||
      text.size() > kPrefix.size() + 18 ||
      !std::all_of(text.begin() + kPrefix.size(), text.end(),
                   [](char c) { return c >= '0' && c <= '9'; }))
    return -1;
  return std::stoll(text.substr(kPrefix.size()));
}

} // namespace moe
