#include "runtime/tokenizer/BpeModel.h"

#include <algorithm>
#include <bit>

#include "runtime/tokenizer/ByteLevelAlphabet.h"
#include "runtime/tokenizer/Utf8.h"

namespace moe::tokenizer {

namespace {

// Long words (whitespace runs, base64 blobs) are rare and would only crowd
// the cache; the cache is dropped whole when it outgrows its budget.
constexpr size_t kMaxCachedWordBytes = 128;
constexpr size_t kMaxCachedWords = 1 << 18;

bool earlierMerge(int32_t rankA, int32_t leftA, int32_t rankB, int32_t leftB) {
  return rankA != rankB ? rankA < rankB : leftA < leftB;
}

} // namespace

void BpeModel::MergeTable::reserve(size_t rules) {
  size_t slots = std::bit_ceil(std::max<size_t>(16, rules * 2));
  rules_.assign(slots, Rule{kEmpty, 0, 0});
  shift_ = 64 - static_cast<unsigned>(std::countr_zero(slots));
}

void BpeModel::MergeTable::insert(int32_t left, int32_t right, int32_t rank,
                                  int32_t mergedId) {
  uint64_t key = keyOf(left, right);
  size_t mask = rules_.size() - 1;
  for (size_t slot = slotOf(key);; slot = (slot + 1) & mask) {
    Rule &rule = rules_[slot];
    // A repeated pair keeps its last rank, as in the Rust and JS libraries.
    if (rule.key == kEmpty || rule.key == key) {
      rule = Rule{key, rank, mergedId};
      return;
    }
  }
}

const BpeModel::MergeTable::Rule *
BpeModel::MergeTable::find(int32_t left, int32_t right) const {
  uint64_t key = keyOf(left, right);
  size_t mask = rules_.size() - 1;
  for (size_t slot = slotOf(key);; slot = (slot + 1) & mask) {
    const Rule &rule = rules_[slot];
    if (rule.key == key)
      return &rule;
    if (rule.key == kEmpty)
      return nullptr;
  }
}

Result<BpeModel> BpeModel::parse(const Json &model, std::string_view path,
                                 bool byteLevelInput) {
  BpeModel bpe;
  bpe.byteLevelInput_ = byteLevelInput;

  if (const Json *dropout = findMember(model, "dropout");
      dropout && !(dropout->is_number() && dropout->get<double>() == 0.0))
    return errorAt(memberPath(path, "dropout"),
                   "BPE dropout is not supported (it makes encoding random)");
  for (std::string_view affix : {"continuing_subword_prefix",
                                 "end_of_word_suffix"}) {
    MOE_TOKENIZER_TRY(std::string value,
                      optionalString(model, affix, path, ""));
    if (!value.empty())
      return errorAt(memberPath(path, affix), "non-empty values are not "
                                              "supported");
  }
  MOE_TOKENIZER_TRY(bpe.fuseUnknown_,
                    optionalBool(model, "fuse_unk", path, false));
  MOE_TOKENIZER_TRY(bpe.byteFallback_,
                    optionalBool(model, "byte_fallback", path, false));
  MOE_TOKENIZER_TRY(bpe.ignoreMerges_,
                    optionalBool(model, "ignore_merges", path, false));

  MOE_TOKENIZER_TRY(const Json *vocab, requireObject(model, "vocab", path));
  std::string vocabPath = memberPath(path, "vocab");
  bpe.tokenIds_.reserve(vocab->size());
  for (auto entry = vocab->begin(); entry != vocab->end(); ++entry) {
    MOE_TOKENIZER_TRY(
        int32_t id,
        tokenId(entry.value(), fmt::format("{}[\"{}\"]", vocabPath, entry.key())));
    bpe.tokenIds_.emplace(entry.key(), id);
  }
  auto idOf = [&](std::string_view token) -> int32_t {
    auto it = bpe.tokenIds_.find(token);
    return it == bpe.tokenIds_.end() ? -1 : it->second;
  };

  MOE_TOKENIZER_TRY(std::string unknown,
                    optionalString(model, "unk_token", path, ""));
  if (!unknown.empty()) {
    bpe.unknownId_ = idOf(unknown);
    if (bpe.unknownId_ < 0)
      return errorAt(memberPath(path, "unk_token"),
                     fmt::format("\"{}\" is not in the vocabulary", unknown));
  }

  MOE_TOKENIZER_TRY(const Json *merges, requireArray(model, "merges", path));
  std::string mergesPath = memberPath(path, "merges");
  bpe.merges_.reserve(merges->size());
  std::string merged;
  for (size_t rank = 0; rank < merges->size(); ++rank) {
    const Json &rule = (*merges)[rank];
    std::string_view left, right;
    if (rule.is_string()) {
      // The older form "left right": tokens hold no spaces there.
      const auto &text = rule.get_ref<const std::string &>();
      size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
        return errorAt(elementPath(mergesPath, rank),
                       fmt::format("expected two tokens separated by one "
                                   "space, found \"{}\"", text));
      left = std::string_view(text).substr(0, space);
      right = std::string_view(text).substr(space + 1);
    } else if (rule.is_array() && rule.size() == 2 && rule[0].is_string() &&
               rule[1].is_string()) {
      left = rule[0].get_ref<const std::string &>();
      right = rule[1].get_ref<const std::string &>();
    } else {
      return errorAt(elementPath(mergesPath, rank),
                     "expected \"left right\" or [\"left\", \"right\"]");
    }
    merged.assign(left);
    merged.append(right);
    int32_t leftId = idOf(left), rightId = idOf(right), mergedId = idOf(merged);
    for (auto [token, id] : {std::pair{left, leftId}, std::pair{right, rightId},
                             std::pair{std::string_view(merged), mergedId}}) {
      if (id < 0)
        return errorAt(elementPath(mergesPath, rank),
                       fmt::format("\"{}\" is not in the vocabulary", token));
    }
    bpe.merges_.insert(leftId, rightId, static_cast<int32_t>(rank), mergedId);
  }

  std::fill(std::begin(bpe.byteIds_), std::end(bpe.byteIds_), -1);
  std::fill(std::begin(bpe.byteFallbackIds_), std::end(bpe.byteFallbackIds_), -1);
  std::string spelling;
  for (unsigned byte = 0; byte < 256; ++byte) {
    if (byteLevelInput) {
      spelling.clear();
      appendUtf8(spelling, byteLevelCodePoint(static_cast<unsigned char>(byte)));
      bpe.byteIds_[byte] = idOf(spelling);
    }
    if (bpe.byteFallback_)
      bpe.byteFallbackIds_[byte] = idOf(fmt::format("<0x{:02X}>", byte));
  }
  if (byteLevelInput && bpe.ignoreMerges_) {
    std::string raw;
    for (const auto &[token, id] : bpe.tokenIds_) {
      raw.clear();
      if (appendByteLevelBytes(token, raw))
        bpe.rawTokenIds_.emplace(raw, id);
    }
  }
  return bpe;
}

void BpeModel::appendSymbols(std::string_view word,
                             Workspace &workspace) const {
  auto &symbols = workspace.symbols;
  symbols.clear();
  auto push = [&](int32_t id) {
    auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, -1});
    if (index > 0)
      symbols[static_cast<size_t>(index) - 1].next = index;
  };
  bool previousUnknown = false;
  for (size_t pos = 0; pos < word.size();) {
    size_t length =
        byteLevelInput_
            ? 1
            : std::min(utf8SequenceLength(static_cast<unsigned char>(word[pos])),
                       word.size() - pos);
    std::string_view character = word.substr(pos, length);
    pos += length;
    int32_t id;
    if (byteLevelInput_) {
      id = byteIds_[static_cast<unsigned char>(character[0])];
    } else {
      auto it = tokenIds_.find(character);
      id = it == tokenIds_.end() ? -1 : it->second;
    }
    if (id >= 0) {
      push(id);
      previousUnknown = false;
      continue;
    }
    if (byteFallback_ &&
        std::all_of(character.begin(), character.end(), [&](char byte) {
          return byteFallbackIds_[static_cast<unsigned char>(byte)] >= 0;
        })) {
      for (char byte : character)
        push(byteFallbackIds_[static_cast<unsigned char>(byte)]);
      previousUnknown = false;
      continue;
    }
    // Without an unknown token the character is dropped, as HF does.
    if (unknownId_ >= 0 && !(fuseUnknown_ && previousUnknown))
      push(unknownId_);
    previousUnknown = unknownId_ >= 0;
  }
}

