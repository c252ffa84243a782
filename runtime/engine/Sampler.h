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
