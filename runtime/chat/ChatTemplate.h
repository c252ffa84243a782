// A checkpoint's chat template, applied as transformers' apply_chat_template
// applies it: the conversation's messages, its tools, add_generation_prompt,
// the tokenizer's special tokens (bos_token, eos_token, ...) and the
// request's chat_template_kwargs (Qwen3's enable_thinking...) are the
// template's top-level variables. The text it renders is the prompt, to be
// tokenized without adding special tokens again.
//
// Rendering follows transformers (Python's Jinja) where the reference
// @huggingface/jinja departs from it: none prints "None", booleans "True",
// lists and dicts as Python's repr; == compares as Python (a string never
// equals false, dicts by value); strip('\n') strips only the characters
// given; selectattr on a missing attribute tests it as undefined; `.items()`
// of a dict with an "items" key is the method; undefined is iterable (an
// empty sequence), and the empty text to trim, upper, lower, title,
// capitalize and replace. Unlike Python, integers have 64 bits: an overflow
// is an error.
#pragma once

#include "runtime/chat/Template.h"

#include <optional>

namespace moe::chat {

struct Conversation {
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  nlohmann::ordered_json tools;  // null: no tools
  nlohmann::ordered_json kwargs; // null or an object of extra variables
  bool addGenerationPrompt = true;
  // The time strftime_now() formats, in seconds since the epoch: the
  // clock's when unset (a fixed time renders the same prompt every day).
  std::optional<int64_t> now;
};

class ChatTemplate {
public:
  // `dir`/chat_template.jinja, else the "chat_template" of
  // `dir`/tokenizer_config.json (a string, or a list of named templates of
  // which "default" is taken); none when the checkpoint has neither. Fails
  // on a template it cannot parse, naming the file, line and construct.
  static Result<std::optional<ChatTemplate>>
  fromCheckpoint(const std::string &dir);

  // `specialTokens`: the variables bos_token, eos_token... (an object).
  static Result<ChatTemplate> fromSource(std::string_view source,
                                         std::string name,
                                         nlohmann::ordered_json specialTokens);

  // The prompt text of `conversation`, or why the template refused it (a
  // raise_exception, a value it cannot use).
  Result<std::string> render(const Conversation &conversation) const;

private:
  ChatTemplate(Template compiled, nlohmann::ordered_json specialTokens)
      : template_(std::move(compiled)),
        specialTokens_(std::move(specialTokens)) {}

  Template template_;
  nlohmann::ordered_json specialTokens_;
};

} // namespace moe::chat
