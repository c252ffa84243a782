#include "runtime/tokenizer/Normalizers.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

#include <utf8proc.h>

#include "runtime/tokenizer/Pattern.h"
#include "runtime/tokenizer/Utf8.h"

namespace moe::tokenizer {

namespace {

class SequenceNormalizer final : public Normalizer {
public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  Status normalize(std::string &text) const override {
    for (const auto &step : steps_)
      MOE_RETURN_IF_ERROR(step->normalize(text));
    return Status::success();
  }

private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class UnicodeNormalizer final : public Normalizer {
public:
  explicit UnicodeNormalizer(utf8proc_option_t options) : options_(options) {}
  Status normalize(std::string &text) const override {
    // ASCII is invariant under every normalization form.
    if (std::all_of(text.begin(), text.end(),
                    [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
      return Status::success();
    utf8proc_uint8_t *result = nullptr;
    utf8proc_ssize_t length = utf8proc_map(
        reinterpret_cast<const utf8proc_uint8_t *>(text.data()),
        static_cast<utf8proc_ssize_t>(text.size()), &result, options_);
    if (length < 0)
      return makeError("Unicode normalization failed: {}",
                       utf8proc_errmsg(length));
    text.assign(reinterpret_cast<const char *>(result),
                static_cast<size_t>(length));
    std::free(result);
    return Status::success();
  }

private:
  utf8proc_option_t options_;
};

class PrependNormalizer final : public Normalizer {
public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  Status normalize(std::string &text) const override {
    if (!text.empty())
      text.insert(0, prefix_);
    return Status::success();
  }

private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  Status normalize(std::string &text) const override {
    std::string replaced;
    replaced.reserve(text.size() + text.size() / 4);
    MOE_RETURN_IF_ERROR(pattern_.replaceAll(text, content_, replaced));
    text = std::move(replaced);
    return Status::success();
  }

private:
  Pattern pattern_;
  std::string content_;
};

class StripNormalizer final : public Normalizer {
public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  Status normalize(std::string &text) const override {
    size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        size_t length;
        if (!isWhiteSpace(decodeUtf8(text, begin, length)))
          break;
        begin += length;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = previousCharacterStart(text, end);
        size_t length;
        if (!isWhiteSpace(decodeUtf8(text, start, length)))
          break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
    return Status::success();
  }

private:
  bool left_, right_;
};

template <typename Derived, typename... Args>
Result<std::unique_ptr<Normalizer>> makeNormalizer(Args &&...args) {
  return std::unique_ptr<Normalizer>(
      std::make_unique<Derived>(std::forward<Args>(args)...));
}

} // namespace

Result<std::unique_ptr<Normalizer>> parseNormalizer(const Json &config,
                                                    std::string_view path) {
  MOE_TOKENIZER_TRY(std::string type, componentType(config, path));
  if (type == "Sequence") {
    MOE_TOKENIZER_TRY(const Json *list,
                      requireArray(config, "normalizers", path));
    std::string listPath = memberPath(path, "normalizers");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      MOE_TOKENIZER_TRY(steps.emplace_back(),
                        parseNormalizer((*list)[i], elementPath(listPath, i)));
    }
    return makeNormalizer<SequenceNormalizer>(std::move(steps));
  }
  constexpr auto stable = UTF8PROC_STABLE;
  if (type == "NFC")
    return makeNormalizer<UnicodeNormalizer>(
        utf8proc_option_t(stable | UTF8PROC_COMPOSE));
  if (type == "NFD")
    return makeNormalizer<UnicodeNormalizer>(
        utf8proc_option_t(stable | UTF8PROC_DECOMPOSE));
  if (type == "NFKC")
    return makeNormalizer<UnicodeNormalizer>(
        utf8proc_option_t(stable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  if (type == "NFKD")
    return makeNormalizer<UnicodeNormalizer>(
        utf8proc_option_t(stable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
  if (type == "Prepend") {
    MOE_TOKENIZER_TRY(std::string prefix,
                      requireString(config, "prepend", path));
    return makeNormalizer<PrependNormalizer>(std::move(prefix));
  }
  if (type == "Replace") {
    MOE_TOKENIZER_TRY(const Json *patternJson,
                      requireMember(config, "pattern", path));
    MOE_TOKENIZER_TRY(Pattern pattern,
                      Pattern::parse(*patternJson, memberPath(path, "pattern")));
    MOE_TOKENIZER_TRY(std::string content,
                      requireString(config, "content", path));
    return makeNormalizer<ReplaceNormalizer>(std::move(pattern),
                                             std::move(content));
  }
  if (type == "Strip") {
    MOE_TOKENIZER_TRY(bool left, optionalBool(config, "strip_left", path, true));
    MOE_TOKENIZER_TRY(bool right,
                      optionalBool(config, "strip_right", path, true));
    return makeNormalizer<StripNormalizer>(left, right);
  }
  return unsupportedType(path, type);
}

} // namespace moe::tokenizer
