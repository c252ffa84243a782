// Chat requests (OpenAI's "messages", in a JSONL line or a
// /v1/chat/completions batch body) to prompt tokens: the checkpoint's chat
// template renders the conversation, and the tokenizer reads the text
// without adding special tokens again, as transformers does (the template
// wrote them).
#pragma once

#include "runtime/chat/ChatTemplate.h"
#include "runtime/engine/Engine.h"

#include <nlohmann/json.hpp>

#include <array>
#include <string>

namespace moe {

class Tokenizer;

// The checkpoint's chat template, or why chat requests cannot run.
struct ChatPrompting {
  const chat::ChatTemplate *chatTemplate = nullptr;
  // Without a template: none in the checkpoint, or it could not be loaded.
  std::string unavailable;
};

// The fields of a request that make up its conversation.
inline constexpr std::array kChatFields = {
    "messages", "tools", "chat_template_kwargs", "add_generation_prompt"};

// Fills request.promptIds from the chat fields of `fields` (an object that
// holds "messages"): "tools" (a list), "chat_template_kwargs" (an object of
// extra template variables, e.g. {"enable_thinking": false}) and
// "add_generation_prompt" (default true). Returns the error that makes the
// request fail, empty when it can run.
std::string readChatPrompt(const nlohmann::ordered_json &fields,
                           const Tokenizer *tokenizer,
                           const ChatPrompting &chat, Request &request);

} // namespace moe
