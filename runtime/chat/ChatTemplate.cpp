#include "runtime/chat/ChatTemplate.h"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace moe::chat {
namespace {

using Json = nlohmann::ordered_json;

Result<std::string> readFile(const std::filesystem::path &path) {
  std::ifstream file(path, std::ios::binary);
  if (!file)
    return makeError("{}: cannot read", path.string());
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// The special tokens of tokenizer_config.json, each a string or an added
// token object holding its "content".
Json specialTokensOf(const Json &config) {
  Json tokens = Json::object();
  for (const char *name :
       {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    auto it = config.find(name);
    if (it == config.end())
      continue;
    if (it->is_string())
      tokens[name] = *it;
    else if (it->is_object() && it->contains("content") &&
             (*it)["content"].is_string())
      tokens[name] = (*it)["content"];
  }
  return tokens;
}

// The "chat_template" of tokenizer_config.json: a string, or a list of
// {"name", "template"} of which "default" is the one for conversations.
Result<std::optional<std::string>> configTemplate(const Json &config,
                                                  const std::string &path) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null())
    return std::optional<std::string>();
  if (it->is_string())
    return std::optional<std::string>(it->get<std::string>());
  if (it->is_array()) {
    for (const Json &named : *it)
      if (named.is_object() && named.value("name", "") == "default" &&
          named.contains("template") && named["template"].is_string())
        return std::optional<std::string>(named["template"].get<std::string>());
    return makeError("{}: \"chat_template\" lists named templates but none "
                     "named \"default\"",
                     path);
  }
  return makeError("{}: \"chat_template\" must be a string or a list of "
                   "named templates",
                   path);
}

} // namespace

Result<std::optional<ChatTemplate>>
ChatTemplate::fromCheckpoint(const std::string &dir) {
  namespace fs = std::filesystem;
  fs::path configPath = fs::path(dir) / "tokenizer_config.json";
  Json config = Json::object();
  if (fs::exists(configPath)) {
    MOE_ASSIGN_OR_RETURN(std::string text, readFile(configPath));
    config = Json::parse(text, nullptr, false);
    if (config.is_discarded() || !config.is_object())
      return makeError("{}: not a JSON object", configPath.string());
  }
  Json specialTokens = specialTokensOf(config);
  fs::path jinjaPath = fs::path(dir) / "chat_template.jinja";
  if (fs::exists(jinjaPath)) {
    MOE_ASSIGN_OR_RETURN(std::string source, readFile(jinjaPath));
    MOE_ASSIGN_OR_RETURN(
        ChatTemplate chat,
        fromSource(source, jinjaPath.string(), std::move(specialTokens)));
    return std::optional<ChatTemplate>(std::move(chat));
  }
  MOE_ASSIGN_OR_RETURN(std::optional<std::string> source,
                       configTemplate(config, configPath.string()));
  if (!source)
    return std::optional<ChatTemplate>();
  MOE_ASSIGN_OR_RETURN(ChatTemplate chat,
                       fromSource(*source,
                                  configPath.string() + " chat_template",
                                  std::move(specialTokens)));
  return std::optional<ChatTemplate>(std::move(chat));
}

Result<ChatTemplate> ChatTemplate::fromSource(std::string_view source,
                                              std::string name,
                                              Json specialTokens) {
  MOE_ASSIGN_OR_RETURN(Template compiled,
                       Template::parse(source, std::move(name)));
  return ChatTemplate(std::move(compiled), std::move(specialTokens));
}

Result<std::string>
ChatTemplate::render(const Conversation &conversation) const {
  if (!conversation.messages.is_array() || conversation.messages.empty())
    return makeError("\"messages\" must be a non-empty list of messages");
  for (const Json &message : conversation.messages)
    if (!message.is_object() || !message.contains("role") ||
        !message["role"].is_string())
      return makeError("each message must be an object with a \"role\"");
  if (!conversation.tools.is_null() && !conversation.tools.is_array())
    return makeError("\"tools\" must be a list");
  if (!conversation.kwargs.is_null() && !conversation.kwargs.is_object())
    return makeError("\"chat_template_kwargs\" must be an object");

  // The variables in the order transformers passes them; the request's
  // kwargs may replace special tokens but not the conversation.
  Json variables = {
      {"messages", conversation.messages},
      {"tools", conversation.tools},
      {"add_generation_prompt", conversation.addGenerationPrompt}};
  for (const auto &[name, value] : specialTokens_.items())
    variables[name] = value;
  if (conversation.kwargs.is_object())
    for (const auto &[name, value] : conversation.kwargs.items()) {
      if (name == "messages" || name == "tools" ||
          name == "add_generation_prompt")
        return makeError("\"chat_template_kwargs\" cannot set \"{}\": give "
                         "it as the request's own field",
                         name);
      variables[name] = value;
    }
  return template_.render(variables, conversation.now);
}

} // namespace moe::chat
