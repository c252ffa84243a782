// The byte-pair-encoding model: splits one pre-tokenized word into symbols
// and applies the ranked merges, lowest rank first, leftmost first.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/support/Result.h"
#include "runtime/tokenizer/JsonAccess.h"

namespace moe::tokenizer {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const {
    return std::hash<std::string_view>{}(text);
  }
};

template <typename Value>
using StringMap =
    std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;

class BpeModel {
public:
  // Per-caller mutable state: the cache of encoded words and scratch
  // buffers, kept apart so that the model itself stays immutable.
  class Workspace {
  public:
    Workspace() = default;

  private:
    friend class BpeModel;
    struct Symbol {
      int32_t id;
      int32_t previous, next; // Indices into `symbols`, -1 at the ends.
    };
    struct Candidate {
      int32_t rank;
      int32_t left, right; // Symbol indices.
      int32_t leftId, rightId, mergedId;
    };
    struct CachedIds {
      uint32_t offset, length; // Range of `cachedIds`.
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
    StringMap<CachedIds> cache;
    std::vector<int32_t> cachedIds;
  };

  // Reads model.vocab and model.merges. With `byteLevelInput` words arrive
  // as raw bytes whose byte-level spelling is what the vocabulary holds.
  static Result<BpeModel> parse(const Json &model, std::string_view path,
                                bool byteLevelInput);

  // Appends the ids of `word`.
  void encodeWord(std::string_view word, std::vector<int32_t> &ids,
                  Workspace &workspace) const;

  // Token ids by token as written in the vocabulary.
  const StringMap<int32_t> &vocabulary() const { return tokenIds_; }

private:
  // Merge rules keyed by the pair of ids they join: open addressing, since
  // the lookup runs for every adjacent pair of every new word.
  class MergeTable {
  public:
    struct Rule {
      uint64_t key;
      int32_t rank;
      int32_t mergedId;
    };
    MergeTable() { reserve(0); }
    void reserve(size_t rules);
    void insert(int32_t left, int32_t right, int32_t rank, int32_t mergedId);
    const Rule *find(int32_t left, int32_t right) const;

  private:
    static constexpr uint64_t kEmpty = ~0ull;
    static uint64_t keyOf(int32_t left, int32_t right) {
      return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 |
             static_cast<uint32_t>(right);
    }
    size_t slotOf(uint64_t key) const {
      return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
    }
    std::vector<Rule> rules_;
    unsigned shift_;
  };

  void appendSymbols(std::string_view word, Workspace &workspace) const;
  void pushCandidate(Workspace &workspace, int32_t left) const;
  void mergeSymbols(Workspace &workspace) const;

  StringMap<int32_t> tokenIds_;
  // Byte-level input: the id of each single byte, and (for ignore_merges)
  // the ids of whole tokens keyed by their raw bytes.
  bool byteLevelInput_ = false;
  int32_t byteIds_[256];
  StringMap<int32_t> rawTokenIds_;
  int32_t byteFallbackIds_[256]; // Ids of "<0xXX>", -1 when absent.
  MergeTable merges_;
  int32_t unknownId_ = -1;
  bool fuseUnknown_ = false;
  bool byteFallback_ = false;
  bool ignoreMerges_ = false;
};

} // namespace moe::tokenizer
