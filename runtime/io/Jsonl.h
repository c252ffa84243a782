// Prompts in, answers out, one JSON object per line. Prompts are read one
// at a time as slots free up; answers are written in input order, each line
// flushed as soon as it and every earlier one are done.
#pragma once

#include "runtime/engine/Engine.h"
#include "runtime/support/Result.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>

namespace moe {

class Tokenizer;

/// Lines: {"input_ids": [1, 2, 3]} or {"prompt": "text"} (needs a
/// tokenizer), with optional "id" (echoed in the answer) and
/// "max_new_tokens". Blank lines are skipped.
class PromptReader {
public:
  static Result<PromptReader> open(const std::string &path,
                                   const Tokenizer *tokenizer,
                                   int32_t defaultMaxNewTokens);
  PromptReader(PromptReader &&) = default;

  /// The next request, nothing at the end, or an error naming file and line.
  Result<std::optional<Request>> next();
  /// The "id" of request `index` as JSON text ("null" when absent).
  const std::string &idOf(int64_t index) const { return ids_.at(index); }

private:
  PromptReader() = default;

  std::string path_;
  std::unique_ptr<std::ifstream> file_;
  const Tokenizer *tokenizer_ = nullptr;
  int32_t defaultMaxNewTokens_ = 0;
  int64_t lineNumber_ = 0;
  std::map<int64_t, std::string> ids_;
  int64_t nextIndex_ = 0;
};

class AnswerWriter {
public:
  /// `path` "-" writes to stdout.
  static Result<AnswerWriter> open(const std::string &path,
                                   const PromptReader &prompts,
                                   const Tokenizer *tokenizer);
  AnswerWriter(AnswerWriter &&) = default;

  Status add(Completion completion);
  int64_t written() const { return nextIndex_; }

private:
  AnswerWriter() = default;
  Status writeLine(const Completion &completion);

  std::string path_;
  std::shared_ptr<std::FILE> file_;
  const PromptReader *prompts_ = nullptr;
  const Tokenizer *tokenizer_ = nullptr;
  std::map<int64_t, Completion> pending_;
  int64_t nextIndex_ = 0;
};

} // namespace moe
