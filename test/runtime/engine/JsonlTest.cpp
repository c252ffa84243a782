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
      "ok.jsonl", "{\"input_ids\": [1, 2, 3]}\n\n"
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
  EXPECT_EQ(reader->idOf(1), "\"q7\"");
  auto end = reader->next();
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(*end);
}

void expectLineError(const std::string &line, const std::string &message) {
  std::string path = writeFile("bad.jsonl", "{\"input_ids\": [1]}\n" + line + "\n");
  auto reader = PromptReader::open(path, nullptr, 4);
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE(reader->next().ok());
  auto bad = reader->next();
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), path + ":2: " + message);
}

TEST(PromptReader, MalformedLinesNameFileAndLine) {
  expectLineError("{\"input_ids\": [1, 2", "not a JSON object");
  expectLineError("[1, 2]", "not a JSON object");
  expectLineError("{\"input_ids\": \"12\"}",
                  "\"input_ids\" must be a list of token ids");
  expectLineError("{\"input_ids\": [1, -2]}",
                  "\"input_ids\" must hold non-negative integers");
  expectLineError("{\"input_ids\": []}", "the prompt is empty");
  expectLineError("{\"text\": \"hi\"}", "expected \"input_ids\" or \"prompt\"");
  expectLineError("{\"prompt\": \"hi\"}",
                  "\"prompt\" needs a tokenizer.json in the checkpoint; give "
                  "\"input_ids\" instead");
  expectLineError("{\"input_ids\": [1], \"max_new_tokens\": 0}",
                  "\"max_new_tokens\" must be a positive integer");
}

TEST(PromptReader, MissingFile) {
  auto reader = PromptReader::open("/nonexistent.jsonl", nullptr, 4);
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.error().message(),
            "/nonexistent.jsonl: cannot open the prompts file");
}

TEST(AnswerWriter, WritesInInputOrderAsSoonAsPossible) {
  std::string prompts = writeFile(
      "three.jsonl", "{\"id\": 1, \"input_ids\": [1]}\n{\"input_ids\": [2]}\n"
                     "{\"id\": \"c\", \"input_ids\": [3]}\n");
  auto reader = PromptReader::open(prompts, nullptr, 4);
  ASSERT_TRUE(reader.ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(reader->next().ok());
  std::string out = ::testing::TempDir() + "/answers.jsonl";
  auto writer = AnswerWriter::open(out, *reader, nullptr);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(writer->add({2, {9}, "eos"}).ok());
  EXPECT_EQ(readFile(out), ""); // waits for answers 0 and 1
  ASSERT_TRUE(writer->add({0, {5, 6}, "length"}).ok());
  EXPECT_EQ(readFile(out),
            "{\"finish_reason\":\"length\",\"id\":1,\"index\":0,"
            "\"output_ids\":[5,6]}\n");
  ASSERT_TRUE(writer->add({1, {}, "context"}).ok());
  EXPECT_EQ(writer->written(), 3);
  std::string all = readFile(out);
  EXPECT_NE(all.find("\"id\":null,\"index\":1"), std::string::npos);
  EXPECT_NE(all.find("\"id\":\"c\",\"index\":2,\"output_ids\":[9]"),
            std::string::npos);
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

  std::string out = ::testing::TempDir() + "/text-answers.jsonl";
  auto writer = AnswerWriter::open(out, *reader, &*tokenizer);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(writer->add({0, (*request)->promptIds, "length"}).ok());
  auto text = tokenizer->decode((*request)->promptIds, /*skipSpecial=*/true);
  ASSERT_TRUE(text.ok());
  nlohmann::json line = nlohmann::json::parse(readFile(out));
  EXPECT_EQ(line["text"], *text);
  EXPECT_NE(text->find("hello world"), std::string::npos);
}

} // namespace
} // namespace moe
