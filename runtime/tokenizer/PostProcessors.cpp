#include "runtime/tokenizer/PostProcessors.h"

namespace moe::tokenizer {

namespace {

// The ids of a single sequence "A" surrounded by special tokens, following
// the "single" template.
class TemplateProcessing final : public PostProcessor {
public:
  TemplateProcessing(std::vector<int32_t> prefix, std::vector<int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void addSpecialTokens(std::vector<int32_t> &ids) const override {
    ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  }

private:
  std::vector<int32_t> prefix_, suffix_;
};

class NoSpecialTokens final : public PostProcessor {
public:
  void addSpecialTokens(std::vector<int32_t> &) const override {}
};

class SequencePostProcessor final : public PostProcessor {
public:
  explicit SequencePostProcessor(
      std::vector<std::unique_ptr<PostProcessor>> steps)
      : steps_(std::move(steps)) {}
  void addSpecialTokens(std::vector<int32_t> &ids) const override {
    for (const auto &step : steps_)
      step->addSpecialTokens(ids);
  }

private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

Result<std::unique_ptr<PostProcessor>>
parseTemplateProcessing(const Json &config, std::string_view path) {
  MOE_TOKENIZER_TRY(const Json *single, requireArray(config, "single", path));
  MOE_TOKENIZER_TRY(const Json *specialTokens,
                    requireObject(config, "special_tokens", path));
  std::string singlePath = memberPath(path, "single");
  std::string specialPath = memberPath(path, "special_tokens");
  std::vector<int32_t> prefix, suffix;
  bool sawSequence = false;
  for (size_t i = 0; i < single->size(); ++i) {
    const Json &item = (*single)[i];
    std::string itemPath = elementPath(singlePath, i);
    if (const Json *sequence = findMember(item, "Sequence")) {
      MOE_TOKENIZER_TRY(std::string name,
                        requireString(*sequence, "id",
                                      memberPath(itemPath, "Sequence")));
      if (name != "A" || sawSequence)
        return errorAt(itemPath, "a single-sequence template must use "
                                 "sequence \"A\" exactly once");
      sawSequence = true;
      continue;
    }
    const Json *special = findMember(item, "SpecialToken");
    if (!special)
      return errorAt(itemPath, "expected {\"Sequence\": ...} or "
                               "{\"SpecialToken\": ...}");
    MOE_TOKENIZER_TRY(std::string name,
                      requireString(*special, "id",
                                    memberPath(itemPath, "SpecialToken")));
    std::string tokenPath = fmt::format("{}[\"{}\"]", specialPath, name);
    const Json *definition = findMember(*specialTokens, name);
    if (!definition)
      return errorAt(itemPath, fmt::format("special token \"{}\" is not "
                                           "defined in special_tokens", name));
    MOE_TOKENIZER_TRY(const Json *ids,
                      requireArray(*definition, "ids", tokenPath));
    std::vector<int32_t> &target = sawSequence ? suffix : prefix;
    for (size_t j = 0; j < ids->size(); ++j) {
      MOE_TOKENIZER_TRY(
          target.emplace_back(),
          tokenId((*ids)[j], elementPath(memberPath(tokenPath, "ids"), j)));
    }
  }
  if (!sawSequence)
    return errorAt(singlePath, "the template never uses sequence \"A\"");
  return std::unique_ptr<PostProcessor>(std::make_unique<TemplateProcessing>(
      std::move(prefix), std::move(suffix)));
}

} // namespace

Result<std::unique_ptr<PostProcessor>> parsePostProcessor(const Json &config,
                                                          std::string_view path) {
  MOE_TOKENIZER_TRY(std::string type, componentType(config, path));
  if (type == "TemplateProcessing")
    return parseTemplateProcessing(config, path);
  if (type == "ByteLevel")
    return std::unique_ptr<PostProcessor>(std::make_unique<NoSpecialTokens>());
  if (type == "Sequence") {
    MOE_TOKENIZER_TRY(const Json *list,
                      requireArray(config, "processors", path));
    std::string listPath = memberPath(path, "processors");
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      MOE_TOKENIZER_TRY(steps.emplace_back(),
                        parsePostProcessor((*list)[i], elementPath(listPath, i)));
    }
    return std::unique_ptr<PostProcessor>(
        std::make_unique<SequencePostProcessor>(std::move(steps)));
  }
  return unsupportedType(path, type);
}

} // namespace moe::tokenizer
