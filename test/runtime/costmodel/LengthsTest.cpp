// Length distributions against counting their lengths one by one.
#include "runtime/costmodel/Lengths.h"
#include "test/runtime/ScratchDirectory.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>

namespace moe::costmodel {
namespace {

// The mean of f over a distribution's lengths, each bin's integers counted
// one by one.
double counted(const LengthDistribution &lengths,
               const std::function<double(int64_t)> &f) {
  double sum = 0, weight = 0;
  for (const LengthDistribution::Bin &bin : lengths.bins()) {
    double width = double(bin.longest - bin.shortest + 1);
    for (int64_t x = bin.shortest; x <= bin.longest; ++x) {
      sum += bin.weight / width * f(x);
      weight += bin.weight / width;
    }
  }
  return sum / weight;
}

LengthDistribution mixed() {
  return LengthDistribution::fromBins(
             {{1, 1, 3}, {5, 40, 2}, {41, 41, 0.5}, {100, 300, 1}}, 1)
      .value();
}

TEST(Lengths, MomentsCountEveryLength) {
  for (const LengthDistribution &lengths :
       {LengthDistribution::fixed(7), LengthDistribution::uniform(1, 8192),
        LengthDistribution::uniform(4096, 8192), mixed()}) {
    EXPECT_NEAR(lengths.mean(),
                counted(lengths, [](int64_t x) { return double(x); }),
                1e-9 * lengths.mean());
    EXPECT_NEAR(
        lengths.meanSquare(),
        counted(lengths, [](int64_t x) { return double(x) * double(x); }),
        1e-9 * lengths.meanSquare());
  }
  EXPECT_EQ(mixed().shortest(), 1);
  EXPECT_EQ(mixed().longest(), 300);
}

TEST(Lengths, ExcessAndSurvivalCountEveryLength) {
  LengthDistribution lengths = mixed();
  for (double k : {-1.0, 0.0, 1.0, 4.5, 20.0, 41.0, 99.0, 250.0, 300.0}) {
    EXPECT_NEAR(
        lengths.meanExcess(k),
        counted(lengths,
                [&](int64_t x) { return std::max(double(x) - k, 0.0); }),
        1e-9)
        << k;
    EXPECT_NEAR(
        lengths.exceeding(k),
        counted(lengths, [&](int64_t x) { return double(x) > k ? 1.0 : 0.0; }),
        1e-12)
        << k;
  }
}

TEST(Lengths, CausalPairsWithAndWithoutAWindow) {
  LengthDistribution lengths = mixed();
  for (int64_t window : {0, 1, 16, 41, 128, 1000}) {
    double expected = counted(lengths, [&](int64_t p) {
      double pairs = 0;
      for (int64_t t = 1; t <= p; ++t)
        pairs += double(window > 0 ? std::min(t, window) : t);
      return pairs;
    });
    EXPECT_NEAR(lengths.meanCausalPairs(window), expected, 1e-9 * expected)
        << window;
  }
}

TEST(Lengths, CountsBecomeBinsOfAboutEqualWeight) {
  std::map<int64_t, int64_t> few{{3, 2}, {10, 1}};
  LengthDistribution exact = LengthDistribution::fromCounts(few).value();
  EXPECT_EQ(exact.bins(),
            (std::vector<LengthDistribution::Bin>{{3, 3, 2}, {10, 10, 1}}));

  std::map<int64_t, int64_t> many;
  for (int64_t x = 1; x <= 1000; ++x)
    many[x] = 1;
  LengthDistribution binned = LengthDistribution::fromCounts(many, 8).value();
  ASSERT_EQ(binned.bins().size(), 8u);
  for (const LengthDistribution::Bin &bin : binned.bins())
    EXPECT_EQ(bin.weight, double(bin.longest - bin.shortest + 1));
  EXPECT_DOUBLE_EQ(binned.mean(), 500.5);

  EXPECT_FALSE(LengthDistribution::fromCounts({}).ok());
  EXPECT_EQ(LengthDistribution::fromCounts({{4, 0}}).error().message(),
            "length 4 counted 0 times: lengths must not be negative and "
            "counts must be positive");
}

TEST(Lengths, CappedLengthsEndAtTheCap) {
  LengthDistribution lengths = mixed();
  for (int64_t cap : {1, 30, 41, 200, 300, 500}) {
    LengthDistribution capped = lengths.cappedAt(cap);
    EXPECT_EQ(capped.longest(), std::min<int64_t>(cap, 300)) << cap;
    EXPECT_NEAR(
        capped.mean(),
        counted(lengths, [&](int64_t x) { return double(std::min(x, cap)); }),
        1e-9)
        << cap;
  }
}

TEST(Lengths, FlatBinsRoundTripAndAreChecked) {
  LengthDistribution lengths = mixed();
  std::vector<double> flat = lengths.flatBins();
  EXPECT_EQ(LengthDistribution::fromFlatBins(flat, 1).value(), lengths);
  EXPECT_EQ(LengthDistribution::fromFlatBins(flat, 2).error().message(),
            "length bin 0 ([1, 1], weight 3) must hold lengths of at least "
            "2, shortest first, with a positive weight");
  std::vector<double> fractional{1.5, 2, 1};
  EXPECT_EQ(LengthDistribution::fromFlatBins(fractional, 1).error().message(),
            "bin 0 has lengths 1.5 and 2: they must be whole tokens");
}

// The steady state's mean context: the mean prompt, plus E[G²] / (2 E[G]).
TEST(Lengths, DecodeContextOfAJobsOwnLengths) {
  GenerationLengths lengths{
      LengthDistribution::fromBins({{100, 100, 1}, {300, 300, 1}}, 1).value(),
      LengthDistribution::fromBins({{10, 10, 3}, {1000, 1000, 1}}, 0).value()};
  double meanG = (3 * 10 + 1000) / 4.0;
  double meanG2 = (3 * 100 + 1000000) / 4.0;
  EXPECT_EQ(lengths.promptTokens(), 200);
  EXPECT_EQ(lengths.maxContext(), 1300);
  EXPECT_EQ(lengths.meanDecodeContext(), int64_t(200 + meanG2 / (2 * meanG)));
  EXPECT_DOUBLE_EQ(lengths.finishedPerStep(64), 64 / meanG);
}

TEST(Lengths, AJobsLengthsFileLoadsOrSaysWhy) {
  moe::testing::ScratchDirectory scratch;
  std::string path = scratch.file("lengths.json");
  std::ofstream(path) << R"({"requests": 4, "prompt_tokens": [[12, 3], [40, 1]],
                            "generated_tokens": [[1, 1], [256, 3]]})";
  Result<GenerationLengths> lengths = loadJobLengths(path);
  ASSERT_TRUE(lengths.ok()) << lengths.error().message();
  EXPECT_DOUBLE_EQ(lengths->prompts.mean(), (3 * 12 + 40) / 4.0);
  EXPECT_EQ(lengths->generated.longest(), 256);

