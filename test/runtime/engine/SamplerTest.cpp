#include "runtime/engine/Sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace moe {
namespace {

TEST(Sampler, GreedyTakesTheFirstMaximum) {
  Sampler sampler({}, 0);
  std::vector<float> logits{0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(sampler.sample(logits), 1);
}

TEST(Sampler, SameSeedAndRequestSameTokens) {
  SamplingParams params{0.8f, 0, 1.0f, 42};
  std::vector<float> logits{0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  Sampler a(params, 3), b(params, 3), c(params, 4);
  std::vector<int32_t> fromA, fromB, fromC;
  for (int i = 0; i < 50; ++i) {
    fromA.push_back(a.sample(logits));
    fromB.push_back(b.sample(logits));
    fromC.push_back(c.sample(logits));
  }
  EXPECT_EQ(fromA, fromB);
  EXPECT_NE(fromA, fromC);
}

TEST(Sampler, TopKKeepsOnlyTheBest) {
  Sampler sampler({1.0f, 2, 1.0f, 7}, 0);
  std::vector<float> logits{5.0f, 0.0f, 4.9f, 0.1f, 4.8f};
  for (int i = 0; i < 200; ++i) {
    int32_t token = sampler.sample(logits);
    EXPECT_TRUE(token == 0 || token == 2) << token;
  }
}

TEST(Sampler, TopPKeepsTheNucleus) {
  // Probabilities 0.5, 0.3, 0.2: top_p 0.6 keeps the first two.
  std::vector<float> logits{std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler sampler({1.0f, 0, 0.6f, 9}, 0);
  std::map<int32_t, int> counts;
  for (int i = 0; i < 4000; ++i)
    ++counts[sampler.sample(logits)];
  EXPECT_EQ(counts.count(2), 0u);
  EXPECT_NEAR(counts[0] / 4000.0, 0.5 / 0.8, 0.03);
}

TEST(Sampler, TemperatureMatchesTheSoftmax) {
  std::vector<float> logits{0.0f, 1.0f};
  Sampler sampler({2.0f, 0, 1.0f, 11}, 0);
  int ones = 0;
  for (int i = 0; i < 20000; ++i)
    ones += sampler.sample(logits);
  double expected = 1.0 / (1.0 + std::exp(-0.5));
  EXPECT_NEAR(ones / 20000.0, expected, 0.015);
}

// The log-softmax of the raw logits: the chosen token's and the top ones,
// most likely first and ties to the smaller id; they sum to 1 over the
// vocabulary.
TEST(Sampler, LogprobsAreTheLogSoftmaxOfTheLogits) {
  std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
  double sum = 0.0;
  for (float x : logits)
    sum += std::exp(double(x));
  auto logprob = [&](int id) { return float(logits[id] - std::log(sum)); };
  TokenLogprobs got = logprobsOf(logits, 4, 3);
  EXPECT_NEAR(got.logprob, logprob(4), 1e-6);
  ASSERT_EQ(got.top.size(), 3u);
  EXPECT_EQ(got.top[0].first, 1);
  EXPECT_EQ(got.top[1].first, 3);
  EXPECT_EQ(got.top[2].first, 0);
  for (auto [id, value] : got.top)
    EXPECT_NEAR(value, logprob(id), 1e-6) << id;
  EXPECT_TRUE(logprobsOf(logits, 0, 0).top.empty());
  double total = 0.0;
  for (auto [id, value] : logprobsOf(logits, 0, 5).top)
    total += std::exp(double(value));
  EXPECT_NEAR(total, 1.0, 1e-6);
}

} // namespace
} // namespace moe
