// kernels::lightningAttention against the CPU backend's block form (HF's
// prefill) and recurrence (its decode) on the same bf16 inputs: prefills of
// uneven lengths from poisoned states (position 0 must start from zero), a
// decode step continuing them, a sequence split over two calls, the tiny
// fixture's and MiniMax-Text-01's shapes. Outputs and the final states are
// compared.
#include "runtime/backends/cuda/kernels/LightningAttention.h"
#include "runtime/backends/cpu/Kernels.h"
#include "runtime/model/Lightning.h"
#include "test/runtime/cuda/CudaTestSupport.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace {

namespace kn = moe::cuda::kernels;
using moe::cuda::test::bf16ToFloat;
using moe::cuda::test::check;
using moe::cuda::test::randomBf16;
using moe::cuda::test::relativeL2;
using moe::cuda::test::upload;

class Lightning {
public:
  Lightning(int sequences, int heads, int headDim, float decayFactor)
      : heads_(heads), d_(headDim),
        decay_(moe::model::lightningDecays(heads, decayFactor)),
        cpuState_(size_t(sequences) * heads * headDim * headDim, 0.0f) {
    // Poisoned: a sequence at position 0 must not read its old state.
    std::vector<float> poison(cpuState_.size(),
                              std::numeric_limits<float>::quiet_NaN());
    state_ = upload(poison);
    dDecay_ = upload(decay_);
  }
  ~Lightning() {
    cudaFree(state_);
    cudaFree(dDecay_);
  }

  // One call over `rows` (sequence, position) pairs, rows of a sequence
  // consecutive; checks the output against the CPU reference, which
  // prefills (several rows of a sequence starting at 0) by blocks and
  // continues by the recurrence.
  void step(const std::vector<std::pair<int32_t, int32_t>> &rows,
            std::mt19937 &rng) {
    const int64_t n = int64_t(rows.size()), w = int64_t(heads_) * d_;
    auto qkv = randomBf16(size_t(n * 3 * w), rng);
    std::vector<int32_t> sequences, positions;
    for (auto [s, p] : rows) {
      sequences.push_back(s);
      positions.push_back(p);
    }
    auto *dQkv = upload(qkv);
    auto *dSeq = upload(sequences), *dPos = upload(positions);
    void *dOut = nullptr;
    check(cudaMalloc(&dOut, size_t(n * w) * 2), "cudaMalloc out");
    check(cudaMemset(dOut, 0xFF, size_t(n * w) * 2), "poison");
    kn::LightningAttentionArgs a;
    a.qkv = reinterpret_cast<const kn::bf16 *>(dQkv);
    a.state = state_;
    a.decay = dDecay_;
    a.sequences = dSeq;
    a.positions = dPos;
    a.out = static_cast<kn::bf16 *>(dOut);
    a.rows = n;
    a.heads = heads_;
    a.headDim = d_;
    check(kn::lightningAttention(a, nullptr), "lightningAttention");
    check(cudaDeviceSynchronize(), "sync");
    std::vector<uint16_t> outBits(size_t(n * w));
    check(cudaMemcpy(outBits.data(), dOut, outBits.size() * 2,
                     cudaMemcpyDeviceToHost),
          "download");
    for (void *p : {(void *)dQkv, (void *)dSeq, (void *)dPos, dOut})
      cudaFree(p);

    std::vector<float> act(qkv.size());
    for (size_t i = 0; i < act.size(); ++i)
      act[i] = moe::cpu::silu(bf16ToFloat(qkv[i]));
    std::vector<float> ref(size_t(n * w));
    for (int64_t first = 0, end; first < n; first = end) {
      for (end = first + 1; end < n && rows[end].first == rows[first].first;)
        ++end;
      auto [sequence, position] = rows[first];
      for (int h = 0; h < heads_; ++h) {
        float *s =
            cpuState_.data() + (int64_t(sequence) * heads_ + h) * d_ * d_;
        if (position == 0)
          std::fill(s, s + d_ * d_, 0.0f);
        const float *q = act.data() + first * 3 * w + h * 3 * d_;
        float *o = ref.data() + first * w + h * d_;
        if (end - first > 1)
          moe::cpu::lightningBlocks(q, q + d_, q + 2 * d_, 3 * w, end - first,
                                    d_, decay_[h], 8, s, o, w);
        else
          moe::cpu::lightningRecurrent(q, q + d_, q + 2 * d_, 3 * w, 1, d_,
                                       decay_[h], s, o, w);
      }
    }
    std::vector<float> got(outBits.size());
    for (size_t i = 0; i < got.size(); ++i)
      got[i] = bf16ToFloat(outBits[i]);
    EXPECT_LE(relativeL2(got, std::vector<double>(ref.begin(), ref.end())),
              1e-2);
    touched_.insert(touched_.end(), sequences.begin(), sequences.end());
  }

