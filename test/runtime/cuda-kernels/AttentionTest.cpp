// kernels::attention, its tensor-core kernel and its general one, against a
// double-precision loop on the same bf16 inputs: GQA group sizes 1..32 (and
// ones that are not a power of 2), every head size, sliding windows, sinks,
// rows of mixed sequences and positions (prompt runs and decode-like single
// rows, with the runs hint right and wrong), and long contexts split over
// several blocks; caches in bf16 and in fp8 (against the values the
// CPU reference's encoding stands for), and the fp8 encoding kernel against
// that reference bit for bit. The output is poisoned (NaN) before each
// launch.
#include "runtime/backends/cuda/kernels/Kernels.h"
#include "runtime/model/KvFormat.h"
#include "test/runtime/cuda/CudaTestSupport.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace {

namespace kn = moe::cuda::kernels;
using moe::cuda::test::bf16ToFloat;
using moe::cuda::test::CacheRows;
using moe::cuda::test::cacheRows;
using moe::cuda::test::check;
using moe::cuda::test::prefillRows;
using moe::cuda::test::randomBf16;
using moe::cuda::test::relativeL2;
using moe::cuda::test::upload;

struct Case {
  int heads, kvHeads, headDim;
  int sequences, maxContext;
  int64_t window;
  bool sinks;
  // Per row: (sequence, position); rows of one sequence need not be
  // consecutive.
  std::vector<std::pair<int32_t, int32_t>> rows;
  bool fp8 = false;
  // AttentionArgs::rowsPerSequence: a hint that must not change results.
  int64_t rowsPerSequence = 1;
};

