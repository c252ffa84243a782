// The lengths a job's requests have: how many tokens its prompts hold and
// how many its sequences generate before they stop. A plan is priced for
// their distributions, not for one length: a refilled batch's steady state
// (the mean context a decode step reads, how many sequences finish a step),
// its prefill, and the tail a job leaves once its last request is admitted
// all follow from them.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "runtime/support/Result.h"

namespace moe::costmodel {

// A distribution over whole token counts, as weighted bins of lengths each
// bin spreads evenly over: one length is a bin of width one, lengths spread
// evenly over [a, b] one bin, a job's own lengths as many as it takes.
// Sums run over the integer lengths of each bin, so fixed and evenly spread
// lengths are priced exactly.
class LengthDistribution {
public:
  struct Bin {
    int64_t shortest = 0;
    int64_t longest = 0;
    double weight = 1; // of the whole bin, relative to the other bins'
    bool operator==(const Bin &) const = default;
  };

  // Every request `length` long.
  static LengthDistribution fixed(int64_t length);
  // Lengths spread evenly over [shortest, longest].
  static LengthDistribution uniform(int64_t shortest, int64_t longest);
  // The counts of each exact length, in at most `maxBins` bins: exact where
  // there are that few lengths, else of about equal weight each (so a bin's
  // lengths are taken as spread evenly over its range).
  static Result<LengthDistribution>
  fromCounts(const std::map<int64_t, int64_t> &counts, size_t maxBins = 64);
  // Bins as a plan records them: non-empty, each with shortest <= longest,
  // at least `least` long, and positive weight; ascending, not overlapping.
  static Result<LengthDistribution> fromBins(std::vector<Bin> bins,
                                             int64_t least);
  // The same, flattened to (shortest, longest, weight) triples: how plans
  // record them.
  static Result<LengthDistribution> fromFlatBins(std::span<const double> flat,
                                                 int64_t least);
  std::vector<double> flatBins() const;

  const std::vector<Bin> &bins() const { return bins_; }
  int64_t shortest() const { return bins_.front().shortest; }
  int64_t longest() const { return bins_.back().longest; }
  double mean() const;
  double meanSquare() const;
  // P(X > k).
  double exceeding(double k) const;
  // E[(X - k)+]: what the lengths exceed k by, on average over all of them.
  double meanExcess(double k) const;
  // E[Σ_{t=1..X} min(t, window)]: context positions a causal prompt of X
  // tokens attends to, the window bounding each (0: none).
  double meanCausalPairs(int64_t window) const;
  // Lengths above `limit` taken as `limit` (requests cut there).
  LengthDistribution cappedAt(int64_t limit) const;

  bool operator==(const LengthDistribution &) const = default;

private:
  explicit LengthDistribution(std::vector<Bin> bins) : bins_(std::move(bins)) {}
  double totalWeight() const;

  std::vector<Bin> bins_;
};

struct GenerationLengths {
  LengthDistribution prompts = LengthDistribution::fixed(1);
  LengthDistribution generated = LengthDistribution::fixed(0);

  // Prompts of `promptTokens` and generations spread evenly over
  // [shortest, longest] (0 for shortest: all `longest` long).
  static GenerationLengths spread(int64_t promptTokens, int64_t longest,
                                  int64_t shortest = 0);
  // The lengths a plan records: spread(promptTokens, generatedTokens,
  // minGenerated), each distribution replaced by its flat bins where they
  // are given (empty: not). Errors name the field the bins came from.
  static Result<GenerationLengths>
  recorded(int64_t promptTokens, int64_t generatedTokens, int64_t minGenerated,
           std::span<const double> promptBins,
           std::span<const double> generatedBins);

  // A prompt's tokens on average, rounded up: what prefill is priced and
  // its memory sized for (the backend chunks prefill by rows, so a longer
  // prompt needs no more memory, only more chunks).
  int64_t promptTokens() const;
  int64_t longestGeneration() const { return generated.longest(); }
  // The longest prompt with the longest generation: what a slot holding a
  // whole context holds.
  int64_t maxContext() const { return prompts.longest() + generated.longest(); }
  // The context of a decode step's average sequence in the steady state of
  // a refilled batch: a sequence of G generated tokens holds a slot for G
  // steps and sees G/2 of them on average, so longer generations weigh in
  // proportion to their length: E[P] + E[G²] / (2·E[G]) (prompt and
  // generation lengths taken as independent).
  int64_t meanDecodeContext() const;
  // Sequences that finish in an average decode step of B resident ones
  // (each replaced by a new prompt): B / E[G].
  double finishedPerStep(int64_t residentBatch) const;

  bool operator==(const GenerationLengths &) const = default;
};

// A job's lengths as `moe-run --describe-prompts` writes them:
// {"prompt_tokens": [[length, count], ...], "generated_tokens": [[length,
// count], ...]}, each in at most `maxBins` bins (fromCounts). Fails naming
// the file and the field.
Result<GenerationLengths> loadJobLengths(const std::string &path,
                                         size_t maxBins = 64);

} // namespace moe::costmodel
