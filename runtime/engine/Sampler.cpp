#include "runtime/engine/Sampler.h"

#include <algorithm>
#include <cmath>

namespace moe {
namespace {
// splitmix64: a tiny, well-mixed generator; one independent stream per
// request is all sampling needs.
uint64_t splitmix64(uint64_t &state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
} // namespace

Sampler::Sampler(const SamplingParams &params, uint64_t requestIndex)
    : params_(params), state_(params.seed) {
  uint64_t mix = requestIndex;
  state_ ^= splitmix64(mix);
}

double Sampler::nextUniform() {
  return static_cast<double>(splitmix64(state_) >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.temperature <= 0.0f) {
    // torch.argmax semantics: the first maximum wins.
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) -
                                logits.begin());
  }
  scratch_.clear();
  for (size_t i = 0; i < logits.size(); ++i)
    scratch_.emplace_back(logits[i], static_cast<int32_t>(i));
  auto byLogit = [](const auto &a, const auto &b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = scratch_.size();
  if (params_.topK > 0 && static_cast<size_t>(params_.topK) < keep) {
    keep = static_cast<size_t>(params_.topK);
    std::partial_sort(scratch_.begin(), scratch_.begin() + keep,
                      scratch_.end(), byLogit);
  } else {
    std::sort(scratch_.begin(), scratch_.end(), byLogit);
  }
  scratch_.resize(keep);
  // Softmax at the temperature, then the smallest prefix holding top_p.
  double maxLogit = scratch_.front().first, total = 0;
  std::vector<double> weights(keep);
  for (size_t i = 0; i < keep; ++i)
    total += weights[i] =
        std::exp((scratch_[i].first - maxLogit) / params_.temperature);
  if (params_.topP < 1.0f) {
    double kept = 0;
    size_t nucleus = 0;
    while (nucleus < keep && kept < params_.topP * total)
      kept += weights[nucleus++];
    keep = std::max<size_t>(nucleus, 1);
    total = kept;
  }
  double target = nextUniform() * total;
  for (size_t i = 0; i < keep; ++i) {
    target -= weights[i];
    if (target < 0)
      return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

TokenLogprobs logprobsOf(std::span<const float> logits, int32_t token,
                         int32_t top) {
  float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float x : logits)
    sum += std::exp(double(x) - max);
  float logZ = max + float(std::log(sum));
  TokenLogprobs out;
  out.logprob = logits[size_t(token)] - logZ;
  // The `top` largest by one pass, kept sorted (few: at most 20).
  auto before = [](const std::pair<int32_t, float> &a,
                   const std::pair<int32_t, float> &b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  };
  for (size_t id = 0; id < logits.size() && top > 0; ++id) {
    std::pair<int32_t, float> candidate{int32_t(id), logits[id]};
    if (int32_t(out.top.size()) == top && !before(candidate, out.top.back()))
      continue;
    if (int32_t(out.top.size()) == top)
      out.top.pop_back();
    out.top.insert(
        std::upper_bound(out.top.begin(), out.top.end(), candidate, before),
        candidate);
  }
  for (auto &[id, value] : out.top)
    value -= logZ;
  return out;
}

} // namespace moe
