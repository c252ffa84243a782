#include "DescribePrompts.h"

#include "Checkpoint.h"

#include "runtime/io/Jsonl.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>

namespace moe {
namespace {

/// How many requests or answers have each length, by ascending length.
using LengthCounts = std::map<int64_t, int64_t>;

/// [[length, count], ...]: a histogram as the planner's lengths file holds it.
nlohmann::json lengthsJson(const LengthCounts &counts) {
  nlohmann::json pairs = nlohmann::json::array();
  for (auto [length, count] : counts)
    pairs.push_back({length, count});
  return pairs;
}

/// The tokens `answer` generated, a line of moe-run's answers or of an
/// OpenAI batch output; none for a failed request or an answer that does
/// not say. Returns why the line is not an answer, empty when it is.
std::string readAnswerLength(const nlohmann::json &answer,
                             std::optional<int64_t> &length) {
  using nlohmann::json;
  if (!answer.is_object())
    return "not a JSON object";
  bool batch = answer.contains("custom_id");
  if (!batch && !answer.contains("finish_reason") && !answer.contains("error"))
    return "not an answer (no \"finish_reason\", \"error\" or \"custom_id\")";
  if (!answer.value("error", json()).is_null() ||
      answer.value("finish_reason", json()) == "error")
    return "";
  json tokens =
      answer.value(batch ? "/response/body/usage/completion_tokens"_json_pointer
                         : "/usage/completion_tokens"_json_pointer,
                   json());
  if (tokens.is_null() && !batch) {
    json ids = answer.value("output_ids", json());
    if (!ids.is_null() && !ids.is_array())
      return "\"output_ids\" must be a list of token ids";
    if (ids.is_array())
      tokens = ids.size();
  }
  if (tokens.is_null())
    return "";
  if (!tokens.is_number_integer() || tokens.get<int64_t>() < 0)
    return fmt::format("\"completion_tokens\" must be a count of tokens, "
                       "not {}",
                       tokens.dump());
  // The planner's lengths start at 1: a sequence takes a step to end.
  length = std::max<int64_t>(1, tokens.get<int64_t>());
  return "";
}

/// The generation lengths an earlier run's answers file observed.
struct ObservedLengths {
  LengthCounts generated;
  int64_t used = 0;
  int64_t skipped = 0; // failed requests, answers without a length
};

Result<ObservedLengths> readObservedLengths(const std::string &path) {
  if (std::filesystem::is_directory(path))
    return makeError("{}: is a directory, not an answers file", path);
  std::ifstream file(path);
  if (!file)
    return makeError("{}: cannot open the answers file", path);
  ObservedLengths observed;
  std::string line;
  for (int64_t lineNumber = 1; std::getline(file, line); ++lineNumber) {
    if (line.find_first_not_of(" \t\r") == std::string::npos)
      continue;
    std::optional<int64_t> length;
    std::string why =
        readAnswerLength(nlohmann::json::parse(line, nullptr, false), length);
    if (!why.empty())
      return makeError("{}:{}: {}", path, lineNumber, why);
    if (length) {
      ++observed.generated[*length];
      ++observed.used;
    } else {
      ++observed.skipped;
    }
  }
  if (file.bad())
    return makeError("{}: read error", path);
  if (observed.used == 0)
    return makeError("{}: holds no answer with a generation length ({} "
                     "failed or without one)",
                     path, observed.skipped);
  return observed;
}

} // namespace

Status describePrompts(const std::string &promptsPath,
                       const std::string &checkpoint, int32_t defaultNewTokens,
                       const std::string &observedAnswers) {
  if (defaultNewTokens <= 0)
    return makeError("--max-new-tokens must be at least 1, not {}",
                     defaultNewTokens);
  std::optional<ObservedLengths> observed;
  if (!observedAnswers.empty()) {
    MOE_ASSIGN_OR_RETURN(observed, readObservedLengths(observedAnswers));
  }
  MOE_ASSIGN_OR_RETURN(std::optional<Tokenizer> tokenizer,
                       checkpointTokenizer(checkpoint));
  CheckpointChat chat = checkpointChat(checkpoint);
  MOE_ASSIGN_OR_RETURN(
      PromptReader prompts,
      PromptReader::open(promptsPath, tokenizer ? &*tokenizer : nullptr,
                         defaultNewTokens, {}, chat.prompting()));
  int64_t requests = 0, failed = 0, longest = 0, total = 0, mostNew = 0;
  int64_t fewestNew = std::numeric_limits<int64_t>::max();
  LengthCounts promptLengths, newTokenCaps;
  while (true) {
    MOE_ASSIGN_OR_RETURN(std::optional<Request> request, prompts.next());
    if (!request)
      break;
    ++requests;
    if (!request->error.empty()) {
      ++failed;
      continue;
    }
    int64_t length = int64_t(request->promptIds.size());
    longest = std::max(longest, length);
    total += length;
    mostNew = std::max<int64_t>(mostNew, request->maxNewTokens);
    fewestNew = std::min<int64_t>(fewestNew, request->maxNewTokens);
    ++promptLengths[length];
    ++newTokenCaps[request->maxNewTokens];
  }
  int64_t runnable = requests - failed;
  nlohmann::json shape{
      {"requests", requests},
      {"malformed_requests", failed},
      {"prompt_tokens_max", longest},
      {"prompt_tokens_mean", runnable ? double(total) / double(runnable) : 0.0},
      {"new_tokens_min", runnable ? fewestNew : 0},
      {"new_tokens_max", mostNew},
      {"prompt_tokens", lengthsJson(promptLengths)},
      {"generated_tokens",
       lengthsJson(observed ? observed->generated : newTokenCaps)}};
  if (observed) {
    shape["observed_answers"] = observed->used;
    shape["observed_skipped"] = observed->skipped;
  }
  std::printf("%s\n", shape.dump().c_str());
  return Status::success();
}

} // namespace moe
