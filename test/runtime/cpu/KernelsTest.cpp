// The CPU kernels against straightforward double-precision references.

#include "runtime/backends/cpu/Kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>

namespace moe::cpu {
namespace {

std::vector<float> randomVector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float &x : v)
    x = dist(rng);
  return v;
}

TEST(Linear, MatchesDoubleReferenceAndIgnoresThreadCount) {
  int64_t rows = 37, in = 70, out = 45;
  std::vector<float> x = randomVector(rows * in, 1),
                     w = randomVector(out * in, 2), bias = randomVector(out, 3);
  std::vector<float> y1(rows * out), y4(rows * out);
  ThreadPool one(1), four(4);
  linear(one, x.data(), rows, in, w.data(), out, bias.data(), y1.data());
  linear(four, x.data(), rows, in, w.data(), out, bias.data(), y4.data());
  EXPECT_EQ(y1, y4);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double expected = bias[o];
      for (int64_t i = 0; i < in; ++i)
        expected += static_cast<double>(x[r * in + i]) * w[o * in + i];
      EXPECT_NEAR(y1[r * out + o], expected, 1e-5);
    }
}

TEST(RMSNorm, MatchesDoubleReference) {
  int64_t n = 33;
  std::vector<float> x = randomVector(n, 4, 3.0f), w = randomVector(n, 5);
  std::vector<float> y(n);
  rmsNorm(x.data(), w.data(), n, 1e-6, y.data());
  double sum = 0;
  for (float v : x)
    sum += static_cast<double>(v) * v;
  double inverse = 1.0 / std::sqrt(sum / n + 1e-6);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_NEAR(y[i], w[i] * x[i] * inverse, 1e-6);
}

//===----------------------------------------------------------------------===//
// RoPE
//===----------------------------------------------------------------------===//

void expectRotation(plan::RopeStyle style, int64_t headDim, int64_t rotaryDim,
                    double attentionFactor) {
  model::RopeParams rope;
  rope.style = style;
  rope.theta = 10000;
  rope.rotaryDim = rotaryDim;
  rope.attentionFactor = attentionFactor;
  RopeTable table(rope, 16);
  std::vector<float> x = randomVector(headDim, 7);
  std::vector<float> y = x;
  int64_t position = 13;
  table.apply(y.data(), position);
  int64_t half = rotaryDim / 2;
  for (int64_t i = 0; i < half; ++i) {
    double angle = position * std::pow(10000.0, -2.0 * i / rotaryDim);
    double c = std::cos(angle) * attentionFactor,
           s = std::sin(angle) * attentionFactor;
    int64_t a = style == plan::RopeStyle::neox ? i : 2 * i;
    int64_t b = style == plan::RopeStyle::neox ? i + half : 2 * i + 1;
    EXPECT_NEAR(y[a], x[a] * c - x[b] * s, 1e-5);
    EXPECT_NEAR(y[b], x[b] * c + x[a] * s, 1e-5);
  }
  for (int64_t i = rotaryDim; i < headDim; ++i)
    EXPECT_EQ(y[i], x[i]);
}

TEST(Rope, NeoxInterleavedPartialAndAttentionFactor) {
  expectRotation(plan::RopeStyle::neox, 16, 16, 1.0);
  expectRotation(plan::RopeStyle::interleaved, 16, 16, 1.0);
  expectRotation(plan::RopeStyle::neox, 16, 8, 1.0);
  expectRotation(plan::RopeStyle::neox, 16, 16, 1.3466);
}

//===----------------------------------------------------------------------===//
// Routers on hand-made scores
//===----------------------------------------------------------------------===//

struct Routed {
  std::vector<float> weights;
  std::vector<int32_t> indices;
};

/// A router of `experts` picking `topK`, otherwise as the plan's defaults.
model::RouterSpec routerOf(int64_t experts, int64_t topK) {
  return {.experts = experts,
          .topK = topK,
          .groups = 1,
          .keptGroups = 1,
          .scaling = 1.0};
}

Routed route(const model::RouterSpec &router, const std::vector<float> &logits,
             const std::vector<float> &correction = {}) {
  Routed r{std::vector<float>(router.topK), std::vector<int32_t>(router.topK)};
  routeToken(router, logits.data(),
             correction.empty() ? nullptr : correction.data(), r.weights.data(),
             r.indices.data());
  return r;
}

TEST(Router, SoftmaxGreedyNormalized) {
  model::RouterSpec router = routerOf(4, 2);
  router.normalize = true;
  Routed r = route(router, {1.0f, 3.0f, 2.0f, 0.5f});
  EXPECT_EQ(r.indices, (std::vector<int32_t>{1, 2}));
  double a = std::exp(3.0), b = std::exp(2.0);
  EXPECT_NEAR(r.weights[0], a / (a + b), 1e-6);
  EXPECT_NEAR(r.weights[1], b / (a + b), 1e-6);
}

TEST(Router, SoftmaxGreedyScaledNotNormalized) {
  model::RouterSpec router = routerOf(4, 2);
  router.scaling = 16.0;
  std::vector<float> logits{1.0f, 3.0f, 2.0f, 0.5f};
  Routed r = route(router, logits);
  double sum = 0;
  for (float z : logits)
    sum += std::exp(static_cast<double>(z));
  EXPECT_EQ(r.indices, (std::vector<int32_t>{1, 2}));
  EXPECT_NEAR(r.weights[0], 16 * std::exp(3.0) / sum, 1e-5);
  EXPECT_NEAR(r.weights[1], 16 * std::exp(2.0) / sum, 1e-5);
}

