#include "runtime/costmodel/Lengths.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

namespace moe::costmodel {
namespace {

using Bin = LengthDistribution::Bin;

double widthOf(const Bin &bin) {
  return double(bin.longest - bin.shortest + 1);
}

// Σ x over the integers of [a, b] (0 where the range is empty).
double sumOf(int64_t a, int64_t b) {
  if (a > b)
    return 0;
  return double(b - a + 1) * double(a + b) / 2;
}

// Σ x² over the integers of [a, b], a >= 0, by the sums of squares up to b
// and up to a − 1.
double sumOfSquares(int64_t a, int64_t b) {
  if (a > b)
    return 0;
  auto upTo = [](double n) { return n * (n + 1) * (2 * n + 1) / 6; };
  return upTo(double(b)) - upTo(double(a - 1));
}

// The integers of `bin` above k: [first, bin.longest].
int64_t firstAbove(const Bin &bin, double k) {
  return std::max(bin.shortest, int64_t(std::floor(k)) + 1);
}

} // namespace

LengthDistribution LengthDistribution::fixed(int64_t length) {
  return LengthDistribution({{length, length, 1}});
}

LengthDistribution LengthDistribution::uniform(int64_t shortest,
                                               int64_t longest) {
  return LengthDistribution({{shortest, longest, 1}});
}

Result<LengthDistribution>
LengthDistribution::fromCounts(const std::map<int64_t, int64_t> &counts,
                               size_t maxBins) {
  if (counts.empty())
    return makeError("a length distribution needs at least one length");
  if (maxBins == 0)
    return makeError("a length distribution needs at least one bin");
  double total = 0;
  for (auto [length, count] : counts) {
    if (length < 0 || count <= 0)
      return makeError("length {} counted {} times: lengths must not be "
                       "negative and counts must be positive",
                       length, count);
    total += double(count);
  }
  std::vector<Bin> bins;
  if (counts.size() <= maxBins) {
    for (auto [length, count] : counts)
      bins.push_back({length, length, double(count)});
    return LengthDistribution(std::move(bins));
  }
  // The k-th bin closes once the weight so far reaches k/maxBins of all.
  double seen = 0;
  for (auto [length, count] : counts) {
    bool opens =
        bins.empty() || seen >= total * double(bins.size()) / double(maxBins);
    if (opens)
      bins.push_back({length, length, 0});
    bins.back().longest = length;
    bins.back().weight += double(count);
    seen += double(count);
  }
  return LengthDistribution(std::move(bins));
}

Result<LengthDistribution> LengthDistribution::fromBins(std::vector<Bin> bins,
                                                        int64_t least) {
  if (bins.empty())
    return makeError("a length distribution needs at least one bin");
  for (size_t i = 0; i < bins.size(); ++i) {
    const Bin &bin = bins[i];
    if (bin.shortest < least || bin.longest < bin.shortest ||
        !(bin.weight > 0) || !std::isfinite(bin.weight))
      return makeError("length bin {} ([{}, {}], weight {}) must hold lengths "
                       "of at least {}, shortest first, with a positive "
                       "weight",
                       i, bin.shortest, bin.longest, bin.weight, least);
    if (i > 0 && bin.shortest <= bins[i - 1].longest)
      return makeError("length bin {} starts at {}, within the bin before "
                       "it: bins must ascend without overlapping",
                       i, bin.shortest);
  }
  return LengthDistribution(std::move(bins));
}

Result<LengthDistribution>
LengthDistribution::fromFlatBins(std::span<const double> flat, int64_t least) {
  if (flat.empty() || flat.size() % 3 != 0)
    return makeError("{} values are no (shortest, longest, weight) triples",
                     flat.size());
  std::vector<Bin> bins;
  for (size_t i = 0; i < flat.size(); i += 3) {
    // Whole lengths within what any context holds, so the casts are exact.
    bool whole = true;
    for (double length : {flat[i], flat[i + 1]})
      whole = whole && std::isfinite(length) && std::abs(length) < 0x1p53 &&
              length == std::floor(length);
    if (!whole)
      return makeError("bin {} has lengths {} and {}: they must be whole "
                       "tokens",
                       i / 3, flat[i], flat[i + 1]);
    bins.push_back({int64_t(flat[i]), int64_t(flat[i + 1]), flat[i + 2]});
  }
  return fromBins(std::move(bins), least);
}

std::vector<double> LengthDistribution::flatBins() const {
  std::vector<double> flat;
  for (const Bin &bin : bins_)
    flat.insert(flat.end(),
                {double(bin.shortest), double(bin.longest), bin.weight});
  return flat;
}

double LengthDistribution::totalWeight() const {
  double total = 0;
  for (const Bin &bin : bins_)
    total += bin.weight;
  return total;
}

double LengthDistribution::mean() const {
  double sum = 0;
  for (const Bin &bin : bins_)
    sum += bin.weight * sumOf(bin.shortest, bin.longest) / widthOf(bin);
  return sum / totalWeight();
}

double LengthDistribution::meanSquare() const {
  double sum = 0;
  for (const Bin &bin : bins_)
    sum += bin.weight * sumOfSquares(bin.shortest, bin.longest) / widthOf(bin);
  return sum / totalWeight();
}

double LengthDistribution::exceeding(double k) const {
  double sum = 0;
  for (const Bin &bin : bins_) {
    int64_t first = firstAbove(bin, k);
    if (first <= bin.longest)
      sum += bin.weight * double(bin.longest - first + 1) / widthOf(bin);
  }
  return sum / totalWeight();
}

double LengthDistribution::meanExcess(double k) const {
  double sum = 0;
  for (const Bin &bin : bins_) {
    int64_t first = firstAbove(bin, k);
    double above = double(std::max<int64_t>(0, bin.longest - first + 1));
    sum += bin.weight * (sumOf(first, bin.longest) - above * k) / widthOf(bin);
  }
  return sum / totalWeight();
}

double LengthDistribution::meanCausalPairs(int64_t window) const {
  double sum = 0;
  for (const Bin &bin : bins_) {
    // Up to the window a prompt of p tokens attends p(p + 1)/2 positions;
    // past it, each further token attends the window.
    int64_t lastWhole =
        window > 0 ? std::min(bin.longest, window) : bin.longest;
    double pairs = (sumOfSquares(bin.shortest, lastWhole) +
                    sumOf(bin.shortest, lastWhole)) /
                   2;
    int64_t firstWindowed = std::max(bin.shortest, window + 1);
    if (window > 0 && firstWindowed <= bin.longest) {
      double w = double(window);
      double count = double(bin.longest - firstWindowed + 1);
      pairs += count * (w * (w + 1) / 2 - w * w) +
               w * sumOf(firstWindowed, bin.longest);
    }
    sum += bin.weight * pairs / widthOf(bin);
  }
  return sum / totalWeight();
}

LengthDistribution LengthDistribution::cappedAt(int64_t limit) const {
  std::vector<Bin> kept;
  double cut = 0;
  for (const Bin &bin : bins_) {
    if (bin.longest < limit) {
      kept.push_back(bin);
      continue;
    }
    if (bin.shortest < limit) {
      double below = double(limit - bin.shortest) / widthOf(bin);
      kept.push_back({bin.shortest, limit - 1, bin.weight * below});
      cut += bin.weight * (1 - below);
    } else {
      cut += bin.weight;
    }
  }
  if (cut > 0)
    kept.push_back({limit, limit, cut});
  return LengthDistribution(std::move(kept));
}

GenerationLengths GenerationLengths::spread(int64_t promptTokens,
                                            int64_t longest, int64_t shortest) {
  return {LengthDistribution::fixed(promptTokens),
          shortest > 0 ? LengthDistribution::uniform(
                             std::min(shortest, longest), longest)
                       : LengthDistribution::fixed(longest)};
}

Result<GenerationLengths> GenerationLengths::recorded(
    int64_t promptTokens, int64_t generatedTokens, int64_t minGenerated,
    std::span<const double> promptBins, std::span<const double> generatedBins) {
  GenerationLengths lengths =
      spread(promptTokens, generatedTokens, minGenerated);
  for (auto [name, bins, least, distribution] :
       {std::tuple{"prompt_lengths", promptBins, int64_t(1), &lengths.prompts},
        std::tuple{"generated_lengths", generatedBins, int64_t(0),
                   &lengths.generated}}) {
    if (bins.empty())
      continue;
    Result<LengthDistribution> read =
        LengthDistribution::fromFlatBins(bins, least);
    if (!read.ok())
      return read.error().withContext(name);
    *distribution = std::move(read).value();
  }
  return lengths;
}

int64_t GenerationLengths::promptTokens() const {
  // A whole mean stays itself despite the division's rounding.
  return int64_t(std::ceil(prompts.mean() - 1e-9));
}

int64_t GenerationLengths::meanDecodeContext() const {
  double mean = generated.mean();
  if (mean <= 0)
    return promptTokens();
  return int64_t(prompts.mean() + generated.meanSquare() / (2 * mean));
}

double GenerationLengths::finishedPerStep(int64_t residentBatch) const {
  double mean = generated.mean();
  return mean > 0 ? double(residentBatch) / mean : 0;
}

Result<GenerationLengths> loadJobLengths(const std::string &path,
                                         size_t maxBins) {
  std::ifstream file(path);
  if (!file)
    return makeError("{}: cannot open the job's lengths", path);
  nlohmann::json json = nlohmann::json::parse(file, nullptr, false);
  if (json.is_discarded() || !json.is_object())
    return makeError("{}: not a JSON object", path);
  auto read = [&](const char *key) -> Result<LengthDistribution> {
    auto field = json.find(key);
    if (field == json.end() || !field->is_array() || field->empty())
      return makeError("{}: \"{}\" must be a non-empty list of [length, "
                       "count] pairs",
                       path, key);
    // Contexts are 32-bit token counts; a count of 2^40 requests is more
    // than any job, and their sums stay exact.
    constexpr int64_t kLongest = (int64_t(1) << 31) - 1;
    constexpr int64_t kMostRequests = int64_t(1) << 40;
    std::map<int64_t, int64_t> counts;
    for (size_t i = 0; i < field->size(); ++i) {
      const nlohmann::json &pair = (*field)[i];
      auto within = [](const nlohmann::json &value, int64_t most) {
        return value.is_number_integer() && value.get<int64_t>() >= 1 &&
               value.get<int64_t>() <= most;
      };
      if (!pair.is_array() || pair.size() != 2 || !within(pair[0], kLongest) ||
          !within(pair[1], kMostRequests))
        return makeError("{}: \"{}\"[{}] must be [length, count] with a "
                         "length from 1 to 2^31 - 1 and a count from 1 to "
                         "2^40",
                         path, key, i);
      int64_t &count = counts[pair[0].get<int64_t>()];
      count = std::min(count + pair[1].get<int64_t>(), kMostRequests);
    }
    return LengthDistribution::fromCounts(counts, maxBins);
  };
  MOE_ASSIGN_OR_RETURN(LengthDistribution prompts, read("prompt_tokens"));
  MOE_ASSIGN_OR_RETURN(LengthDistribution generated, read("generated_tokens"));
  return GenerationLengths{std::move(prompts), std::move(generated)};
}

} // namespace moe::costmodel
