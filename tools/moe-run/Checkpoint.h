// What moe-run reads from a checkpoint directory besides its weights: the
// tokenizer, the chat template and generation_config.json's EOS ids.
#pragma once

#include "runtime/chat/ChatTemplate.h"
#include "runtime/io/Jsonl.h"
#include "runtime/support/Result.h"
#include "runtime/tokenizer/Tokenizer.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe {

/// The checkpoint's tokenizer.json, or none (synthetic weights, or a
/// checkpoint without one: prompts then give token ids).
Result<std::optional<Tokenizer>>
checkpointTokenizer(const std::string &checkpoint);

/// The checkpoint's chat template, for the requests that hold "messages".
/// One that cannot be read does not stop the job: that is said once when
/// it is read, and each chat request is answered with its error.
struct CheckpointChat {
  std::optional<chat::ChatTemplate> chatTemplate;
  std::string unavailable;

  ChatPrompting prompting() const {
    return {chatTemplate ? &*chatTemplate : nullptr, unavailable};
  }
};

CheckpointChat checkpointChat(const std::string &checkpoint);

/// The end-of-sequence ids of the checkpoint's generation_config.json
/// ("eos_token_id": one id or a list), none without that file: chat models
/// often end turns with an id config.json does not name.
Result<std::vector<int32_t>> generationConfigEos(const std::string &checkpoint);

} // namespace moe
