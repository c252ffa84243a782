#include "runtime/io/Jsonl.h"
#include "runtime/io/OpenAiBatch.h"
#include "runtime/tokenizer/Tokenizer.h"
#include "test/runtime/ScratchDirectory.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace moe {
namespace {

using testing::ScratchDirectory;

std::string writeFile(const ScratchDirectory &scratch, const std::string &name,
                      const std::string &text) {
  std::string path = scratch.file(name);
  std::ofstream(path) << text;
  return path;
}

std::string readFile(const std::string &path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(PromptReader, ReadsIdsLimitsAndIds) {
  ScratchDirectory scratch;
  std::string path = writeFile(
      scratch, "ok.jsonl",
      "{\"input_ids\": [1, 2, 3]}\n\n"
      "{\"id\": \"q7\", \"input_ids\": [4], \"max_new_tokens\": 2}\n");
  auto reader = PromptReader::open(path, nullptr, 16);
  ASSERT_TRUE(reader.ok());
  auto first = reader->next();
  ASSERT_TRUE(first.ok() && *first);
  EXPECT_EQ((*first)->promptIds, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ((*first)->maxNewTokens, 16);
  auto second = reader->next();
  ASSERT_TRUE(second.ok() && *second);
  EXPECT_EQ((*second)->index, 1);
  EXPECT_EQ((*second)->maxNewTokens, 2);
  EXPECT_EQ(reader->takeEcho(1).id, "\"q7\"");
  EXPECT_EQ(reader->takeEcho(1).id, "null") << "taken once";
  auto end = reader->next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(*end);
}

// A bad line is a request carrying its error, named by file and line; the
// lines after it are read as usual.
void expectLineError(const std::string &line, const std::string &message) {
  ScratchDirectory scratch;
  std::string path =
      writeFile(scratch, "bad.jsonl",
                "{\"input_ids\": [1]}\n" + line + "\n{\"input_ids\": [2]}\n");
  auto reader = PromptReader::open(path, nullptr, 4);
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE(reader->next().ok());
  auto bad = reader->next();
  ASSERT_TRUE(bad.ok() && *bad);
  EXPECT_EQ((*bad)->index, 1);
  EXPECT_EQ((*bad)->error, path + ":2: " + message);
  auto after = reader->next();
  ASSERT_TRUE(after.ok() && *after);
  EXPECT_EQ((*after)->index, 2);
  EXPECT_EQ((*after)->promptIds, std::vector<int32_t>{2});
  EXPECT_EQ((*after)->origin, path + ":3");
}

TEST(PromptReader, MalformedLinesAreRequestsCarryingTheirError) {
  expectLineError("{\"input_ids\": [1, 2", "not a JSON object");
  expectLineError("[1, 2]", "not a JSON object");
  expectLineError("{\"input_ids\": \"12\"}",
                  "\"input_ids\" must be a list of token ids");
  expectLineError("{\"input_ids\": [1, -2]}",
                  "\"input_ids\" must hold non-negative integers");
  expectLineError("{\"input_ids\": []}", "the prompt is empty");
  const std::string fields =
      "(a line may hold \"input_ids\", \"prompt\" or \"messages\" with "
      "\"tools\", \"chat_template_kwargs\" and \"add_generation_prompt\"; "
      "\"id\", \"max_new_tokens\", \"stop\", \"stop_token_ids\" and "
      "\"logprobs\")";
  expectLineError("{\"text\": \"hi\"}", "\"text\" is not supported " + fields);
  expectLineError("{\"input_ids\": [1], \"temperature\": 0.5}",
                  "\"temperature\" is not supported " + fields);
  for (const char *stop : {"\"\"", "3", "[\"a\", 3]", "{}", "[\"\"]"})
    expectLineError(fmt::format("{{\"input_ids\": [1], \"stop\": {}}}", stop),
                    "\"stop\" must be a non-empty string or a list of them");
  expectLineError("{\"input_ids\": [1], \"stop_token_ids\": 5}",
                  "\"stop_token_ids\" must be a list of token ids");
  expectLineError("{\"input_ids\": [1], \"stop_token_ids\": [5, -1]}",
                  "\"stop_token_ids\" must hold non-negative integers");
  expectLineError("{\"input_ids\": [1], \"logprobs\": -1}",
                  "\"logprobs\" must be an integer from 0 to 20");
  expectLineError("{\"id\": 3}",
                  "expected \"input_ids\", \"prompt\" or \"messages\"");
  expectLineError("{\"prompt\": \"hi\"}",
                  "\"prompt\" needs a tokenizer.json in the checkpoint; give "
                  "\"input_ids\" instead");
  for (const char *tokens : {"0", "-1", "2147483648", "1e3"})
    expectLineError(
        fmt::format("{{\"input_ids\": [1], \"max_new_tokens\": {}}}", tokens),
        "\"max_new_tokens\" must be an integer from 1 to 2^31 - 1");
}

TEST(PromptReader, ReadsStops) {
  ScratchDirectory scratch;
  std::string path = writeFile(scratch, "stops.jsonl",
                               "{\"input_ids\": [1], \"stop\": \"\\n\\n\"}\n"
                               "{\"input_ids\": [1], \"stop\": [\"a\", \"é\"], "
                               "\"stop_token_ids\": [7, 9]}\n");
  auto reader = PromptReader::open(path, nullptr, 4);
  ASSERT_TRUE(reader.ok());
  auto first = reader->next();
  ASSERT_TRUE(first.ok() && *first);
  EXPECT_EQ((*first)->stopStrings, std::vector<std::string>{"\n\n"});
  EXPECT_TRUE((*first)->stopTokenIds.empty());
  auto second = reader->next();
  ASSERT_TRUE(second.ok() && *second);
  EXPECT_EQ((*second)->stopStrings,
            (std::vector<std::string>{"a", "\xC3\xA9"}));
  EXPECT_EQ((*second)->stopTokenIds, (std::vector<int32_t>{7, 9}));
}

TEST(PromptReader, SkipsWhatAResumedJobAnswered) {
  ScratchDirectory scratch;
  std::string path = writeFile(scratch, "skip.jsonl",
                               "{\"input_ids\": [1]}\nbad\n\n"
                               "{\"input_ids\": [3]}\n");
  auto reader = PromptReader::open(path, nullptr, 4);
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE(reader->skip(2).ok());
  auto third = reader->next();
  ASSERT_TRUE(third.ok() && *third);
  EXPECT_EQ((*third)->index, 2);
  EXPECT_EQ((*third)->promptIds, std::vector<int32_t>{3});
  auto again = PromptReader::open(path, nullptr, 4);
  Status tooMany = again->skip(4);
  ASSERT_FALSE(tooMany.ok());
  EXPECT_EQ(tooMany.error().message(),
            path + ": has 3 requests, fewer than the 4 answered before: the "
                   "prompts changed since");
}

TEST(PromptReader, MissingFile) {
  auto reader = PromptReader::open("/nonexistent.jsonl", nullptr, 4);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.error().message(),
            "/nonexistent.jsonl: cannot open the prompts file");
}

std::string threePrompts(const ScratchDirectory &scratch) {
  return writeFile(scratch, "three.jsonl",
                   "{\"id\": 1, \"input_ids\": [1]}\n{\"input_ids\": [2]}\n"
                   "{\"id\": \"c\", \"input_ids\": [3]}\n");
}

TEST(AnswerWriter, AShardKeepsTheWholeFilesNumbersAndResumesWithinIt) {
  ScratchDirectory scratch;
  std::string prompts = threePrompts(scratch);
  std::string out = scratch.file("shard.jsonl");
  {
    auto reader = PromptReader::open(prompts, nullptr, 4);
    ASSERT_TRUE(reader.ok());
    ASSERT_TRUE(reader->restrictTo(1, 3).ok());
    auto writer = AnswerWriter::open(out, *reader, nullptr, "shard 1");
    ASSERT_TRUE(writer.ok()) << writer.error().message();
    auto first = reader->next();
    ASSERT_TRUE(first.ok() && *first);
    EXPECT_EQ((*first)->index, 1);
    ASSERT_TRUE(writer->add({1, {5}, "eos", {}}).ok());
    EXPECT_EQ(writer->written(), 1);
  } // stopped after one answer of its two
  auto reader = PromptReader::open(prompts, nullptr, 4);
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE(reader->restrictTo(1, 3).ok());
  auto writer = AnswerWriter::open(out, *reader, nullptr, "shard 1");
  ASSERT_TRUE(writer.ok()) << writer.error().message();
  EXPECT_EQ(writer->resumed(), 1);
  auto next = reader->next();
  ASSERT_TRUE(next.ok() && *next);
  EXPECT_EQ((*next)->index, 2);
  auto end = reader->next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(*end) << "request 3 is past the shard";
  ASSERT_TRUE(writer->add({2, {6}, "eos", {}}).ok());
  ASSERT_TRUE(writer->commit(/*keepDescription=*/true).ok());
  std::string answers = readFile(out);
  EXPECT_NE(answers.find("\"index\":1,\"output_ids\":[5]"), std::string::npos);
  EXPECT_NE(answers.find("\"id\":\"c\",\"index\":2,\"output_ids\":[6]"),
            std::string::npos);
  EXPECT_EQ(readFile(out + ".job"), "shard 1\n");
  EXPECT_FALSE(reader->restrictTo(0, 1).ok()) << "after reading began";
}

TEST(AnswerWriter, WritesInInputOrderAsSoonAsPossibleThenCommits) {
  ScratchDirectory scratch;
  auto reader = PromptReader::open(threePrompts(scratch), nullptr, 4);
  ASSERT_TRUE(reader.ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(reader->next().ok());
  std::string out = scratch.file("answers.jsonl");
  std::ofstream(out) << "an earlier run's answers\n";
  auto writer = AnswerWriter::open(out, *reader, nullptr, "job");
  ASSERT_TRUE(writer.ok()) << writer.error().message();
  EXPECT_EQ(writer->partialPath(), out + ".partial");
  ASSERT_TRUE(writer->add({2, {9}, "eos", {}}).ok());
  EXPECT_EQ(readFile(out + ".partial"), ""); // waits for answers 0 and 1
  ASSERT_TRUE(writer
                  ->add({.index = 0,
                         .outputIds = {5, 6},
                         .finishReason = "length",
                         .promptTokens = 1})
                  .ok());
  EXPECT_EQ(readFile(out + ".partial"),
            "{\"finish_reason\":\"length\",\"id\":1,\"index\":0,"
            "\"output_ids\":[5,6],\"usage\":{\"completion_tokens\":2,"
            "\"prompt_tokens\":1}}\n");
  ASSERT_TRUE(writer->add({1, {}, "error", "three.jsonl:2: too long"}).ok());
  EXPECT_EQ(writer->written(), 3);
  EXPECT_EQ(writer->failed(), 1);
  // Error lines count no tokens.
  EXPECT_EQ(writer->promptTokens(), 1);
  EXPECT_EQ(writer->completionTokens(), 3);
  EXPECT_EQ(readFile(out), "an earlier run's answers\n") << "until commit";
  ASSERT_TRUE(writer->commit().ok());
  std::string all = readFile(out);
  EXPECT_NE(all.find("{\"error\":\"three.jsonl:2: too long\",\"finish_reason\":"
                     "\"error\",\"id\":null,\"index\":1}"),
            std::string::npos);
  EXPECT_NE(all.find("\"id\":\"c\",\"index\":2,\"output_ids\":[9]"),
            std::string::npos);
  EXPECT_FALSE(std::ifstream(out + ".partial"));
  EXPECT_FALSE(std::ifstream(out + ".partial.job"));
}

// A job stopped part-way resumes: complete lines kept, the cut-off last one
// dropped, their requests skipped; another job is refused the file.
TEST(AnswerWriter, ResumesTheSameJobAndRefusesAnother) {
  ScratchDirectory scratch;
  std::string out = scratch.file("resumed.jsonl");
  {
    auto reader = PromptReader::open(threePrompts(scratch), nullptr, 4);
    auto writer = AnswerWriter::open(out, *reader, nullptr, "job A");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE(reader->next().ok());
    ASSERT_TRUE(writer->add({0, {5}, "length", {}}).ok());
  }
  std::ofstream(out + ".partial", std::ios::app) << "{\"finish_reason\":\"len";
  auto reader = PromptReader::open(threePrompts(scratch), nullptr, 4);
  auto other = AnswerWriter::open(out, *reader, nullptr, "job B");
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message().find("holds answers of another job"),
            std::string::npos)
      << other.error().message();
  auto writer = AnswerWriter::open(out, *reader, nullptr, "job A");
  ASSERT_TRUE(writer.ok()) << writer.error().message();
  EXPECT_EQ(writer->resumed(), 1);
  auto next = reader->next();
  ASSERT_TRUE(next.ok() && *next);
  EXPECT_EQ((*next)->index, 1) << "the answered request is skipped";
  ASSERT_TRUE(writer->add({1, {6}, "eos", {}}).ok());
  EXPECT_EQ(readFile(out + ".partial"),
            "{\"finish_reason\":\"length\",\"id\":1,\"index\":0,"
            "\"output_ids\":[5],\"usage\":{\"completion_tokens\":1,"
            "\"prompt_tokens\":0}}\n{\"finish_reason\":\"eos\",\"id\":null,"
            "\"index\":1,\"output_ids\":[6],\"usage\":{\"completion_tokens\":"
            "1,\"prompt_tokens\":0}}\n");
}

// OpenAI batch lines: the body's fields make the request (sampling over
// the job's, its seed alone starting its stream), errors name the field, a
// line of the other kind is refused; answers are batch output lines, and a
// stopped batch job resumes from them.
TEST(OpenAiBatch, RequestsAnswersAndResume) {
  ScratchDirectory scratch;
  std::string path = writeFile(
      scratch, "batch.jsonl",
      R"({"custom_id": "a", "method": "POST", "url": "/v1/completions", )"
      R"("body": {"model": "m", "prompt": [5, 6], "max_tokens": 3, )"
      R"("temperature": 0.5, "seed": 9, "stop": "x", "stop_token_ids": [4]}})"
      "\n"
      R"({"custom_id": "b", "method": "POST", "url": "/v1/completions", )"
      R"("body": {"prompt": [7], "top_p": 0}})"
      "\n"
      R"({"input_ids": [1]})"
      "\n"
      R"({"custom_id": "d", "method": "GET", "url": "/v1/completions", )"
      R"("body": {"prompt": [7]}})"
      "\n");
  SamplingParams job;
  job.topK = 3;
  auto reader = PromptReader::open(path, nullptr, 8, job);
  ASSERT_TRUE(reader.ok());
  auto a = reader->next();
  ASSERT_TRUE(a.ok() && *a);
  EXPECT_EQ(reader->format(), PromptFormat::openaiBatch);
  const Request &first = **a;
  EXPECT_TRUE(first.error.empty()) << first.error;
  EXPECT_EQ(first.promptIds, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(first.maxNewTokens, 3);
  ASSERT_TRUE(first.sampling);
  EXPECT_FLOAT_EQ(first.sampling->temperature, 0.5f);
  EXPECT_EQ(first.sampling->topK, 3) << "the job's where the body is silent";
  EXPECT_EQ(first.sampling->seed, 9u);
  EXPECT_TRUE(first.seeded);
  EXPECT_EQ(first.stopStrings, std::vector<std::string>{"x"});
  EXPECT_EQ(first.stopTokenIds, std::vector<int32_t>{4});
  for (const char *error :
       {"\"top_p\" must be a number in (0, 1]",
        "not an OpenAI batch request (no \"custom_id\"), as the file's "
        "first line is",
        "\"method\" must be \"POST\""}) {
    auto bad = reader->next();
    ASSERT_TRUE(bad.ok() && *bad);
    EXPECT_NE((*bad)->error.find(error), std::string::npos) << (*bad)->error;
  }

  std::string out = scratch.file("batch-answers.jsonl");
  {
    auto writer = AnswerWriter::open(out, *reader, nullptr, "job");
    ASSERT_TRUE(writer.ok());
    Completion done{0, {8, 9, 4}, "stop", {}};
    done.stop = int32_t(4);
    done.promptTokens = 2;
    ASSERT_TRUE(writer->add(done).ok());
    ASSERT_TRUE(writer->add({1, {}, "error", "batch.jsonl:2: bad"}).ok());
  }
  std::istringstream lines(readFile(out + ".partial"));
  std::string line;
  std::getline(lines, line);
  nlohmann::json answer = nlohmann::json::parse(line);
  EXPECT_EQ(answer["id"], "batch_req_0");
  EXPECT_EQ(answer["custom_id"], "a");
  EXPECT_TRUE(answer["error"].is_null());
  EXPECT_EQ(answer["response"]["status_code"], 200);
  const nlohmann::json &body = answer["response"]["body"];
  EXPECT_EQ(body["model"], "m");
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][0]["stop_reason"], 4);
  EXPECT_EQ(body["choices"][0]["token_ids"], (std::vector<int32_t>{8, 9, 4}));
  EXPECT_EQ(body["usage"]["prompt_tokens"], 2);
  EXPECT_EQ(body["usage"]["completion_tokens"], 3);
  EXPECT_EQ(body["usage"]["total_tokens"], 5);
  std::getline(lines, line);
  answer = nlohmann::json::parse(line);
  EXPECT_EQ(answer["custom_id"], "b");
  EXPECT_TRUE(answer["response"].is_null());
  EXPECT_EQ(answer["error"]["message"], "batch.jsonl:2: bad");

  auto again = PromptReader::open(path, nullptr, 8, job);
  ASSERT_TRUE(again.ok());
  auto resumed = AnswerWriter::open(out, *again, nullptr, "job");
  ASSERT_TRUE(resumed.ok()) << resumed.error().message();
  EXPECT_EQ(resumed->resumed(), 2);
  EXPECT_EQ(resumed->failed(), 1);
  EXPECT_EQ(again->format(), PromptFormat::openaiBatch)
      << "told by the lines skipped";
  ASSERT_TRUE(resumed->add({2, {}, "error", "batch.jsonl:3: bad"}).ok());
  std::string all = readFile(out + ".partial");
  EXPECT_NE(all.find("{\"custom_id\":null,\"error\":{\"code\":"
                     "\"invalid_request\",\"message\":\"batch.jsonl:3: bad\"},"
                     "\"id\":\"batch_req_2\",\"response\":null}"),
            std::string::npos)
      << all;
}

// Log-probabilities asked in each format: read, refused out of range, and
// answered as each API shapes them (without a tokenizer, tokens are named
// "token_id:<id>").
TEST(OpenAiBatch, LogprobsInEachFormat) {
  ScratchDirectory scratch;
  std::string path = writeFile(
      scratch, "logprobs.jsonl",
      R"({"custom_id": "chat", "method": "POST", "url": "/v1/chat/completions", )"
      R"("body": {"messages": [{"role": "user", "content": "hi"}], )"
      R"("logprobs": true, "top_logprobs": 2}})"
      "\n"
      R"({"custom_id": "text", "method": "POST", "url": "/v1/completions", )"
      R"("body": {"prompt": [7], "logprobs": 1}})"
      "\n"
      R"({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions", )"
      R"("body": {"messages": [{"role": "user", "content": "hi"}], )"
      R"("top_logprobs": 2}})"
      "\n"
      R"({"custom_id": "many", "method": "POST", "url": "/v1/completions", )"
      R"("body": {"prompt": [7], "logprobs": 21}})"
      "\n");
  auto reader = PromptReader::open(path, nullptr, 8);
  ASSERT_TRUE(reader.ok());
  // No chat template here: the chat request fails for that; the
  // completions one runs.
  auto first = reader->next();
  ASSERT_TRUE(first.ok() && *first);
  auto second = reader->next();
  ASSERT_TRUE(second.ok() && *second);
  EXPECT_TRUE((*second)->error.empty()) << (*second)->error;
  EXPECT_EQ((*second)->topLogprobs, 1);
  for (const char *error : {"\"top_logprobs\" needs \"logprobs\": true",
                            "\"logprobs\" must be an integer from 0 to 20"}) {
    auto bad = reader->next();
    ASSERT_TRUE(bad.ok() && *bad);
    EXPECT_NE((*bad)->error.find(error), std::string::npos) << (*bad)->error;
  }