  // The device states of the sequences stepped so far equal the CPU's.
  void expectStates() {
    std::vector<float> got(cpuState_.size());
    check(cudaMemcpy(got.data(), state_, got.size() * sizeof(float),
                     cudaMemcpyDeviceToHost),
          "download state");
    std::vector<float> mine;
    std::vector<double> ref;
    const size_t per = size_t(heads_) * d_ * d_;
    for (int32_t s = 0; s * per < got.size(); ++s) {
      if (std::find(touched_.begin(), touched_.end(), s) == touched_.end())
        continue;
      mine.insert(mine.end(), got.begin() + s * per,
                  got.begin() + (s + 1) * per);
      ref.insert(ref.end(), cpuState_.begin() + s * per,
                 cpuState_.begin() + (s + 1) * per);
    }
    EXPECT_LE(relativeL2(mine, ref), 1e-4);
  }

private:
  int heads_, d_;
  std::vector<float> decay_, cpuState_;
  float *state_ = nullptr, *dDecay_ = nullptr;
  std::vector<int32_t> touched_;
};

std::mt19937 seeded() {
  unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  return std::mt19937(seed);
}

// Sequences `lengths[i]` long from position `from[i]`, one after the other.
std::vector<std::pair<int32_t, int32_t>>
runs(const std::vector<int32_t> &order, const std::vector<int32_t> &from,
     const std::vector<int32_t> &lengths) {
  std::vector<std::pair<int32_t, int32_t>> rows;
  for (size_t i = 0; i < order.size(); ++i)
    for (int32_t p = 0; p < lengths[i]; ++p)
      rows.push_back({order[i], from[i] + p});
  return rows;
}

TEST(LightningAttention, PrefillThenDecode) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  for (int d : {16, 32, 64, 128}) {
    SCOPED_TRACE(testing::Message() << "head_dim " << d);
    Lightning l(5, 4, d, 1.0f);
    // Out of slot order, one a single token, one spanning many blocks.
    l.step(runs({3, 0, 4}, {0, 0, 0}, {37, 200, 1}), rng);
    l.step(runs({0, 3, 4}, {200, 37, 1}, {1, 1, 1}), rng);
    l.expectStates();
  }
}

TEST(LightningAttention, SequenceSplitOverCalls) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  Lightning l(2, 4, 16, 1.0f);
  l.step(runs({0, 1}, {0, 0}, {20, 13}), rng);
  // Slot 1 continues in a chunk of many rows; slot 0 restarts at 0.
  l.step(runs({0, 1}, {0, 13}, {9, 30}), rng);
  l.expectStates();
}

TEST(LightningAttention, MiniMaxText01Decode) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  // 64 heads of 128, the layer factor of a deep layer.
  Lightning l(8, 64, 128, 0.05f);
  l.step(runs({0, 1, 2, 3, 4, 5, 6, 7}, std::vector<int32_t>(8, 0),
              {64, 1, 5, 64, 2, 9, 33, 17}),
         rng);
  l.step(runs({0, 1, 2, 3, 4, 5, 6, 7}, {64, 1, 5, 64, 2, 9, 33, 17},
              std::vector<int32_t>(8, 1)),
         rng);
  l.expectStates();
}

TEST(LightningAttention, RejectsUnsupportedShapes) {
  EXPECT_FALSE(kn::lightningAttentionSupports(4, 48));
  EXPECT_FALSE(kn::lightningAttentionSupports(4, 256));
  EXPECT_FALSE(kn::lightningAttentionSupports(0, 64));
  EXPECT_TRUE(kn::lightningAttentionSupports(64, 128));
  kn::LightningAttentionArgs a;
  a.heads = 4;
  a.headDim = 48;
  a.rows = 1;
  EXPECT_EQ(kn::lightningAttention(a, nullptr), cudaErrorInvalidValue);
}

} // namespace