void runKernel(const Case &c, bool generalKernel, std::mt19937 &rng) {
  SCOPED_TRACE(testing::Message()
               << "heads " << c.heads << " kv " << c.kvHeads << " dim "
               << c.headDim << " rows " << c.rows.size() << " context "
               << c.maxContext << " window " << c.window << " sinks " << c.sinks
               << " fp8 " << c.fp8 << " rows per sequence " << c.rowsPerSequence
               << " general kernel " << generalKernel);
  ASSERT_TRUE(kn::attentionSupports(c.heads, c.kvHeads, c.headDim));
  int64_t rows = static_cast<int64_t>(c.rows.size());
  int64_t qw = int64_t(c.heads) * c.headDim,
          kvw = int64_t(c.kvHeads) * c.headDim;
  int64_t seqStride = int64_t(c.maxContext) * kvw;
  auto q = randomBf16(size_t(rows * qw), rng);
  int64_t tokens = int64_t(c.sequences) * c.maxContext;
  CacheRows k = cacheRows(randomBf16(size_t(c.sequences * seqStride), rng),
                          tokens, c.kvHeads, c.headDim, c.fp8);
  CacheRows v = cacheRows(randomBf16(size_t(c.sequences * seqStride), rng),
                          tokens, c.kvHeads, c.headDim, c.fp8);
  int64_t rowBytes = int64_t(k.bytes.size()) / tokens;
  // Scores of a few units: a peaked but not one-hot softmax.
  for (auto &x : q)
    x = moe::cuda::test::floatToBf16(bf16ToFloat(x) * 2.0f);
  std::vector<float> sinks(c.heads);
  std::uniform_real_distribution<float> sinkDist(-1.0f, 3.0f);
  for (float &s : sinks)
    s = sinkDist(rng);
  std::vector<int32_t> sequences, positions;
  int maxSpan = 0;
  for (auto [s, p] : c.rows) {
    sequences.push_back(s);
    positions.push_back(p);
    int64_t first = c.window > 0 ? std::max<int64_t>(0, p - c.window + 1) : 0;
    maxSpan = std::max<int>(maxSpan, int(p - first + 1));
  }

  int smCount = 0;
  check(cudaDeviceGetAttribute(&smCount, cudaDevAttrMultiProcessorCount, 0),
        "sm count");
  auto *dq = upload(q);
  auto *dk = upload(k.bytes), *dv = upload(v.bytes);
  auto *dSeq = upload(sequences), *dPos = upload(positions);
  auto *dSinks = upload(sinks);
  void *dOut = nullptr, *dWs = nullptr;
  check(cudaMalloc(&dOut, size_t(rows * qw) * 2), "cudaMalloc out");
  check(cudaMemset(dOut, 0xFF, size_t(rows * qw) * 2), "poison");
  size_t wsBytes = kn::attentionWorkspaceBytes(rows, c.heads, c.kvHeads,
                                               c.headDim, maxSpan, smCount);
  check(cudaMalloc(&dWs, std::max<size_t>(wsBytes, 4)), "cudaMalloc ws");

  kn::AttentionArgs a;
  a.q = reinterpret_cast<const kn::bf16 *>(dq);
  a.k = dk;
  a.v = dv;
  a.fp8 = c.fp8;
  a.rowBytes = rowBytes;
  a.out = static_cast<kn::bf16 *>(dOut);
  a.sequences = dSeq;
  a.positions = dPos;
  a.sinks = c.sinks ? dSinks : nullptr;
  a.rows = rows;
  a.heads = c.heads;
  a.kvHeads = c.kvHeads;
  a.headDim = c.headDim;
  a.seqStride = int64_t(c.maxContext) * rowBytes;
  a.window = c.window;
  a.maxSpan = maxSpan;
  a.scale = 1.0f / std::sqrt(float(c.headDim));
  a.workspace = static_cast<float *>(dWs);
  a.rowsPerSequence = c.rowsPerSequence;
  a.generalKernel = generalKernel;
  check(kn::attention(a, smCount, nullptr), "attention");
  check(cudaDeviceSynchronize(), "sync");
  std::vector<uint16_t> outBits(size_t(rows * qw));
  check(cudaMemcpy(outBits.data(), dOut, outBits.size() * 2,
                   cudaMemcpyDeviceToHost),
        "download");
  for (void *p : {(void *)dq, (void *)dk, (void *)dv, (void *)dSeq,
                  (void *)dPos, (void *)dSinks, dOut, dWs})
    cudaFree(p);

  std::vector<double> ref(size_t(rows * qw), 0.0);
  int group = c.heads / c.kvHeads;
  std::vector<double> scores;
  for (int64_t r = 0; r < rows; ++r) {
    auto [s, p] = c.rows[r];
    int64_t first = c.window > 0 ? std::max<int64_t>(0, p - c.window + 1) : 0;
    for (int h = 0; h < c.heads; ++h) {
      const uint16_t *qh = q.data() + r * qw + h * c.headDim;
      int64_t kvOff = int64_t(h / group) * c.headDim;
      double mx = c.sinks ? sinks[h] : -INFINITY;
      scores.clear();
      for (int64_t t = first; t <= p; ++t) {
        const float *kt = k.values.data() + s * seqStride + t * kvw + kvOff;
        double dot = 0;
        for (int d = 0; d < c.headDim; ++d)
          dot += double(bf16ToFloat(qh[d])) * kt[d];
        scores.push_back(dot * a.scale);
        mx = std::max(mx, scores.back());
      }
      double sum = c.sinks ? std::exp(sinks[h] - mx) : 0.0;
      for (double &x : scores)
        sum += (x = std::exp(x - mx));
      double *o = ref.data() + r * qw + h * c.headDim;
      for (int64_t t = first; t <= p; ++t) {
        const float *vt = v.values.data() + s * seqStride + t * kvw + kvOff;
        for (int d = 0; d < c.headDim; ++d)
          o[d] += scores[t - first] / sum * vt[d];
      }
    }
  }
  std::vector<float> got(outBits.size());
  for (size_t i = 0; i < got.size(); ++i)
    got[i] = bf16ToFloat(outBits[i]);
  EXPECT_LE(relativeL2(got, ref), 1e-2);
}

// The case on the tensor-core kernel (head_dim 64 and 128) and on the
// general one, where each applies.
void runCase(const Case &c, std::mt19937 &rng) {
  const int group = c.heads / c.kvHeads;
  const bool tensorCores = (c.headDim == 64 || c.headDim == 128) && group <= 64;
  const bool general = group <= (c.headDim == 256 ? 8 : 16);
  if (tensorCores)
    runKernel(c, false, rng);
  if (general)
    runKernel(c, true, rng);
}