  std::ofstream(path) << R"({"prompt_tokens": [[12, 3]],
                            "generated_tokens": [[0, 1]]})";
  EXPECT_EQ(loadJobLengths(path).error().message(),
            path + ": \"generated_tokens\"[0] must be [length, count] with a "
                   "length from 1 to 2^31 - 1 and a count from 1 to 2^40");
  std::ofstream(path) << R"({"prompt_tokens": [[12, 3]],
                            "generated_tokens": [[4, 1099511627777]]})";
  EXPECT_EQ(loadJobLengths(path).error().message(),
            path + ": \"generated_tokens\"[0] must be [length, count] with a "
                   "length from 1 to 2^31 - 1 and a count from 1 to 2^40");
  std::ofstream(path) << R"({"prompt_tokens": []})";
  EXPECT_EQ(loadJobLengths(path).error().message(),
            path + ": \"prompt_tokens\" must be a non-empty list of [length, "
                   "count] pairs");
  std::ofstream(path) << "[1, 2";
  EXPECT_EQ(loadJobLengths(path).error().message(),
            path + ": not a JSON object");
  EXPECT_EQ(loadJobLengths(scratch.file("none.json")).error().message(),
            scratch.file("none.json") + ": cannot open the job's lengths");
}

} // namespace
} // namespace moe::costmodel
