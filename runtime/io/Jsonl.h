// Prompts in, answers out, one JSON object per line. Prompts are read one
// at a time as slots free up (a pipe works: nothing reads ahead); answers
// are written in input order, each line flushed as soon as it and every
// earlier one are done. A request that cannot run gets an error line in its
// place and the job goes on.
#pragma once

#include "runtime/engine/Engine.h"
#include "runtime/io/ChatPrompt.h"
#include "runtime/support/Result.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>

namespace moe {

class Tokenizer;

/// The two kinds of prompts file, told apart by the first line; answers
/// come in the same kind.
enum class PromptFormat {
  moe,         // the lines PromptReader describes
  openaiBatch, // OpenAI Batch API request lines (OpenAiBatch.h)
};

/// Lines: {"input_ids": [1, 2, 3]}, {"prompt": "text"} (needs a
/// tokenizer) or {"messages": [...]} (a conversation, with "tools",
/// "chat_template_kwargs" and "add_generation_prompt" if wanted: needs the
/// checkpoint's chat template, ChatPrompt.h), with optional "id" (echoed in
/// the answer), "max_new_tokens",
/// "stop" (a string or a list: generation ends once the text holds one) and
/// "stop_token_ids"; or OpenAI Batch API request lines when the first line
/// has a "custom_id". Blank lines are skipped; every other line is one
/// request, numbered from 0, and a line that is malformed or asks for what
/// is not supported is a request carrying its error.
class PromptReader {
public:
  /// `sampling` is the job's, which batch requests may override; `chat`
  /// renders the requests that hold "messages".
  static Result<PromptReader> open(const std::string &path,
                                   const Tokenizer *tokenizer,
                                   int32_t defaultMaxNewTokens,
                                   const SamplingParams &sampling = {},
                                   ChatPrompting chat = {});
  PromptReader(PromptReader &&) = default;

  /// The next request, nothing at the end, or an error when the file cannot
  /// be read.
  Result<std::optional<Request>> next();
  /// Passes over the next `count` requests without reading them (those a
  /// resumed job has answered).
  Status skip(int64_t count);
  /// Reads requests `first` to `end` - 1 only (a shard of the job), numbered
  /// as in the whole file; before the first next().
  Status restrictTo(int64_t first, int64_t end);
  /// The number of the first request it reads (0 unless restricted).
  int64_t firstIndex() const { return firstIndex_; }
  /// What the answer of request `index` repeats of it (its "id" or
  /// "custom_id", a batch body's "model"), once: the reader forgets it.
  struct Echo {
    std::string id = "null"; // as JSON text
    std::string model;
    bool chat = false; // a batch chat request, answered as a chat completion
  };
  Echo takeEcho(int64_t index);
  /// The file's kind (moe until a line is read).
  PromptFormat format() const { return format_; }

private:
  PromptReader() = default;
  /// The request of one non-blank line; its error when the line is bad.
  Request parse(const std::string &line);
  /// The file's kind, from its first line: a batch line or not.
  void noteFormat(bool batchLine);
  bool nextLine(std::string &line);

  std::string path_;
  std::unique_ptr<std::ifstream> file_;
  const Tokenizer *tokenizer_ = nullptr;
  ChatPrompting chat_;
  int32_t defaultMaxNewTokens_ = 0;
  SamplingParams sampling_;
  PromptFormat format_ = PromptFormat::moe;
  bool formatKnown_ = false;
  int64_t lineNumber_ = 0;
  std::map<int64_t, Echo> echoes_;
  int64_t firstIndex_ = 0, nextIndex_ = 0;
  int64_t endIndex_ = -1; // -1: the whole file
};

/// Answers in input order, one line each, of the prompts file's kind (an
/// OpenAI batch file's: OpenAiBatch.h): {"index", "id", "output_ids",
/// "finish_reason"[, "stop_reason"][, "text"]}, or {"index", "id", "error",
/// "finish_reason": "error"} for a request that could not run. A request
/// ended by a stop ("finish_reason": "stop") names it in "stop_reason" (the
/// string or the token id); its "text" ends before the stop, its
/// "output_ids" hold every id generated.
///
/// A file (not "-", stdout) is never emptied or left half-written: answers
/// go to OUTPUT.partial beside it, locked against a second job writing
/// there, and it becomes OUTPUT by rename once every request is answered
/// (commit). A job that stops before (killed, interrupted, failed) leaves
/// OUTPUT.partial and OUTPUT.partial.job, the description of the job; the
/// same job started again resumes: its complete lines are kept (a cut-off
/// last line is dropped), their requests skipped. A different job finding
/// them is refused.
class AnswerWriter {
public:
  /// `job` describes what decides the answers (plan, weights, prompts,
  /// sampling, lengths); equal descriptions may resume each other.
  static Result<AnswerWriter> open(const std::string &path,
                                   PromptReader &prompts,
                                   const Tokenizer *tokenizer,
                                   const std::string &job);
  AnswerWriter(AnswerWriter &&) = default;

  Status add(Completion completion);
  /// Answers written, those resumed included.
  int64_t written() const { return nextIndex_ - firstIndex_; }
  /// Answers kept from an earlier run of the job.
  int64_t resumed() const { return resumed_; }
  /// Error lines among the written answers.
  int64_t failed() const { return failed_; }
  /// The answers this run wrote, by finish reason ("eos", "stop", ...).
  const std::map<std::string, int64_t> &finishReasons() const {
    return finishReasons_;
  }
  /// Prompt and new tokens of the answers this run wrote (error lines
  /// hold none), as each answer's "usage" counts them.
  int64_t promptTokens() const { return promptTokens_; }
  int64_t completionTokens() const { return completionTokens_; }
  /// Where unfinished answers are kept ("" for stdout).
  const std::string &partialPath() const { return partial_; }
  /// Every request is answered: OUTPUT.partial becomes OUTPUT. With
  /// `keepDescription` the job's description stays beside it as OUTPUT.job
  /// (a shard's, which tells a later run that it is answered).
  Status commit(bool keepDescription = false);

private:
  AnswerWriter() = default;
  Status resume(const std::string &job);
  Result<std::string> answerText(const Completion &completion);
  Status writeLine(const Completion &completion);

  std::string path_, partial_, jobPath_;
  // The partial file (its lock held while it is open), or stdout.
  std::shared_ptr<std::FILE> file_;
  PromptReader *prompts_ = nullptr;
  const Tokenizer *tokenizer_ = nullptr;
  std::map<int64_t, Completion> pending_;
  std::map<std::string, int64_t> finishReasons_;
  int64_t firstIndex_ = 0, nextIndex_ = 0, resumed_ = 0, failed_ = 0;
  int64_t promptTokens_ = 0, completionTokens_ = 0;
};

} // namespace moe
