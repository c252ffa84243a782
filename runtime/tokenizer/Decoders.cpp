#include "runtime/tokenizer/Decoders.h"

#include "runtime/tokenizer/ByteLevelAlphabet.h"
#include "runtime/tokenizer/Pattern.h"

namespace moe::tokenizer {

namespace {

class SequenceDecoder final : public Decoder {
public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  Status decodeChain(std::vector<DecodingToken> &tokens) const override {
    for (const auto &step : steps_)
      MOE_RETURN_IF_ERROR(step->decodeChain(tokens));
    return Status::success();
  }

private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

class ByteLevelDecoder final : public Decoder {
public:
  Status decodeChain(std::vector<DecodingToken> &tokens) const override {
    std::string raw;
    for (DecodingToken &token : tokens) {
      raw.clear();
      // A token spelled outside the alphabet stands for its own bytes.
      if (!token.isAddedToken && appendByteLevelBytes(token.bytes, raw))
        token.bytes.swap(raw);
    }
    return Status::success();
  }
};

// "<0xE4>" stands for the byte 0xE4 (sentencepiece's byte fallback).
class ByteFallbackDecoder final : public Decoder {
public:
  Status decodeChain(std::vector<DecodingToken> &tokens) const override {
    for (DecodingToken &token : tokens) {
      const std::string &text = token.bytes;
      if (text.size() != 6 || !text.starts_with("<0x") || text[5] != '>')
        continue;
      int high = hexValue(text[3]), low = hexValue(text[4]);
      if (high >= 0 && low >= 0)
        token.bytes.assign(1, static_cast<char>(high * 16 + low));
    }
    return Status::success();
  }

private:
  static int hexValue(char c) {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  }
};

class FuseDecoder final : public Decoder {
public:
  Status decodeChain(std::vector<DecodingToken> &tokens) const override {
    if (tokens.empty())
      return Status::success();
    DecodingToken fused{"", false};
    for (const DecodingToken &token : tokens)
      fused.bytes += token.bytes;
    tokens.assign(1, std::move(fused));
    return Status::success();
  }
};

class ReplaceDecoder final : public Decoder {
public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  Status decodeChain(std::vector<DecodingToken> &tokens) const override {
    std::string replaced;
    for (DecodingToken &token : tokens) {
      replaced.clear();
      MOE_RETURN_IF_ERROR(pattern_.replaceAll(token.bytes, content_, replaced));
      token.bytes.swap(replaced);
    }
    return Status::success();
  }

private:
  Pattern pattern_;
  std::string content_;
};

// Removes up to `start` leading and `stop` trailing copies of `content`.
class StripDecoder final : public Decoder {
public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  Status decodeChain(std::vector<DecodingToken> &tokens) const override {
    for (DecodingToken &token : tokens) {
      std::string_view text = token.bytes;
      for (size_t i = 0; i < start_ && text.starts_with(content_); ++i)
        text.remove_prefix(content_.size());
      for (size_t i = 0; i < stop_ && text.ends_with(content_); ++i)
        text.remove_suffix(content_.size());
      token.bytes = std::string(text);
    }
    return Status::success();
  }

private:
  std::string content_;
  size_t start_, stop_;
};

// The replacement character becomes a space, except in the first token,
// where HF drops it: there it stands for the space the pre-tokenizer
// prepended.
class MetaspaceDecoder final : public Decoder {
public:
  MetaspaceDecoder(std::string replacement, bool dropInFirstToken)
      : replacement_(std::move(replacement)),
        dropInFirstToken_(dropInFirstToken) {}
  Status decodeChain(std::vector<DecodingToken> &tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string_view space = i == 0 && dropInFirstToken_ ? "" : " ";
      std::string spaced;
      std::string_view text = tokens[i].bytes;
      for (size_t at = text.find(replacement_); at != std::string_view::npos;
           at = text.find(replacement_)) {
        spaced.append(text.substr(0, at));
        spaced.append(space);
        text.remove_prefix(at + replacement_.size());
      }
      spaced.append(text);
      tokens[i].bytes = std::move(spaced);
    }
    return Status::success();
  }

private:
  std::string replacement_;
  bool dropInFirstToken_;
};

template <typename Derived, typename... Args>
Result<std::unique_ptr<Decoder>> makeDecoder(Args &&...args) {
  return std::unique_ptr<Decoder>(
      std::make_unique<Derived>(std::forward<Args>(args)...));
}

} // namespace

Result<std::unique_ptr<Decoder>> parseDecoder(const Json &config,
                                              std::string_view path) {
  MOE_TOKENIZER_TRY(std::string type, componentType(config, path));
  if (type == "Sequence") {
    MOE_TOKENIZER_TRY(const Json *list, requireArray(config, "decoders", path));
    std::string listPath = memberPath(path, "decoders");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      MOE_TOKENIZER_TRY(steps.emplace_back(),
                        parseDecoder((*list)[i], elementPath(listPath, i)));
    }
    return makeDecoder<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel")
    return makeDecoder<ByteLevelDecoder>();
  if (type == "ByteFallback")
    return makeDecoder<ByteFallbackDecoder>();
  if (type == "Fuse")
    return makeDecoder<FuseDecoder>();
  if (type == "Replace") {
    MOE_TOKENIZER_TRY(const Json *patternJson,
                      requireMember(config, "pattern", path));
    MOE_TOKENIZER_TRY(Pattern pattern,
                      Pattern::parse(*patternJson, memberPath(path, "pattern"),
                                     /*subjectsMayBeInvalidUtf8=*/true));
    MOE_TOKENIZER_TRY(std::string content,
                      requireString(config, "content", path));
    return makeDecoder<ReplaceDecoder>(std::move(pattern), std::move(content));
  }
  if (type == "Strip") {
    MOE_TOKENIZER_TRY(std::string content,
                      requireString(config, "content", path));
    if (content.empty())
      return errorAt(memberPath(path, "content"), "empty content");
    MOE_TOKENIZER_TRY(int64_t start, optionalInteger(config, "start", path, 0));
    MOE_TOKENIZER_TRY(int64_t stop, optionalInteger(config, "stop", path, 0));
    if (start < 0 || stop < 0)
      return errorAt(path, "start and stop must not be negative");
    return makeDecoder<StripDecoder>(std::move(content),
                                     static_cast<size_t>(start),
                                     static_cast<size_t>(stop));
  }
  if (type == "Metaspace") {
    MOE_TOKENIZER_TRY(std::string replacement,
                      optionalString(config, "replacement", path, "\u2581"));
    if (replacement.empty())
      return errorAt(memberPath(path, "replacement"), "empty replacement");
    MOE_TOKENIZER_TRY(std::string scheme,
                      optionalString(config, "prepend_scheme", path, "always"));
    MOE_TOKENIZER_TRY(bool addPrefixSpace,
                      optionalBool(config, "add_prefix_space", path, true));
    bool dropInFirstToken = findMember(config, "prepend_scheme")
                                ? scheme != "never"
                                : addPrefixSpace;
    return makeDecoder<MetaspaceDecoder>(std::move(replacement),
                                         dropInFirstToken);
  }
  return unsupportedType(path, type);
}

} // namespace moe::tokenizer