  Completion done{0, {8, 9}, "length", {}};
  done.logprobs = {{-0.5f, {{8, -0.5f}, {3, -1.5f}}},
                   {-0.25f, {{9, -0.25f}, {8, -2.0f}}}};
  auto tokenText = [](int32_t id) -> std::optional<std::string> {
    if (id == 3)
      return std::nullopt; // a byte token
    return "t" + std::to_string(id);
  };
  nlohmann::json chatAnswer =
      batchAnswer(done, {"chat", "m", true}, "t8t9", 0, tokenText);
  const nlohmann::json &content =
      chatAnswer["response"]["body"]["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "t8");
  EXPECT_EQ(content[0]["logprob"], -0.5);
  EXPECT_EQ(content[0]["bytes"], (std::vector<int>{'t', '8'}));
  EXPECT_EQ(content[1]["top_logprobs"][1]["token"], "t8");
  EXPECT_EQ(content[1]["top_logprobs"][1]["logprob"], -2.0);
  EXPECT_EQ(content[0]["top_logprobs"][1]["token"], "token_id:3");
  EXPECT_TRUE(content[0]["top_logprobs"][1]["bytes"].is_null());
  nlohmann::json textAnswer =
      batchAnswer(done, {"text", "m", false}, "t8t9", 0, tokenText);
  const nlohmann::json &logprobs =
      textAnswer["response"]["body"]["choices"][0]["logprobs"];
  EXPECT_EQ(logprobs["tokens"], (std::vector<std::string>{"t8", "t9"}));
  EXPECT_EQ(logprobs["token_logprobs"], (std::vector<double>{-0.5, -0.25}));
  EXPECT_EQ(logprobs["top_logprobs"][0]["token_id:3"], -1.5);
  EXPECT_EQ(logprobs["text_offset"], (std::vector<int>{0, 2}));
  // Not asked for: null, as OpenAI's.
  done.logprobs.clear();
  EXPECT_TRUE(
      batchAnswer(done, {"text", "m", false}, "", 0,
                  tokenText)["response"]["body"]["choices"][0]["logprobs"]
          .is_null());
}

TEST(AnswerWriter, OneJobWritesAFileAtATime) {
  ScratchDirectory scratch;
  std::string out = scratch.file("locked.jsonl");
  auto reader = PromptReader::open(threePrompts(scratch), nullptr, 4);
  auto first = AnswerWriter::open(out, *reader, nullptr, "job");
  ASSERT_TRUE(first.ok());
  auto second = AnswerWriter::open(out, *reader, nullptr, "job");
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().message(),
            out + ": another moe-run is writing these answers (" + out +
                ".partial is locked)");
}

