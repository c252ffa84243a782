#include "Checkpoint.h"

#include "runtime/io/RequestFields.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

namespace moe {

Result<std::optional<Tokenizer>>
checkpointTokenizer(const std::string &checkpoint) {
  std::string path = checkpoint + "/tokenizer.json";
  if (checkpoint.empty() || !std::filesystem::exists(path))
    return std::optional<Tokenizer>();
  MOE_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::fromFile(path));
  return std::optional<Tokenizer>(std::move(tokenizer));
}

CheckpointChat checkpointChat(const std::string &checkpoint) {
  CheckpointChat chat;
  if (checkpoint.empty())
    return chat;
  Result<std::optional<chat::ChatTemplate>> loaded =
      chat::ChatTemplate::fromCheckpoint(checkpoint);
  if (loaded.ok()) {
    chat.chatTemplate = std::move(*loaded);
    return chat;
  }
  chat.unavailable = loaded.error().message();
  std::fprintf(stderr,
               "moe-run: warning: %s; requests with \"messages\" are "
               "answered with this error\n",
               chat.unavailable.c_str());
  return chat;
}

Result<std::vector<int32_t>>
generationConfigEos(const std::string &checkpoint) {
  std::string path = checkpoint + "/generation_config.json";
  if (checkpoint.empty() || !std::filesystem::exists(path))
    return std::vector<int32_t>();
  std::ifstream file(path);
  nlohmann::json config = nlohmann::json::parse(file, nullptr, false);
  if (config.is_discarded() || !config.is_object())
    return makeError("{}: not a JSON object", path);
  auto eos = config.find("eos_token_id");
  if (eos == config.end() || eos->is_null())
    return std::vector<int32_t>();
  nlohmann::json ids = eos->is_array() ? *eos : nlohmann::json::array({*eos});
  std::vector<int32_t> out;
  for (const nlohmann::json &id : ids) {
    if (!isTokenId(id))
      return makeError("{}: \"eos_token_id\" must be a token id or a list "
                       "of them",
                       path);
    out.push_back(id.get<int32_t>());
  }
  return out;
}

} // namespace moe
