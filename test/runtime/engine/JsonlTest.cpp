#include "runtime/io/Jsonl.h"
#include "runtime/tokenizer/Tokenizer.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace moe {
namespace {

std::string writeFile(const std::string &name, const std::string &text) {
  std::string path = ::testing::TempDir() + "/" + name;
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
  std::string path = writeFile(
      "ok.jsonl",
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
  EXPECT_EQ(reader->takeId(1), "\"q7\"");
  EXPECT_EQ(reader->takeId(1), "null") << "taken once";
  auto end = reader->next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(*end);
}

// A bad line is a request carrying its error, named by file and line; the
// lines after it are read as usual.
void expectLineError(const std::string &line, const std::string &message) {
  std::string path = writeFile("bad.jsonl", "{\"input_ids\": [1]}\n" + line +
                                                "\n{\"input_ids\": [2]}\n");
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
  const std::string fields = "(a line may hold \"input_ids\" or \"prompt\", "
                             "\"id\", \"max_new_tokens\", \"stop\" and "
                             "\"stop_token_ids\")";
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
  expectLineError("{\"id\": 3}", "expected \"input_ids\" or \"prompt\"");
  expectLineError("{\"prompt\": \"hi\"}",
                  "\"prompt\" needs a tokenizer.json in the checkpoint; give "
                  "\"input_ids\" instead");
  for (const char *tokens : {"0", "-1", "2147483648", "1e3"})
    expectLineError(
        fmt::format("{{\"input_ids\": [1], \"max_new_tokens\": {}}}", tokens),
        "\"max_new_tokens\" must be an integer from 1 to 2^31 - 1");
}

TEST(PromptReader, ReadsStops) {
  std::string path =
      writeFile("stops.jsonl", "{\"input_ids\": [1], \"stop\": \"\\n\\n\"}\n"
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
  std::string path = writeFile("skip.jsonl", "{\"input_ids\": [1]}\nbad\n\n"
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

std::string threePrompts() {
  return writeFile("three.jsonl",
                   "{\"id\": 1, \"input_ids\": [1]}\n{\"input_ids\": [2]}\n"
                   "{\"id\": \"c\", \"input_ids\": [3]}\n");
}

/// A fresh answers path in the test's temporary directory.
std::string answersPath(const std::string &name) {
  std::string path = ::testing::TempDir() + "/" + name;
  for (const char *suffix : {"", ".partial", ".partial.job"})
    std::remove((path + suffix).c_str());
  return path;
}

TEST(AnswerWriter, WritesInInputOrderAsSoonAsPossibleThenCommits) {
  auto reader = PromptReader::open(threePrompts(), nullptr, 4);
  ASSERT_TRUE(reader.ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(reader->next().ok());
  std::string out = answersPath("answers.jsonl");
  std::ofstream(out) << "an earlier run's answers\n";
  auto writer = AnswerWriter::open(out, *reader, nullptr, "job");
  ASSERT_TRUE(writer.ok()) << writer.error().message();
  EXPECT_EQ(writer->partialPath(), out + ".partial");
  ASSERT_TRUE(writer->add({2, {9}, "eos", {}}).ok());
  EXPECT_EQ(readFile(out + ".partial"), ""); // waits for answers 0 and 1
  ASSERT_TRUE(writer->add({0, {5, 6}, "length", {}}).ok());
  EXPECT_EQ(readFile(out + ".partial"),
            "{\"finish_reason\":\"length\",\"id\":1,\"index\":0,"
            "\"output_ids\":[5,6]}\n");
  ASSERT_TRUE(writer->add({1, {}, "error", "three.jsonl:2: too long"}).ok());
  EXPECT_EQ(writer->written(), 3);
  EXPECT_EQ(writer->failed(), 1);
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
  std::string out = answersPath("resumed.jsonl");
  {
    auto reader = PromptReader::open(threePrompts(), nullptr, 4);
    auto writer = AnswerWriter::open(out, *reader, nullptr, "job A");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE(reader->next().ok());
    ASSERT_TRUE(writer->add({0, {5}, "length", {}}).ok());
  }
  std::ofstream(out + ".partial", std::ios::app) << "{\"finish_reason\":\"len";
  auto reader = PromptReader::open(threePrompts(), nullptr, 4);
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
            "\"output_ids\":[5]}\n{\"finish_reason\":\"eos\",\"id\":null,"
            "\"index\":1,\"output_ids\":[6]}\n");
}

TEST(AnswerWriter, OneJobWritesAFileAtATime) {
  std::string out = answersPath("locked.jsonl");
  auto reader = PromptReader::open(threePrompts(), nullptr, 4);
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
  auto tokenizer = Tokenizer::fromFile(std::string(MOE_TOKENIZER_FIXTURES) +
                                       "/byte_level.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message();
  std::string path = writeFile("text.jsonl", "{\"prompt\": \"hello world\"}\n");
  auto reader = PromptReader::open(path, &*tokenizer, 4);
  ASSERT_TRUE(reader.ok());
  auto request = reader->next();
  ASSERT_TRUE(request.ok() && *request) << request.error().message();
  auto expected = tokenizer->encode("hello world", /*addSpecial=*/true);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ((*request)->promptIds, *expected);

  std::string out = answersPath("text-answers.jsonl");
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