// Text in, text out through the checkpoint's tokenizer: the prompt is
// encoded, the answer decoded next to its ids.
TEST(Jsonl, TextPromptsAndAnswersGoThroughTheTokenizer) {
  ScratchDirectory scratch;
  auto tokenizer = Tokenizer::fromFile(std::string(MOE_TOKENIZER_FIXTURES) +
                                       "/byte_level.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message();
  std::string path =
      writeFile(scratch, "text.jsonl", "{\"prompt\": \"hello world\"}\n");
  auto reader = PromptReader::open(path, &*tokenizer, 4);
  ASSERT_TRUE(reader.ok());
  auto request = reader->next();
  ASSERT_TRUE(request.ok() && *request) << request.error().message();
  auto expected = tokenizer->encode("hello world", /*addSpecial=*/true);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ((*request)->promptIds, *expected);

  std::string out = scratch.file("text-answers.jsonl");
  auto writer = AnswerWriter::open(out, *reader, &*tokenizer, "job");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(writer->add({0, (*request)->promptIds, "length", {}}).ok());
  ASSERT_TRUE(writer->commit().ok());
  auto text = tokenizer->decode((*request)->promptIds, /*skipSpecial=*/true);
  ASSERT_TRUE(text.ok());
  nlohmann::json line = nlohmann::json::parse(readFile(out));
  EXPECT_EQ(line["text"], *text);
  EXPECT_NE(text->find("hello world"), std::string::npos);
}

} // namespace
} // namespace moe
