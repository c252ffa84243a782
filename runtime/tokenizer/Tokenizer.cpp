#include "runtime/tokenizer/Tokenizer.h"

#include <fstream>
#include <mutex>
#include <sstream>

#include "runtime/tokenizer/AddedTokens.h"
#include "runtime/tokenizer/BpeModel.h"
#include "runtime/tokenizer/Decoders.h"
#include "runtime/tokenizer/JsonAccess.h"
#include "runtime/tokenizer/Normalizers.h"
#include "runtime/tokenizer/PostProcessors.h"
#include "runtime/tokenizer/PreTokenizers.h"
#include "runtime/tokenizer/Utf8.h"

namespace moe {

using namespace tokenizer;

struct Tokenizer::Impl {
  struct TokenEntry {
    std::string text;
    bool defined = false;
    bool added = false;
    bool special = false;
  };

  std::unique_ptr<Normalizer> normalizer;     // May be null.
  std::unique_ptr<PreTokenizer> preTokenizer; // May be null.
  BpeModel model;
  std::unique_ptr<PostProcessor> postProcessor; // May be null.
  std::unique_ptr<Decoder> decoder;             // May be null.
  // Added tokens matched in the raw text, and those matched after
  // normalization (normalized: true).
  std::unique_ptr<AddedTokenMatcher> rawTokens, normalizedTokens;
  std::vector<TokenEntry> tokens; // By id.
  StringMap<int32_t> addedTokenIds;

  // Encoding scratch, reused across calls under `encodeMutex`.
  mutable std::mutex encodeMutex;
  mutable BpeModel::Workspace workspace;
  mutable PreTokenizedText preTokenized, preTokenizeScratch;
  mutable std::vector<AddedTokenMatcher::Segment> rawSegments,
      normalizedSegments;

  Status encodeSection(std::string_view section, bool atTextStart,
                       std::vector<int32_t> &ids) const;
  Status encodeWords(std::string_view text, bool atTextStart,
                     std::vector<int32_t> &ids) const;
  // Decoded bytes before UTF-8 repair.
  Status decodeBytes(std::span<const int32_t> ids, bool skipSpecialTokens,
                     std::string &bytes) const;
  Status checkId(int32_t id) const;

