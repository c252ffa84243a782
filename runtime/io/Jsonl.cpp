#include "runtime/io/Jsonl.h"

#include "runtime/tokenizer/Tokenizer.h"

#include <nlohmann/json.hpp>

namespace moe {

Result<PromptReader> PromptReader::open(const std::string &path,
                                        const Tokenizer *tokenizer,
                                        int32_t defaultMaxNewTokens) {
  PromptReader reader;
  reader.path_ = path;
  reader.file_ = std::make_unique<std::ifstream>(path);
  if (!*reader.file_)
    return makeError("{}: cannot open the prompts file", path);
  reader.tokenizer_ = tokenizer;
  reader.defaultMaxNewTokens_ = defaultMaxNewTokens;
  return reader;
}

Result<std::optional<Request>> PromptReader::next() {
  std::string line;
  while (std::getline(*file_, line)) {
    ++lineNumber_;
    if (line.find_first_not_of(" \t\r") == std::string::npos)
      continue;
    auto fail = [&](const std::string &what) {
      return makeError("{}:{}: {}", path_, lineNumber_, what);
    };
    nlohmann::json object = nlohmann::json::parse(line, nullptr, false);
    if (object.is_discarded() || !object.is_object())
      return fail("not a JSON object");
    Request request;
    request.index = nextIndex_;
    request.maxNewTokens = defaultMaxNewTokens_;
    if (auto it = object.find("input_ids"); it != object.end()) {
      if (!it->is_array())
        return fail("\"input_ids\" must be a list of token ids");
      for (const nlohmann::json &id : *it) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
            id.get<int64_t>() > INT32_MAX)
          return fail("\"input_ids\" must hold non-negative integers");
        request.promptIds.push_back(id.get<int32_t>());
      }
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
      return fail("expected \"input_ids\" or \"prompt\"");
    }
    if (request.promptIds.empty())
      return fail("the prompt is empty");
    if (auto it = object.find("max_new_tokens"); it != object.end()) {
      if (!it->is_number_integer() || it->get<int64_t>() <= 0)
        return fail("\"max_new_tokens\" must be a positive integer");
      request.maxNewTokens = it->get<int32_t>();
    }
    auto id = object.find("id");
    ids_[nextIndex_] = id == object.end() ? "null" : id->dump();
    ++nextIndex_;
    return std::optional<Request>(std::move(request));
  }
  if (file_->bad())
    return makeError("{}: read error after line {}", path_, lineNumber_);
  return std::optional<Request>();
}

Result<AnswerWriter> AnswerWriter::open(const std::string &path,
                                        const PromptReader &prompts,
                                        const Tokenizer *tokenizer) {
  AnswerWriter writer;
  writer.path_ = path;
  if (path == "-") {
    writer.file_ = std::shared_ptr<std::FILE>(stdout, [](std::FILE *) {});
  } else {
    std::FILE *file = std::fopen(path.c_str(), "w");
    if (!file)
      return makeError("{}: cannot create the answers file", path);
    writer.file_ = std::shared_ptr<std::FILE>(file, std::fclose);
  }
  writer.prompts_ = &prompts;
  writer.tokenizer_ = tokenizer;
  return writer;
}

Status AnswerWriter::writeLine(const Completion &completion) {
  nlohmann::json line;
  line["index"] = completion.index;
  line["id"] = nlohmann::json::parse(prompts_->idOf(completion.index));
  line["output_ids"] = completion.outputIds;
  line["finish_reason"] = completion.finishReason;
  if (tokenizer_) {
    Result<std::string> text =
        tokenizer_->decode(completion.outputIds, /*skipSpecial=*/true);
    if (!text.ok())
      return text.error().withContext(path_);
    line["text"] = *text;
  }
  std::string textLine = line.dump(-1, ' ', false,
                                   nlohmann::json::error_handler_t::replace) +
                         "\n";
  if (std::fwrite(textLine.data(), 1, textLine.size(), file_.get()) !=
          textLine.size() ||
      std::fflush(file_.get()) != 0)
    return makeError("{}: write failed", path_);
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

} // namespace moe
