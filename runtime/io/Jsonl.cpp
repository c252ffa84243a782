#include "runtime/io/Jsonl.h"

#include "runtime/io/OpenAiBatch.h"
#include "runtime/io/RequestFields.h"
#include "runtime/tokenizer/Tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <span>
#include <sys/file.h>
#include <unistd.h>
#include <variant>

namespace moe {
namespace {

bool isBlank(const std::string &line) {
  return line.find_first_not_of(" \t\r") == std::string::npos;
}

std::string systemError() { return std::strerror(errno); }

} // namespace

Result<PromptReader> PromptReader::open(const std::string &path,
                                        const Tokenizer *tokenizer,
                                        int32_t defaultMaxNewTokens,
                                        const SamplingParams &sampling,
                                        ChatPrompting chat) {
  if (std::filesystem::is_directory(path))
    return makeError("{}: is a directory, not a prompts file", path);
  PromptReader reader;
  reader.path_ = path;
  reader.file_ = std::make_unique<std::ifstream>(path);
  if (!*reader.file_)
    return makeError("{}: cannot open the prompts file", path);
  reader.tokenizer_ = tokenizer;
  reader.chat_ = std::move(chat);
  reader.defaultMaxNewTokens_ = defaultMaxNewTokens;
  reader.sampling_ = sampling;
  return reader;
}

bool PromptReader::nextLine(std::string &line) {
  while (std::getline(*file_, line)) {
    ++lineNumber_;
    if (!isBlank(line))
      return true;
  }
  return false;
}

Request PromptReader::parse(const std::string &line) {
  Request request;
  request.index = nextIndex_;
  request.maxNewTokens = defaultMaxNewTokens_;
  request.origin = fmt::format("{}:{}", path_, lineNumber_);
  Echo &echo = echoes_[nextIndex_];
  auto fail = [&](const std::string &what) {
    request.error = request.origin + ": " + what;
    request.promptIds.clear();
    return request;
  };
  // In the order written: a chat template may print a message's or a
  // tool's fields in turn (tojson).
  nlohmann::ordered_json ordered =
      nlohmann::ordered_json::parse(line, nullptr, false);
  if (ordered.is_discarded() || !ordered.is_object())
    return fail("not a JSON object");
  nlohmann::json object(ordered);
  bool batchLine = object.contains("custom_id");
  noteFormat(batchLine);
  if (format_ == PromptFormat::openaiBatch) {
    BatchEcho batch;
    std::string why = batchLine
                          ? parseBatchRequest(ordered, tokenizer_, chat_,
                                              sampling_, request, batch)
                          : "not an OpenAI batch request (no \"custom_id\"), "
                            "as the file's first line is";
    echo.id = batch.customId.dump();
    echo.model = batch.model;
    echo.chat = batch.chat;
    return why.empty() ? request : fail(why);
  }
  if (batchLine)
    return fail("an OpenAI batch request, but the file's first line is not");
  if (auto id = object.find("id"); id != object.end())
    echo.id = id->dump();
  for (const auto &[key, value] : object.items())
    if (key != "input_ids" && key != "prompt" && key != "id" &&
        key != "max_new_tokens" && key != "stop" && key != "stop_token_ids" &&
        key != "logprobs" &&
        std::find(kChatFields.begin(), kChatFields.end(), key) ==
            kChatFields.end())
      return fail(fmt::format("\"{}\" is not supported (a line may hold "
                              "\"input_ids\", \"prompt\" or \"messages\" "
                              "with \"tools\", \"chat_template_kwargs\" and "
                              "\"add_generation_prompt\"; \"id\", "
                              "\"max_new_tokens\", \"stop\", "
                              "\"stop_token_ids\" and \"logprobs\")",
                              key));
  bool chat = object.contains("messages");
  if (chat && (object.contains("input_ids") || object.contains("prompt")))
    return fail("give one of \"input_ids\", \"prompt\" and \"messages\"");
  for (const char *field : kChatFields)
    if (!chat && object.contains(field))
      return fail(fmt::format("\"{}\" belongs to a chat request: it needs "
                              "\"messages\"",
                              field));
  if (chat) {
    if (std::string why = readChatPrompt(ordered, tokenizer_, chat_, request);
        !why.empty())
      return fail(why);
  } else if (auto it = object.find("input_ids"); it != object.end()) {
    if (std::string why = readTokenIds(*it, "input_ids", request.promptIds);
        !why.empty())
      return fail(why);
  } else if (auto text = object.find("prompt"); text != object.end()) {
    if (!text->is_string())
      return fail("\"prompt\" must be a string");
    if (!tokenizer_)
      return fail("\"prompt\" needs a tokenizer.json in the checkpoint; "
                  "give \"input_ids\" instead");
    Result<std::vector<int32_t>> ids =
        tokenizer_->encode(text->get<std::string>(), /*addSpecial=*/true);
    if (!ids.ok())
      return fail(ids.error().message());
    request.promptIds = std::move(*ids);
  } else {
    return fail("expected \"input_ids\", \"prompt\" or \"messages\"");
  }
  if (request.promptIds.empty())
    return fail("the prompt is empty");
  if (std::string why = readMaxNewTokens(object, "max_new_tokens", request);
      !why.empty())
    return fail(why);
  if (std::string why = readStops(object, request); !why.empty())
    return fail(why);
  if (std::string why = readTopLogprobs(object, "logprobs", request);
      !why.empty())
    return fail(why);
  return request;
}

Result<std::optional<Request>> PromptReader::next() {
  std::string line;
  if (nextIndex_ == endIndex_)
    return std::optional<Request>();
  if (!nextLine(line)) {
    if (file_->bad())
      return makeError("{}: read error after line {}", path_, lineNumber_);
    return std::optional<Request>();
  }
  Request request = parse(line);
  ++nextIndex_;
  return std::optional<Request>(std::move(request));
}

void PromptReader::noteFormat(bool batchLine) {
  if (formatKnown_)
    return;
  format_ = batchLine ? PromptFormat::openaiBatch : PromptFormat::moe;
  formatKnown_ = true;
}

Status PromptReader::skip(int64_t count) {
  std::string line;
  for (int64_t skipped = 0; skipped < count; ++skipped, ++nextIndex_) {
    if (!nextLine(line))
      return makeError("{}: has {} requests, fewer than the {} answered "
                       "before: the prompts changed since",
                       path_, nextIndex_, count);
    if (!formatKnown_) {
      nlohmann::json object = nlohmann::json::parse(line, nullptr, false);
      noteFormat(object.is_object() && object.contains("custom_id"));
    }
  }
  return Status::success();
}

Status PromptReader::restrictTo(int64_t first, int64_t end) {
  if (nextIndex_ != 0 || first < 0 || end < first)
    return makeError("{}: requests {} to {} asked after reading began or "
                     "out of order",
                     path_, first, end);
  MOE_RETURN_IF_ERROR(skip(first));
  firstIndex_ = first;
  endIndex_ = end;
  return Status::success();
}

PromptReader::Echo PromptReader::takeEcho(int64_t index) {
  auto it = echoes_.find(index);
  if (it == echoes_.end())
    return {};
  Echo echo = std::move(it->second);
  echoes_.erase(it);
  return echo;
}

Result<AnswerWriter> AnswerWriter::open(const std::string &path,
                                        PromptReader &prompts,
                                        const Tokenizer *tokenizer,
                                        const std::string &job) {
  AnswerWriter writer;
  writer.path_ = path;
  writer.prompts_ = &prompts;
  writer.firstIndex_ = writer.nextIndex_ = prompts.firstIndex();
  writer.tokenizer_ = tokenizer;
  if (path == "-") {
    writer.file_ = std::shared_ptr<std::FILE>(stdout, [](std::FILE *) {});
    return writer;
  }
  if (std::filesystem::is_directory(path))
    return makeError("{}: is a directory, not an answers file", path);
  writer.partial_ = path + ".partial";
  writer.jobPath_ = writer.partial_ + ".job";
  int fd = ::open(writer.partial_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return makeError("{}: cannot create the answers file: {}", writer.partial_,
                     systemError());
  // Closing the file releases the lock, also when the process dies.
  std::FILE *file = ::fdopen(fd, "a+");
  if (!file) {
    ::close(fd);
    return makeError("{}: {}", writer.partial_, systemError());
  }
  writer.file_ = std::shared_ptr<std::FILE>(file, std::fclose);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0)
    return makeError("{}: another moe-run is writing these answers ({} is "
                     "locked)",
                     path, writer.partial_);
  MOE_RETURN_IF_ERROR(writer.resume(job));
  return writer;
}

// A partial file of this job: its complete answers kept, a cut-off last
// line dropped. An empty one starts the job afresh.
Status AnswerWriter::resume(const std::string &job) {
  int fd = ::fileno(file_.get());
  off_t size = ::lseek(fd, 0, SEEK_END);
  if (size < 0)
    return makeError("{}: {}", partial_, systemError());
  if (size == 0) {
    std::ofstream description(jobPath_, std::ios::trunc);
    description << job << "\n";
    description.close();
    if (!description)
      return makeError("{}: cannot write the job's description", jobPath_);
    return Status::success();
  }
  std::ifstream description(jobPath_);
  std::string earlier;
  std::getline(description, earlier);
  if (earlier != job)
    return makeError("{} holds answers of another job ({}); give another "
                     "--output, or delete {} and {} to start this one over",
                     partial_,
                     earlier.empty() ? "no description beside it"
                                     : "different plan, weights, prompts or "
                                       "options",
                     partial_, jobPath_);
  std::ifstream in(partial_, std::ios::binary);
  std::string line;
  off_t kept = 0;
  while (std::getline(in, line) && !in.eof()) {
    nlohmann::json answer = nlohmann::json::parse(line, nullptr, false);
    if (answer.is_discarded() || !answer.is_object())
      break;
    int64_t index = answer.contains("custom_id")
                        ? batchAnswerIndex(answer)
                        : answer.value("index", int64_t(-1));
    if (index != nextIndex_)
      break;
    failed_ += answer.contains("error") && !answer["error"].is_null();
    ++nextIndex_;
    kept += off_t(line.size() + 1);
  }
  if (kept < size && ::ftruncate(fd, kept) != 0)
    return makeError("{}: cannot drop its unfinished last line: {}", partial_,
                     systemError());
  resumed_ = nextIndex_ - firstIndex_;
  return prompts_->skip(resumed_);
}

// The answer's text: its ids decoded, without the stop that ended it.
Result<std::string> AnswerWriter::answerText(const Completion &completion) {
  std::span<const int32_t> ids = completion.outputIds;
  if (std::holds_alternative<int32_t>(completion.stop))
    ids = ids.first(ids.size() - 1);
  Result<std::string> text = tokenizer_->decode(ids, /*skipSpecial=*/true);
  if (!text.ok())
    return text.error().withContext(path_);
  if (std::holds_alternative<std::string>(completion.stop))
    text->resize(std::min(text->size(), completion.textBytes));
  return text;
}

Status AnswerWriter::writeLine(const Completion &completion) {
  PromptReader::Echo echo = prompts_->takeEcho(completion.index);
  bool failed = completion.finishReason == "error";
  failed_ += failed;
  ++finishReasons_[completion.finishReason];
  if (!failed) {
    promptTokens_ += completion.promptTokens;
    completionTokens_ += int64_t(completion.outputIds.size());
  }
  std::string text;
  if (tokenizer_ && !failed) {
    MOE_ASSIGN_OR_RETURN(text, answerText(completion));
  }
  nlohmann::json line;
  if (prompts_->format() == PromptFormat::openaiBatch) {
    auto tokenText = [&](int32_t id) -> std::optional<std::string> {
      if (!tokenizer_)
        return std::nullopt;
      Result<std::string> token =
          tokenizer_->decode(std::span<const int32_t>(&id, 1));
      // U+FFFD stands in for the bytes of a part of a character.
      if (!token.ok() || token->find("\xEF\xBF\xBD") != std::string::npos)
        return std::nullopt;
      return std::move(*token);
    };
    line = batchAnswer(completion,
                       {nlohmann::json::parse(echo.id), echo.model, echo.chat},
                       text, int64_t(std::time(nullptr)), tokenText);
  } else {
    line["index"] = completion.index;
    line["id"] = nlohmann::json::parse(echo.id);
    line["finish_reason"] = completion.finishReason;
    if (failed) {
      line["error"] = completion.error;
    } else {
      line["output_ids"] = completion.outputIds;
      if (nlohmann::json stop = stopReason(completion); !stop.is_null())
        line["stop_reason"] = std::move(stop);
      if (!completion.logprobs.empty()) {
        nlohmann::json &logprobs = line["logprobs"] = nlohmann::json::array();
        for (const TokenLogprobs &token : completion.logprobs) {
          nlohmann::json top = nlohmann::json::array();
          for (auto [id, logprob] : token.top)
            top.push_back({{"id", id}, {"logprob", logprob}});
          logprobs.push_back(
              {{"logprob", token.logprob}, {"top_logprobs", std::move(top)}});
        }
      }
      if (tokenizer_)
        line["text"] = text;
      line["usage"] = {{"prompt_tokens", completion.promptTokens},
                       {"completion_tokens", completion.outputIds.size()}};
    }
  }
  std::string textLine =
      line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
      "\n";
  if (std::fwrite(textLine.data(), 1, textLine.size(), file_.get()) !=
          textLine.size() ||
      std::fflush(file_.get()) != 0)
    return makeError("{}: write failed", partial_.empty() ? path_ : partial_);
  return Status::success();
}

Status AnswerWriter::add(Completion completion) {
  int64_t index = completion.index;
  pending_.emplace(index, std::move(completion));
  for (auto it = pending_.find(nextIndex_); it != pending_.end();
       it = pending_.find(nextIndex_)) {
    MOE_RETURN_IF_ERROR(writeLine(it->second));
    pending_.erase(it);
    ++nextIndex_;
  }
  return Status::success();
}

Status AnswerWriter::commit(bool keepDescription) {
  if (partial_.empty())
    return Status::success();
  if (std::fflush(file_.get()) != 0 || ::fsync(::fileno(file_.get())) != 0)
    return makeError("{}: {}", partial_, systemError());
  std::error_code error;
  std::filesystem::rename(partial_, path_, error);
  if (error)
    return makeError("{}: cannot rename it to {}: {}", partial_, path_,
                     error.message());
  if (keepDescription) {
    std::filesystem::rename(jobPath_, path_ + ".job", error);
    if (error)
      return makeError("{}: cannot rename it to {}.job: {}", jobPath_, path_,
                       error.message());
  } else {
    std::filesystem::remove(jobPath_, error);
  }
  return Status::success();
}

} // namespace moe
