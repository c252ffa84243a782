#include "runtime/io/ChatPrompt.h"

#include "runtime/tokenizer/Tokenizer.h"

namespace moe {

std::string readChatPrompt(const nlohmann::ordered_json &fields,
                           const Tokenizer *tokenizer,
                           const ChatPrompting &chat, Request &request) {
  if (!tokenizer)
    return "\"messages\" need a tokenizer.json in the checkpoint";
  if (!chat.chatTemplate)
    return chat.unavailable.empty()
               ? "\"messages\" need the checkpoint's chat template "
                 "(\"chat_template\" in tokenizer_config.json, or "
                 "chat_template.jinja)"
               : chat.unavailable;
  chat::Conversation conversation;
  conversation.messages = fields.at("messages");
  auto field = [&](const char *name) {
    auto it = fields.find(name);
    return it == fields.end() ? nlohmann::ordered_json() : *it;
  };
  conversation.tools = field("tools");
  conversation.kwargs = field("chat_template_kwargs");
  nlohmann::ordered_json addGenerationPrompt = field("add_generation_prompt");
  if (!addGenerationPrompt.is_null()) {
    if (!addGenerationPrompt.is_boolean())
      return "\"add_generation_prompt\" must be true or false";
    conversation.addGenerationPrompt = addGenerationPrompt.get<bool>();
  }
  Result<std::string> text = chat.chatTemplate->render(conversation);
  if (!text.ok())
    return text.error().message();
  Result<std::vector<int32_t>> ids =
      tokenizer->encode(*text, /*addSpecialTokens=*/false);
  if (!ids.ok())
    return ids.error().message();
  request.promptIds = std::move(*ids);
  return request.promptIds.empty() ? "the prompt is empty" : "";
}

} // namespace moe