  static Result<std::unique_ptr<Impl>> build(const Json &root);
};

namespace {

Result<std::vector<AddedToken>> parseAddedTokens(const Json &root) {
  std::vector<AddedToken> added;
  const Json *list = findMember(root, "added_tokens");
  if (!list)
    return added;
  if (!list->is_array())
    return errorAt("added_tokens", "expected an array");
  for (size_t i = 0; i < list->size(); ++i) {
    const Json &entry = (*list)[i];
    std::string path = elementPath("added_tokens", i);
    AddedToken token;
    MOE_TOKENIZER_TRY(const Json *id, requireMember(entry, "id", path));
    MOE_TOKENIZER_TRY(token.id, tokenId(*id, memberPath(path, "id")));
    MOE_TOKENIZER_TRY(token.content, requireString(entry, "content", path));
    MOE_TOKENIZER_TRY(token.special,
                      optionalBool(entry, "special", path, false));
    MOE_TOKENIZER_TRY(token.singleWord,
                      optionalBool(entry, "single_word", path, false));
    MOE_TOKENIZER_TRY(token.leftStrip,
                      optionalBool(entry, "lstrip", path, false));
    MOE_TOKENIZER_TRY(token.rightStrip,
                      optionalBool(entry, "rstrip", path, false));
    MOE_TOKENIZER_TRY(token.normalized,
                      optionalBool(entry, "normalized", path, !token.special));
    added.push_back(std::move(token));
  }
  return added;
}

} // namespace

Result<std::unique_ptr<Tokenizer::Impl>> Tokenizer::Impl::build(const Json &root) {
  if (!root.is_object())
    return Error(fmt::format("expected a JSON object, found {}",
                             root.type_name()));
  auto impl = std::make_unique<Tokenizer::Impl>();

  if (const Json *config = findMember(root, "normalizer")) {
    MOE_TOKENIZER_TRY(impl->normalizer, parseNormalizer(*config, "normalizer"));
  }
  bool byteLevelInput = false;
  if (const Json *config = findMember(root, "pre_tokenizer")) {
    MOE_TOKENIZER_TRY(ParsedPreTokenizer parsed,
                      parsePreTokenizer(*config, "pre_tokenizer"));
    impl->preTokenizer = std::move(parsed.preTokenizer);
    byteLevelInput = parsed.endsWithByteLevel;
  }
  MOE_TOKENIZER_TRY(const Json *model, requireObject(root, "model", ""));
  MOE_TOKENIZER_TRY(std::string modelType, componentType(*model, "model"));
  if (modelType != "BPE")
    return unsupportedType("model", modelType);
  MOE_TOKENIZER_TRY(impl->model,
                    BpeModel::parse(*model, "model", byteLevelInput));
  if (const Json *config = findMember(root, "post_processor")) {
    MOE_TOKENIZER_TRY(impl->postProcessor,
                      parsePostProcessor(*config, "post_processor"));
  }
  if (const Json *config = findMember(root, "decoder")) {
    MOE_TOKENIZER_TRY(impl->decoder, parseDecoder(*config, "decoder"));
  }

  auto defineToken = [&](int32_t id, const std::string &text, bool added,
                         bool special) {
    auto index = static_cast<size_t>(id);
    if (index >= impl->tokens.size())
      impl->tokens.resize(index + 1);
    impl->tokens[index] = {text, true, added, special};
  };
  for (const auto &[text, id] : impl->model.vocabulary())
    defineToken(id, text, false, false);

  // An added token's content replaces a vocabulary entry of the same id.
  MOE_TOKENIZER_TRY(std::vector<AddedToken> added, parseAddedTokens(root));
  std::vector<AddedToken> raw, normalized;
  for (size_t i = 0; i < added.size(); ++i) {
    AddedToken token = added[i];
    defineToken(token.id, token.content, true, token.special);
    impl->addedTokenIds[token.content] = token.id;
    if (token.normalized && impl->normalizer) {
      Status status = impl->normalizer->normalize(token.content);
      if (!status.ok())
        return status.error().withContext(elementPath("added_tokens", i));
      normalized.push_back(std::move(token));
    } else {
      raw.push_back(std::move(token));
    }
  }
  impl->rawTokens = std::make_unique<AddedTokenMatcher>(raw);
  impl->normalizedTokens = std::make_unique<AddedTokenMatcher>(normalized);
  return impl;
}

Status Tokenizer::Impl::encodeWords(std::string_view text, bool atTextStart,
                                    std::vector<int32_t> &ids) const {
  preTokenized.text.assign(text);
  preTokenized.pieces.assign(1, {0, static_cast<uint32_t>(text.size())});
  if (preTokenizer)
    MOE_RETURN_IF_ERROR(preTokenizer->preTokenize(preTokenized, atTextStart,
                                                  preTokenizeScratch));
  for (const PreTokenizedText::Piece &piece : preTokenized.pieces)
    model.encodeWord(preTokenized.piece(piece), ids, workspace);
  return Status::success();
}

Status Tokenizer::Impl::encodeSection(std::string_view section,
                                      bool atTextStart,
                                      std::vector<int32_t> &ids) const {
  std::string normalizedText(section);
  if (normalizer)
    MOE_RETURN_IF_ERROR(normalizer->normalize(normalizedText));
  if (normalizedText.empty())
    return Status::success();
  if (normalizedTokens->empty())
    return encodeWords(normalizedText, atTextStart, ids);
  normalizedSegments.clear();
  normalizedTokens->split(normalizedText, normalizedSegments);
  for (const AddedTokenMatcher::Segment &segment : normalizedSegments) {
    if (segment.tokenId >= 0) {
      ids.push_back(segment.tokenId);
      continue;
    }
    MOE_RETURN_IF_ERROR(encodeWords(
        std::string_view(normalizedText)
            .substr(segment.begin, segment.end - segment.begin),
        atTextStart && segment.begin == 0, ids));
  }
  return Status::success();
}

Status Tokenizer::Impl::checkId(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= tokens.size() ||
      !tokens[static_cast<size_t>(id)].defined)
    return makeError("token id {} is not defined by the tokenizer "
                     "(vocabulary size {})",
                     id, tokens.size());
  return Status::success();
}