void BpeModel::pushCandidate(Workspace &workspace, int32_t left) const {
  const auto &symbols = workspace.symbols;
  int32_t right = symbols[static_cast<size_t>(left)].next;
  if (right < 0)
    return;
  int32_t leftId = symbols[static_cast<size_t>(left)].id;
  int32_t rightId = symbols[static_cast<size_t>(right)].id;
  const MergeTable::Rule *rule = merges_.find(leftId, rightId);
  if (!rule)
    return;
  workspace.heap.push_back(
      {rule->rank, left, right, leftId, rightId, rule->mergedId});
  std::push_heap(workspace.heap.begin(), workspace.heap.end(),
                 [](const auto &a, const auto &b) {
                   return earlierMerge(b.rank, b.left, a.rank, a.left);
                 });
}

void BpeModel::mergeSymbols(Workspace &workspace) const {
  auto &symbols = workspace.symbols;
  auto &heap = workspace.heap;
  heap.clear();
  for (size_t i = 0; i + 1 < symbols.size(); ++i)
    pushCandidate(workspace, static_cast<int32_t>(i));
  auto later = [](const auto &a, const auto &b) {
    return earlierMerge(b.rank, b.left, a.rank, a.left);
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    Workspace::Candidate candidate = heap.back();
    heap.pop_back();
    auto &left = symbols[static_cast<size_t>(candidate.left)];
    auto &right = symbols[static_cast<size_t>(candidate.right)];
    // Skip candidates made stale by an earlier merge of either side.
    if (left.id != candidate.leftId || left.next != candidate.right ||
        right.id != candidate.rightId)
      continue;
    left.id = candidate.mergedId;
    left.next = right.next;
    if (right.next >= 0)
      symbols[static_cast<size_t>(right.next)].previous = candidate.left;
    right.id = -1;
    if (left.previous >= 0)
      pushCandidate(workspace, left.previous);
    pushCandidate(workspace, candidate.left);
  }
}

