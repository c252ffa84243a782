// A checkpoint's chat template: where it is read from, the variables a
// conversation gives it, and the errors of bad templates and requests.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "runtime/chat/ChatTemplate.h"

namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;
using moe::chat::ChatTemplate;
using moe::chat::Conversation;

class CheckpointDir : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("moe-chat-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string &name, const std::string &text) {
    std::ofstream(dir_ / name) << text;
  }
  std::string dir() const { return dir_.string(); }

  fs::path dir_;
};

Conversation hello() {
  Conversation conversation;
  conversation.messages = Json::parse(R"([{"role": "user", "content": "hi"}])");
  return conversation;
}

TEST_F(CheckpointDir, NoTemplateIsNone) {
  auto none = ChatTemplate::fromCheckpoint(dir());
  ASSERT_TRUE(none.ok()) << none.error().message();
  EXPECT_FALSE(none->has_value());
  write("tokenizer_config.json", R"({"bos_token": "<s>"})");
  none = ChatTemplate::fromCheckpoint(dir());
  ASSERT_TRUE(none.ok()) << none.error().message();
  EXPECT_FALSE(none->has_value());
}

TEST_F(CheckpointDir, TokenizerConfigTemplateWithSpecialTokens) {
  write("tokenizer_config.json", R"({
    "bos_token": {"__type": "AddedToken", "content": "<s>"},
    "eos_token": "</s>",
    "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}{{ eos_token }}"
  })");
  auto chat = ChatTemplate::fromCheckpoint(dir());
  ASSERT_TRUE(chat.ok()) << chat.error().message();
  ASSERT_TRUE(chat->has_value());
  Conversation conversation = hello();
  auto text = (*chat)->render(conversation);
  ASSERT_TRUE(text.ok()) << text.error().message();
  EXPECT_EQ(*text, "<s>[user:hi]></s>");
  conversation.addGenerationPrompt = false;
  EXPECT_EQ(*(*chat)->render(conversation), "<s>[user:hi]</s>");
}

TEST_F(CheckpointDir, NamedTemplatesUseDefault) {
  write("tokenizer_config.json", R"({"chat_template": [
    {"name": "tool_use", "template": "tools"},
    {"name": "default", "template": "default"}]})");
  auto chat = ChatTemplate::fromCheckpoint(dir());
  ASSERT_TRUE(chat.ok()) << chat.error().message();
  EXPECT_EQ(*(*chat)->render(hello()), "default");

  write("tokenizer_config.json",
        R"({"chat_template": [{"name": "tool_use", "template": "tools"}]})");
  chat = ChatTemplate::fromCheckpoint(dir());
  ASSERT_FALSE(chat.ok());
  EXPECT_NE(chat.error().message().find("none named \"default\""),
            std::string::npos)
      << chat.error().message();
}

TEST_F(CheckpointDir, JinjaFileWinsOverTheConfig) {
  write("tokenizer_config.json",
        R"({"eos_token": "</s>", "chat_template": "config"})");
  write("chat_template.jinja", "file{{ eos_token }}\n");
  auto chat = ChatTemplate::fromCheckpoint(dir());
  ASSERT_TRUE(chat.ok()) << chat.error().message();
  EXPECT_EQ(*(*chat)->render(hello()), "file</s>");
}

TEST_F(CheckpointDir, UnsupportedConstructFailsAtLoadNamingFileAndLine) {
  write("chat_template.jinja", "{{ bos_token }}\n{% include 'other' %}\n");
  auto chat = ChatTemplate::fromCheckpoint(dir());
  ASSERT_FALSE(chat.ok());
  EXPECT_EQ(chat.error().message(),
            dir() + "/chat_template.jinja line 2: 'include' is not supported: "
                    "a chat template is one file and cannot include, import "
                    "or extend another");
}

TEST(ChatTemplate, KwargsAndToolsAreTopLevelVariables) {
  auto chat = ChatTemplate::fromSource(
      "{% if enable_thinking is defined and enable_thinking is false %}"
      "no-think {% endif %}{% if tools %}{{ tools | length }} tools "
      "{% endif %}{{ messages | length }}",
      "t", Json::object());
  ASSERT_TRUE(chat.ok()) << chat.error().message();
  Conversation conversation = hello();
  EXPECT_EQ(*chat->render(conversation), "1");
  conversation.kwargs = {{"enable_thinking", false}};
  conversation.tools = Json::parse(R"([{"type": "function"}])");
  EXPECT_EQ(*chat->render(conversation), "no-think 1 tools 1");
}

TEST(ChatTemplate, NowIsTheTimeStrftimeNowFormats) {
  auto chat = ChatTemplate::fromSource("{{ strftime_now('%Y-%m-%d') }}", "t",
                                       Json::object());
  ASSERT_TRUE(chat.ok()) << chat.error().message();
  Conversation conversation = hello();
  conversation.now = 1754395200; // 2025-08-05 12:00 UTC
  EXPECT_EQ(*chat->render(conversation), "2025-08-05");
  conversation.now.reset();
  EXPECT_NE(*chat->render(conversation), "2025-08-05");
}

TEST(ChatTemplate, RequestErrors) {
  auto chat = ChatTemplate::fromSource(
      "{% if messages[0].role != 'user' %}{{ raise_exception('user first') }}"
      "{% endif %}ok",
      "t", Json::object());
  ASSERT_TRUE(chat.ok()) << chat.error().message();
  Conversation conversation;
  EXPECT_EQ(chat->render(conversation).error().message(),
            "\"messages\" must be a non-empty list of messages");
  conversation.messages = Json::parse(R"([{"content": "no role"}])");
  EXPECT_EQ(chat->render(conversation).error().message(),
            "each message must be an object with a \"role\"");
  conversation.messages = Json::parse(R"([{"role": "assistant"}])");
  EXPECT_EQ(chat->render(conversation).error().message(),
            "t line 1: the template raised an error: user first");
  conversation = hello();
  conversation.kwargs = {{"messages", 1}};
  EXPECT_EQ(chat->render(conversation).error().message(),
            "\"chat_template_kwargs\" cannot set \"messages\": give it as the "
            "request's own field");
  conversation.kwargs = nullptr;
  conversation.tools = "not a list";
  EXPECT_EQ(chat->render(conversation).error().message(),
            "\"tools\" must be a list");
}

} // namespace
