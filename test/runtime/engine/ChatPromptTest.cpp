// Chat requests in both prompt formats: "messages" rendered by the chat
// template, then tokenized without special tokens added again; batch chat
// requests answered as chat completions; each bad request an error line.
#include "runtime/io/Jsonl.h"
#include "runtime/tokenizer/Tokenizer.h"
#include "test/runtime/ScratchDirectory.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>

namespace moe {
namespace {

// Every variable the request can set shows in the rendering.
constexpr const char *kTemplate =
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    "{% if tools %}[{{ tools | map(attribute='function.name') | join(',') }}]"
    "{% endif %}{% if enable_thinking is defined %}think={{ enable_thinking }}"
    "{% endif %}{% if add_generation_prompt %}<assistant>{% endif %}";

class ChatPrompts : public ::testing::Test {
protected:
  void SetUp() override {
    auto tokenizer = Tokenizer::fromFile(std::string(MOE_TOKENIZER_FIXTURES) +
                                         "/byte_level.json");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message();
    tokenizer_.emplace(std::move(*tokenizer));
    auto compiled = chat::ChatTemplate::fromSource(
        kTemplate, "template", nlohmann::ordered_json::object());
    ASSERT_TRUE(compiled.ok()) << compiled.error().message();
    template_.emplace(std::move(*compiled));
  }

  std::string write(const std::string &name, const std::string &text) {
    std::string path = scratch_.file(name);
    std::ofstream(path) << text;
    return path;
  }

  // The requests of a prompts file holding `text`.
  std::vector<Request> read(const std::string &text, ChatPrompting chat) {
    auto reader = PromptReader::open(write("chat.jsonl", text), &*tokenizer_, 8,
                                     {}, std::move(chat));
    EXPECT_TRUE(reader.ok());
    std::vector<Request> requests;
    while (true) {
      auto request = reader->next();
      EXPECT_TRUE(request.ok());
      if (!request.ok() || !*request)
        return requests;
      requests.push_back(std::move(**request));
    }
  }

  std::vector<int32_t> tokens(const std::string &text) {
    auto ids = tokenizer_->encode(text, /*addSpecialTokens=*/false);
    EXPECT_TRUE(ids.ok());
    return *ids;
  }

  ChatPrompting withTemplate() const { return {&*template_, ""}; }

  std::optional<Tokenizer> tokenizer_;
  std::optional<chat::ChatTemplate> template_;
  testing::ScratchDirectory scratch_;
};

TEST_F(ChatPrompts, JsonlMessagesRenderThroughTheTemplate) {
  std::vector<Request> requests = read(
      R"({"id": "a", "messages": [{"role": "user", "content": "hi"}]})"
      "\n"
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], "add_generation_prompt": false, "chat_template_kwargs": {"enable_thinking": false}, "tools": [{"type": "function", "function": {"name": "f"}}], "max_new_tokens": 3})"
      "\n",
      withTemplate());
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].error, "");
  EXPECT_EQ(requests[0].promptIds, tokens("<user>hi<assistant>"));
  EXPECT_EQ(requests[1].error, "");
  EXPECT_EQ(requests[1].promptIds, tokens("<system>s<user>q[f]think=False"));
  EXPECT_EQ(requests[1].maxNewTokens, 3);
}

TEST_F(ChatPrompts, BadChatRequestsAreErrorLines) {
  std::string path = scratch_.file("chat.jsonl");
  std::vector<Request> requests = read(
      R"({"messages": [{"role": "user", "content": "hi"}], "prompt": "x"})"
      "\n"
      R"({"input_ids": [1], "tools": []})"
      "\n"
      R"({"messages": []})"
      "\n"
      R"({"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": 1})"
      "\n"
      R"({"messages": [{"role": "user", "content": "hi"}]})"
      "\n",
      withTemplate());
  ASSERT_EQ(requests.size(), 5u);
  EXPECT_EQ(requests[0].error,
            path +
                ":1: give one of \"input_ids\", \"prompt\" and \"messages\"");
  EXPECT_EQ(requests[1].error,
            path + ":2: \"tools\" belongs to a chat request: it needs "
                   "\"messages\"");
  EXPECT_EQ(requests[2].error,
            path + ":3: \"messages\" must be a non-empty list of messages");
  EXPECT_EQ(requests[3].error,
            path + ":4: \"add_generation_prompt\" must be true or false");
  EXPECT_EQ(requests[4].error, "") << "the job goes on after bad requests";
}

TEST_F(ChatPrompts, WithoutATemplateChatRequestsSayWhy) {
  std::string path = scratch_.file("chat.jsonl");
  std::string line = R"({"messages": [{"role": "user", "content": "hi"}]})"
                     "\n";
  EXPECT_EQ(read(line, {})[0].error,
            path + ":1: \"messages\" need the checkpoint's chat template "
                   "(\"chat_template\" in tokenizer_config.json, or "
                   "chat_template.jinja)");
  EXPECT_EQ(read(line, {nullptr, "the template failed to load"})[0].error,
            path + ":1: the template failed to load");
}

TEST_F(ChatPrompts, BatchChatRequestsAreAnsweredAsChatCompletions) {
  std::string prompts = write(
      "batch-chat.jsonl",
      R"({"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5, "chat_template_kwargs": {"enable_thinking": true}}})"
      "\n"
      R"({"custom_id": "c2", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "messages": []}})"
      "\n");
  auto reader =
      PromptReader::open(prompts, &*tokenizer_, 8, {}, withTemplate());
  ASSERT_TRUE(reader.ok());
  auto chat = reader->next();
  ASSERT_TRUE(chat.ok() && *chat);
  EXPECT_EQ((*chat)->error, "");
  EXPECT_EQ((*chat)->promptIds, tokens("<user>hithink=True<assistant>"));
  EXPECT_EQ((*chat)->maxNewTokens, 5);
  auto completion = reader->next();
  ASSERT_TRUE(completion.ok() && *completion);
  EXPECT_EQ((*completion)->error,
            prompts + ":2: body field \"messages\" is not supported by "
                      "/v1/completions: send it to /v1/chat/completions");

  std::string out = scratch_.file("batch-chat-answers.jsonl");
  auto writer = AnswerWriter::open(out, *reader, &*tokenizer_, "job");
  ASSERT_TRUE(writer.ok());
  std::vector<int32_t> answer = tokens("hello");
  ASSERT_TRUE(writer->add({0, answer, "eos", {}}).ok());
  ASSERT_TRUE(writer->add({1, {}, "error", (*completion)->error}).ok());
  ASSERT_TRUE(writer->commit().ok());
  std::ifstream file(out);
  std::string line;
  ASSERT_TRUE(std::getline(file, line));
  nlohmann::json body = nlohmann::json::parse(line)["response"]["body"];
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["id"], "chatcmpl-0");
  EXPECT_EQ(body["choices"][0]["message"],
            (nlohmann::json{{"role", "assistant"}, {"content", "hello"}}));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(body["choices"][0].contains("text"));
}

} // namespace
} // namespace moe