TEST(Router, GroupLimitedGreedyRanksGroupsByMax) {
  // Groups of two: {5, -5}, {4.9, -4}, {4.8, 4.7}, {0, 0}; the two groups
  // with the best maxima are 0 and 1, so expert 4 (plain top-3) loses to 3.
  model::RouterSpec router = routerOf(8, 3);
  router.selection = plan::RouterSelection::group_limited_greedy;
  router.groups = 4;
  router.keptGroups = 2;
  std::vector<float> logits{5, -5, 4.9f, -4, 4.8f, 4.7f, 0, 0};
  Routed r = route(router, logits);
  EXPECT_EQ(r.indices, (std::vector<int32_t>{0, 2, 3}));
  model::RouterSpec plain = routerOf(8, 3);
  EXPECT_EQ(route(plain, logits).indices, (std::vector<int32_t>{0, 2, 4}));
  double sum = 0;
  for (float z : logits)
    sum += std::exp(static_cast<double>(z));
  EXPECT_NEAR(r.weights[2], std::exp(-4.0) / sum, 1e-7);
}

float logit(double p) { return static_cast<float>(std::log(p / (1 - p))); }

TEST(Router, NoauxTcRanksGroupsByTopTwoSumOfBiasedScores) {
  // Biased scores s' = [0.9, 0.1 | 0.75, 0.65 | 0.6, 0.5 | 0.2, 0.3]:
  // group sums 1.0, 1.4, 1.1, 0.5 keep groups 1 and 2, while ranking groups
  // by max (or plain top-k) would pick expert 0.
  std::vector<double> s{0.9, 0.1, 0.6, 0.5, 0.55, 0.45, 0.2, 0.3};
  std::vector<float> bias{0, 0, 0.15f, 0.15f, 0.05f, 0.05f, 0, 0};
  std::vector<float> logits;
  for (double p : s)
    logits.push_back(logit(p));
  model::RouterSpec router = routerOf(8, 2);
  router.scoring = plan::RouterScoring::sigmoid;
  router.selection = plan::RouterSelection::noaux_tc;
  router.groups = 4;
  router.keptGroups = 2;
  router.normalize = true;
  router.scaling = 2.5;
  Routed r = route(router, logits, bias);
  EXPECT_EQ(r.indices, (std::vector<int32_t>{2, 3}));
  // Weights come from the unbiased scores.
  EXPECT_NEAR(r.weights[0], 0.6 / 1.1 * 2.5, 1e-5);
  EXPECT_NEAR(r.weights[1], 0.5 / 1.1 * 2.5, 1e-5);

  model::RouterSpec greedy = router;
  greedy.selection = plan::RouterSelection::greedy;
  EXPECT_EQ(route(greedy, logits, bias).indices, (std::vector<int32_t>{0, 2}));
}

TEST(Router, NoauxTcWithOneGroupIsPlainTopKOfBiasedScores) {
  // Kimi-K2: n_group 1.
  std::vector<float> logits{logit(0.5), logit(0.4), logit(0.3)};
  model::RouterSpec router = routerOf(3, 1);
  router.scoring = plan::RouterScoring::sigmoid;
  router.selection = plan::RouterSelection::noaux_tc;
  Routed r = route(router, logits, {0.0f, 0.0f, 0.3f});
  EXPECT_EQ(r.indices, (std::vector<int32_t>{2}));
  EXPECT_NEAR(r.weights[0], 0.3, 1e-6);
}

//===----------------------------------------------------------------------===//
// Lightning attention
//===----------------------------------------------------------------------===//

TEST(Lightning, BlocksEqualRecurrenceAndDefinition) {
  int64_t n = 37, d = 6, stride = 3 * d;
  float decay = 0.3f;
  std::vector<float> qkv = randomVector(n * stride, 11);
  std::vector<float> initial = randomVector(d * d, 12, 0.5f);
  const float *q = qkv.data(), *k = q + d, *v = q + 2 * d;
  std::vector<float> stateA = initial, stateB = initial;
  std::vector<float> outA(n * d), outB(n * d);
  lightningRecurrent(q, k, v, stride, n, d, decay, stateA.data(), outA.data(),
                     d);
  lightningBlocks(q, k, v, stride, n, d, decay, 8, stateB.data(), outB.data(),
                  d);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < d; ++c) {
      // o_t = Σ_{s≤t} e^{−λ(t−s)} (q_t·k_s) v_s + e^{−λ(t+1)} q_t S_0.
      double expected = 0;
      for (int64_t s = 0; s <= t; ++s) {
        double qk = 0;
        for (int64_t a = 0; a < d; ++a)
          qk += static_cast<double>(q[t * stride + a]) * k[s * stride + a];
        expected += std::exp(-decay * double(t - s)) * qk * v[s * stride + c];
      }
      for (int64_t a = 0; a < d; ++a)
        expected += std::exp(-decay * double(t + 1)) * q[t * stride + a] *
                    initial[a * d + c];
      EXPECT_NEAR(outA[t * d + c], expected, 2e-5 * (1 + std::abs(expected)));
      EXPECT_NEAR(outB[t * d + c], expected, 2e-5 * (1 + std::abs(expected)));
    }
  for (int64_t i = 0; i < d * d; ++i)
    EXPECT_NEAR(stateA[i], stateB[i], 1e-5 * (1 + std::abs(stateA[i])));
}

} // namespace
} // namespace moe::cpu