std::mt19937 seeded() {
  unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  return std::mt19937(seed);
}

TEST(Attention, DecodeRowsOfMixedSequences) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  // (heads, kv heads, head dim): Mixtral, Qwen3-30B, Qwen2-MoE, GPT-OSS,
  // Qwen3-235B (16 per kv head), Qwen2-57B (7 per kv head), the tiny
  // fixtures, head dim 256; 32 and 48 per kv head (tensor cores only).
  struct Shape {
    int heads, kvHeads, headDim;
  };
  for (Shape s : {Shape{32, 8, 128}, Shape{32, 4, 128}, Shape{16, 16, 128},
                  Shape{64, 8, 64}, Shape{64, 4, 128}, Shape{28, 4, 128},
                  Shape{8, 2, 16}, Shape{4, 2, 16}, Shape{8, 4, 32},
                  Shape{16, 2, 256}, Shape{64, 2, 128}, Shape{96, 2, 64}}) {
    Case c{s.heads, s.kvHeads, s.headDim, 9, 1200, 0, false, {}};
    // Out of sequence order, short and long contexts, one at position 0.
    for (auto [seq, pos] : std::vector<std::pair<int32_t, int32_t>>{
             {3, 1199}, {0, 0}, {7, 31}, {1, 32}, {8, 700}, {2, 65}})
      c.rows.push_back({seq, pos});
    runCase(c, rng);
    c.fp8 = true;
    runCase(c, rng);
  }
}

TEST(Attention, LongContextSplitOverBlocks) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  // One or two rows of 4k-8k tokens: dozens of splits, merged by the second
  // kernel.
  for (int rowsCount : {1, 2}) {
    Case c{32, 8, 128, 2, 8192, 0, false, {}};
    for (int r = 0; r < rowsCount; ++r)
      c.rows.push_back({r, r == 0 ? 8191 : 4000});
    runCase(c, rng);
    c.sinks = true;
    runCase(c, rng);
    c.fp8 = true;
    runCase(c, rng);
  }
}

TEST(Attention, PrefillRows) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  // Prompts of 300 rows: blocks of 64 / group rows straddle prompts.
  for (bool fp8 : {false, true}) {
    runCase({32, 8, 128, 3, 300, 0, false, prefillRows(3, 300), fp8, 300}, rng);
    runCase({32, 4, 128, 3, 300, 0, false, prefillRows(3, 300), fp8, 300}, rng);
    runCase({64, 8, 64, 2, 200, 0, false, prefillRows(2, 200), fp8, 200}, rng);
    runCase({28, 4, 128, 2, 130, 0, false, prefillRows(2, 130), fp8, 130}, rng);
    runCase({64, 2, 128, 2, 90, 0, false, prefillRows(2, 90), fp8, 90}, rng);
    runCase({8, 2, 16, 4, 40, 0, false, prefillRows(4, 40), fp8, 40}, rng);
  }
  // The hint off either way: prompt rows said to be single, decode rows
  // said to come in runs.
  runCase({32, 8, 128, 3, 300, 0, false, prefillRows(3, 300)}, rng);
  Case decode{32, 8, 128, 9, 1200, 0, false, {}};
  for (auto [seq, pos] : std::vector<std::pair<int32_t, int32_t>>{
           {3, 1199}, {0, 0}, {7, 31}, {1, 32}, {8, 700}, {2, 65}})
    decode.rows.push_back({seq, pos});
  decode.rowsPerSequence = 64;
  runCase(decode, rng);
}

TEST(Attention, PrefillChunkOfALongPrompt) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  // 40 rows continuing a prompt at position 3,000: few rows, so the
  // context is split over blocks; with a window, the rows' spans differ.
  for (int64_t window : {int64_t(0), int64_t(128)}) {
    Case c{32, 8, 128, 1, 3100, window, window > 0, {}};
    for (int32_t p = 3000; p < 3040; ++p)
      c.rows.push_back({0, p});
    c.rowsPerSequence = 40;
    runCase(c, rng);
    c.fp8 = true;
    runCase(c, rng);
  }
}