void BpeModel::encodeWord(std::string_view word, std::vector<int32_t> &ids,
                          Workspace &workspace) const {
  if (word.empty())
    return;
  bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    auto it = workspace.cache.find(word);
    if (it != workspace.cache.end()) {
      auto begin = workspace.cachedIds.begin() + it->second.offset;
      ids.insert(ids.end(), begin, begin + it->second.length);
      return;
    }
  }
  size_t firstId = ids.size();
  const StringMap<int32_t> &wholeWords =
      byteLevelInput_ ? rawTokenIds_ : tokenIds_;
  auto whole = ignoreMerges_ ? wholeWords.find(word) : wholeWords.end();
  if (whole != wholeWords.end()) {
    ids.push_back(whole->second);
  } else {
    appendSymbols(word, workspace);
    mergeSymbols(workspace);
    for (int32_t i = workspace.symbols.empty() ? -1 : 0; i >= 0;
         i = workspace.symbols[static_cast<size_t>(i)].next)
      ids.push_back(workspace.symbols[static_cast<size_t>(i)].id);
  }
  if (!cacheable)
    return;
  if (workspace.cache.size() >= kMaxCachedWords) {
    workspace.cache.clear();
    workspace.cachedIds.clear();
  }
  auto offset = static_cast<uint32_t>(workspace.cachedIds.size());
  workspace.cachedIds.insert(workspace.cachedIds.end(), ids.begin() + firstId,
                             ids.end());
  workspace.cache.emplace(
      word, Workspace::CachedIds{offset, static_cast<uint32_t>(
                                             ids.size() - firstId)});
}

} // namespace moe::tokenizer