Status Tokenizer::Impl::decodeBytes(std::span<const int32_t> ids,
                                    bool skipSpecialTokens,
                                    std::string &bytes) const {
  std::vector<DecodingToken> chain;
  chain.reserve(ids.size());
  for (int32_t id : ids) {
    MOE_RETURN_IF_ERROR(checkId(id));
    const TokenEntry &entry = tokens[static_cast<size_t>(id)];
    if (skipSpecialTokens && entry.special)
      continue;
    chain.push_back({entry.text, entry.added});
  }
  if (!decoder) {
    // Without a decoder HF joins the tokens with spaces.
    for (size_t i = 0; i < chain.size(); ++i) {
      if (i > 0)
        bytes.push_back(' ');
      bytes += chain[i].bytes;
    }
    return Status::success();
  }
  MOE_RETURN_IF_ERROR(decoder->decodeChain(chain));
  for (const DecodingToken &token : chain)
    bytes += token.bytes;
  return Status::success();
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer &&) noexcept = default;
Tokenizer &Tokenizer::operator=(Tokenizer &&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Result<Tokenizer> Tokenizer::fromFile(const std::string &path) {
  std::ifstream file(path, std::ios::binary);
  if (!file)
    return makeError("{}: cannot open the file", path);
  std::ostringstream contents;
  contents << file.rdbuf();
  if (!file.good() && !file.eof())
    return makeError("{}: cannot read the file", path);
  return fromJson(contents.str(), path);
}

Result<Tokenizer> Tokenizer::fromJson(std::string_view json,
                                      std::string_view sourceName) {
  Json root;
  try {
    root = Json::parse(json);
  } catch (const Json::parse_error &error) {
    // nlohmann's message starts with an internal tag: keep what follows.
    std::string_view what = error.what();
    if (size_t tagEnd = what.find("] "); tagEnd != std::string_view::npos)
      what.remove_prefix(tagEnd + 2);
    return makeError("{}: invalid JSON: {}", sourceName, what);
  }
  Result<std::unique_ptr<Impl>> impl = Impl::build(root);
  if (!impl)
    return impl.error().withContext(std::string(sourceName));
  return Tokenizer(std::move(*impl));
}

Result<std::vector<int32_t>> Tokenizer::encode(std::string_view text,
                                               bool addSpecialTokens) const {
  std::string repaired;
  if (!isValidUtf8(text)) {
    appendUtf8Lossy(repaired, text);
    text = repaired;
  }
  std::lock_guard<std::mutex> lock(impl_->encodeMutex);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  auto &segments = impl_->rawSegments;
  segments.clear();
  impl_->rawTokens->split(text, segments);
  for (const AddedTokenMatcher::Segment &segment : segments) {
    if (segment.tokenId >= 0) {
      ids.push_back(segment.tokenId);
      continue;
    }
    Status status = impl_->encodeSection(
        text.substr(segment.begin, segment.end - segment.begin),
        segment.begin == 0, ids);
    if (!status.ok())
      return status.error();
  }
  if (addSpecialTokens && impl_->postProcessor)
    impl_->postProcessor->addSpecialTokens(ids);
  return ids;
}

Result<std::string> Tokenizer::decode(std::span<const int32_t> ids,
                                      bool skipSpecialTokens) const {
  std::string bytes;
  Status status = impl_->decodeBytes(ids, skipSpecialTokens, bytes);
  if (!status.ok())
    return status.error();
  if (isValidUtf8(bytes))
    return bytes;
  std::string text;
  appendUtf8Lossy(text, bytes);
  return text;
}

size_t Tokenizer::vocabularySize() const { return impl_->tokens.size(); }

std::optional<int32_t> Tokenizer::tokenToId(std::string_view token) const {
  if (auto it = impl_->addedTokenIds.find(token);
      it != impl_->addedTokenIds.end())
    return it->second;
  const StringMap<int32_t> &vocabulary = impl_->model.vocabulary();
  if (auto it = vocabulary.find(token); it != vocabulary.end())
    return it->second;
  return std::nullopt;
}

bool Tokenizer::isSpecialToken(int32_t id) const {
  return impl_->checkId(id).ok() &&
         impl_->tokens[static_cast<size_t>(id)].special;
}

StreamingDecoder::StreamingDecoder(const Tokenizer &tokenizer,
                                   bool skipSpecialTokens)
    : tokenizer_(&tokenizer), skipSpecialTokens_(skipSpecialTokens) {}

Result<std::string> StreamingDecoder::push(int32_t id) {
  const Tokenizer::Impl &impl = *tokenizer_->impl_;
  Status valid = impl.checkId(id);
  if (!valid.ok())
    return valid.error();
  if (skipSpecialTokens_ && impl.tokens[static_cast<size_t>(id)].special)
    return std::string();
  window_.push_back(id);
  std::string bytes;
  Status status = impl.decodeBytes(window_, false, bytes);
  if (!status.ok())
    return status.error();
  // Every supported decoder maps a prefix of the ids to a prefix of the
  // bytes, so the new ids contribute what follows the context's bytes.
  // Until they add bytes they stay in the window.
  if (bytes.size() <= contextBytes_.size())
    return std::string();
  pendingBytes_.append(bytes, contextBytes_.size());
  window_.erase(window_.begin(),
                window_.begin() + static_cast<ptrdiff_t>(contextLength_));
  contextLength_ = window_.size();
  contextBytes_.clear();
  status = impl.decodeBytes(window_, false, contextBytes_);
  if (!status.ok())
    return status.error();

  size_t complete =
      pendingBytes_.size() - incompleteUtf8TailLength(pendingBytes_);
  std::string text;
  appendUtf8Lossy(text, std::string_view(pendingBytes_).substr(0, complete));
  pendingBytes_.erase(0, complete);
  return text;
}

std::string StreamingDecoder::finish() {
  std::string text;
  appendUtf8Lossy(text, pendingBytes_);
  window_.clear();
  contextLength_ = 0;
  contextBytes_.clear();
  pendingBytes_.clear();
  return text;
}

} // namespace moe