TEST(Attention, SlidingWindowAndSinks) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  // GPT-OSS: window 128 and sinks, prefill and decode rows; the tiny
  // fixture's window 8 at head dim 16.
  runCase({64, 8, 64, 2, 400, 128, true, prefillRows(2, 400), false, 400}, rng);
  runCase({64, 8, 64, 2, 400, 128, true, prefillRows(2, 400), true, 400}, rng);
  Case decode{64, 8, 64, 4, 2000, 128, true, {}};
  for (int s = 0; s < 4; ++s)
    decode.rows.push_back({s, 100 + 600 * s});
  runCase(decode, rng);
  runCase({4, 2, 16, 2, 30, 8, true, prefillRows(2, 30), false, 30}, rng);
  decode.fp8 = true;
  runCase(decode, rng);
}

// The GPU's fp8 rows equal model::encodeFp8Row's byte for byte (codes and
// scales): the CPU backend's fp8 cache is the GPU's. Values span E4M3's
// normal and subnormal ranges relative to each vector's largest; one vector
// is all zeros.
TEST(Attention, Fp8EncodingMatchesTheCpuReference) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  struct Shape {
    int vectors, width;
  };
  for (Shape shape : {Shape{8, 128}, Shape{2, 16}, Shape{9, 64}, Shape{5, 8},
                      Shape{4, 256}}) {
    SCOPED_TRACE(testing::Message() << shape.vectors << " x " << shape.width);
    const int64_t rows = 37, elements = int64_t(shape.vectors) * shape.width;
    std::vector<uint16_t> bits = randomBf16(size_t(rows * elements), rng);
    std::uniform_int_distribution<int> exponent(-12, 6);
    for (auto &b : bits)
      b = moe::cuda::test::floatToBf16(bf16ToFloat(b) *
                                       std::ldexp(1.0f, exponent(rng)));
    std::fill(bits.begin(), bits.begin() + shape.width, 0); // a zero vector
    int64_t rowBytes = moe::model::kvRowBytes(moe::model::KvDtype::fp8,
                                              shape.vectors, shape.width);
    int64_t scales = moe::model::fp8ScalesOffset(shape.vectors, shape.width);
    CacheRows want = cacheRows(bits, rows, shape.vectors, shape.width, true);

    auto *dx = upload(bits);
    void *dOut = nullptr;
    check(cudaMalloc(&dOut, size_t(rows * rowBytes)), "cudaMalloc out");
    check(cudaMemset(dOut, 0, size_t(rows * rowBytes)), "zero");
    check(kn::encodeFp8Rows(reinterpret_cast<const kn::bf16 *>(dx), rows,
                            shape.vectors, shape.width, scales, rowBytes, dOut,
                            nullptr),
          "encodeFp8Rows");
    std::vector<uint8_t> got(size_t(rows * rowBytes));
    check(cudaMemcpy(got.data(), dOut, got.size(), cudaMemcpyDeviceToHost),
          "download");
    cudaFree(dx);
    cudaFree(dOut);
    int64_t mismatches = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < scales + 4 * shape.vectors; ++i) {
        bool padding = i >= elements && i < scales;
        mismatches +=
            !padding && got[r * rowBytes + i] != want.bytes[r * rowBytes + i];
      }
    EXPECT_EQ(mismatches, 0);
  }
}

TEST(Attention, RefusesUnsupportedShapes) {
  EXPECT_FALSE(kn::attentionSupports(32, 8, 96));  // head dim not a power of 2
  EXPECT_FALSE(kn::attentionSupports(128, 1, 128)); // 128 heads per kv head
  EXPECT_FALSE(kn::attentionSupports(64, 2, 32));   // 32 per kv head at 32
  EXPECT_FALSE(kn::attentionSupports(32, 2, 256));  // 16 per kv head at 256
  EXPECT_TRUE(kn::attentionSupports(64, 2, 128));   // tensor cores: up to 64
  EXPECT_FALSE(kn::attentionSupports(30, 4, 128)); // kv heads ∤ heads
  EXPECT_TRUE(kn::attentionSupports(28, 4, 128));
}

} // namespace
