// Next-token choice: greedy, or seeded sampling with temperature, top-k and
// top-p. Each sequence draws from its own stream, seeded from the run's seed
// and the request's index, so answers do not depend on how sequences were
// batched together.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

struct SamplingParams {
  float temperature = 0.0f; // 0: greedy
  int32_t topK = 0;         // 0: no limit
  float topP = 1.0f;        // 1: no limit
  uint64_t seed = 0;
};

/// A new token's log-probability under the model: the log-softmax of its
/// row of raw logits (before temperature, top-k or top-p, so the same
/// whatever the sampling), and the most likely tokens beside it.
struct TokenLogprobs {
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top; // most likely first
};

/// The most alternatives a request may ask for (OpenAI's bound).
inline constexpr int32_t kMaxTopLogprobs = 20;

/// `token`'s log-probability in `logits` and the `top` (≤ kMaxTopLogprobs)
/// most likely tokens, ties to the smaller id. The logits are finite.
TokenLogprobs logprobsOf(std::span<const float> logits, int32_t token,
                         int32_t top);

class Sampler {
public:
  Sampler(const SamplingParams &params, uint64_t requestIndex);

  /// Picks a token id from one row of logits.
  int32_t sample(std::span<const float> logits);
  /// Whether it picks the largest logit (temperature 0).
  bool greedy() const { return params_.temperature <= 0.0f; }

private:
  double nextUniform(); // in [0, 1)

  SamplingParams params_;
  uint64_t state_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

} // namespace moe
