// kernels::mlaAttention against a double-precision loop on the same bf16
// inputs, on the tensor-core kernel where it applies and on the general one
// always: DeepSeek-V2-Lite (16 heads) and V3 (128 heads) decode rows of mixed
// sequences, long contexts split over several blocks, prefill-like rows, the
// tiny fixtures' shapes, head counts that fill a head group partially, and
// negative positions (zeros); caches in bf16 and in fp8 (against the values
// the CPU reference's encoding stands for). The output is poisoned (NaN)
// before each launch.
#include "runtime/backends/cuda/kernels/MlaAttention.h"
#include "runtime/model/KvFormat.h"
#include "test/runtime/cuda/CudaTestSupport.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace {

namespace kn = moe::cuda::kernels;
using moe::cuda::test::bf16ToFloat;
using moe::cuda::test::CacheRows;
using moe::cuda::test::cacheRows;
using moe::cuda::test::check;
using moe::cuda::test::floatToBf16;
using moe::cuda::test::prefillRows;
using moe::cuda::test::randomBf16;
using moe::cuda::test::relativeL2;
using moe::cuda::test::upload;

struct Case {
  int heads, latentDim, ropeDim;
  int sequences, maxContext;
  // Per row: (sequence, position); rows of one sequence need not be
  // consecutive. With rowIsSequence, row r must read sequence r and the
  // kernel is given no sequence list.
  std::vector<std::pair<int32_t, int32_t>> rows;
  bool rowIsSequence = false;
  bool fp8 = false;
};

// The cache's rows in the kernel's format (model::latentRowBytes: bf16
// values, or fp8 scaled per ropeDim of them), and the values they stand for.
CacheRows latentRows(const std::vector<uint16_t> &bits, int64_t tokens,
                     int latentDim, int ropeDim, bool fp8) {
  const int dim = latentDim + ropeDim;
  return fp8 ? cacheRows(bits, tokens, dim / ropeDim, ropeDim, true)
             : cacheRows(bits, tokens, 1, dim, false);
}

void runCase(const Case &c, std::mt19937 &rng) {
  SCOPED_TRACE(testing::Message()
               << "heads " << c.heads << " latent " << c.latentDim << " rope "
               << c.ropeDim << " rows " << c.rows.size() << " context "
               << c.maxContext << " fp8 " << c.fp8);
  ASSERT_TRUE(kn::mlaAttentionSupports(c.heads, c.latentDim, c.ropeDim, c.fp8));
  const int64_t rows = static_cast<int64_t>(c.rows.size());
  const int dim = c.latentDim + c.ropeDim;
  const int64_t seqStride = int64_t(c.maxContext) * dim; // values
  auto qLatent = randomBf16(size_t(rows * c.heads * c.latentDim), rng);
  auto qRope = randomBf16(size_t(rows * c.heads * c.ropeDim), rng);
  CacheRows cache = latentRows(randomBf16(size_t(c.sequences * seqStride), rng),
                               int64_t(c.sequences) * c.maxContext, c.latentDim,
                               c.ropeDim, c.fp8);
  const int64_t rowBytes =
      int64_t(cache.bytes.size()) / (int64_t(c.sequences) * c.maxContext);
  // q in [-3, 3) and scale 1/sqrt(dim): scores of unit spread, a peaked but
  // not one-hot softmax.
  for (auto *q : {&qLatent, &qRope})
    for (auto &x : *q)
      x = floatToBf16(bf16ToFloat(x) * 3.0f);
  const float scale = 1.0f / std::sqrt(float(dim));
  std::vector<int32_t> sequences, positions;
  int maxSpan = 0;
  for (auto [s, p] : c.rows) {
    sequences.push_back(s);
    positions.push_back(p);
    maxSpan = std::max(maxSpan, p + 1);
  }

  int smCount = 0;
  check(cudaDeviceGetAttribute(&smCount, cudaDevAttrMultiProcessorCount, 0),
        "sm count");
  auto *dqLatent = upload(qLatent), *dqRope = upload(qRope);
  auto *dCache = upload(cache.bytes);
  auto *dSeq = upload(sequences), *dPos = upload(positions);
  const size_t outCount = size_t(rows * c.heads * c.latentDim);
  void *dOut = nullptr, *dWs = nullptr;
  check(cudaMalloc(&dOut, outCount * 2), "cudaMalloc out");
  size_t wsBytes = kn::mlaAttentionWorkspaceBytes(rows, c.heads, c.latentDim,
                                                  maxSpan, smCount);
  check(cudaMalloc(&dWs, std::max<size_t>(wsBytes, 4)), "cudaMalloc ws");

  kn::MlaAttentionArgs a;
  a.qLatent = reinterpret_cast<const kn::bf16 *>(dqLatent);
  a.qRope = reinterpret_cast<const kn::bf16 *>(dqRope);
  a.cache = dCache;
  a.fp8 = c.fp8;
  a.rowBytes = rowBytes;
  a.scalesOffset = moe::model::fp8ScalesOffset(dim / c.ropeDim, c.ropeDim);
  a.out = static_cast<kn::bf16 *>(dOut);
  a.sequences = c.rowIsSequence ? nullptr : dSeq;
  a.positions = dPos;
  a.rows = rows;
  a.heads = c.heads;
  a.latentDim = c.latentDim;
  a.ropeDim = c.ropeDim;
  a.seqStride = int64_t(c.maxContext) * rowBytes;
  a.maxSpan = maxSpan;
  a.scale = scale;
  a.workspace = static_cast<float *>(dWs);
  // Both kernels where the tensor-core one applies, else the general one.
  std::vector<std::vector<uint16_t>> outputs;
  for (bool general : {false, true}) {
    if (!general && !kn::mlaAttentionOnTensorCores(c.latentDim, c.ropeDim))
      continue;
    a.generalKernel = general;
    check(cudaMemset(dOut, 0xFF, outCount * 2), "poison");
    check(kn::mlaAttention(a, smCount, nullptr), "mlaAttention");
    check(cudaDeviceSynchronize(), "sync");
    outputs.emplace_back(outCount);
    check(cudaMemcpy(outputs.back().data(), dOut, outCount * 2,
                     cudaMemcpyDeviceToHost),
          "download");
  }
  for (void *p : {(void *)dqLatent, (void *)dqRope, (void *)dCache,
                  (void *)dSeq, (void *)dPos, dOut, dWs})
    cudaFree(p);

  std::vector<double> ref(outCount, 0.0);
  std::vector<double> scores;
  for (int64_t r = 0; r < rows; ++r) {
    auto [s, p] = c.rows[r];
    const float *seq = cache.values.data() + s * seqStride;
    for (int h = 0; h < c.heads; ++h) {
      const int64_t head = r * c.heads + h;
      const uint16_t *ql = qLatent.data() + head * c.latentDim;
      const uint16_t *qr = qRope.data() + head * c.ropeDim;
      scores.clear();
      double mx = -INFINITY;
      for (int64_t t = 0; t <= p; ++t) {
        const float *kt = seq + t * dim;
        double dot = 0;
        for (int d = 0; d < c.latentDim; ++d)
          dot += double(bf16ToFloat(ql[d])) * kt[d];
        for (int d = 0; d < c.ropeDim; ++d)
          dot += double(bf16ToFloat(qr[d])) * kt[c.latentDim + d];
        scores.push_back(dot * scale);
        mx = std::max(mx, scores.back());
      }
      double sum = 0;
      for (double &x : scores)
        sum += (x = std::exp(x - mx));
      double *o = ref.data() + head * c.latentDim;
      for (int64_t t = 0; t <= p; ++t)
        for (int d = 0; d < c.latentDim; ++d)
          o[d] += scores[t] / sum * seq[t * dim + d];
    }
  }
  for (size_t k = 0; k < outputs.size(); ++k) {
    const bool general = k + 1 == outputs.size();
    SCOPED_TRACE(general ? "general kernel" : "tensor-core kernel");
    std::vector<float> got(outCount);
    for (size_t i = 0; i < got.size(); ++i)
      got[i] = bf16ToFloat(outputs[k][i]);
    EXPECT_LE(relativeL2(got, ref), 1e-2);
    // Rows at negative positions attend to nothing: exact zeros.
    for (int64_t r = 0; r < rows; ++r) {
      if (c.rows[r].second >= 0)
        continue;
      for (int64_t i = 0; i < int64_t(c.heads) * c.latentDim; ++i)
        ASSERT_EQ(got[r * c.heads * c.latentDim + i], 0.0f) << "row " << r;
    }
  }
}

std::mt19937 seeded() {
  unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  return std::mt19937(seed);
}

// Out of sequence order, short and long contexts, one at position 0.
std::vector<std::pair<int32_t, int32_t>> decodeRows() {
  return {{3, 1199}, {0, 0}, {7, 31}, {1, 32}, {8, 700}, {2, 65}};
}

TEST(MlaAttention, DeepSeekV2LiteDecode) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  runCase({16, 512, 64, 9, 1200, decodeRows()}, rng);
}

TEST(MlaAttention, DeepSeekV3Decode) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  runCase({128, 512, 64, 3, 1200, {{2, 1199}, {0, 517}}}, rng);
}

TEST(MlaAttention, LongContextSplitOverBlocks) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  // One or two rows of 4k-8k tokens: dozens of splits, merged by the second
  // kernel; a row at a negative position among them.
  runCase({16, 512, 64, 1, 8192, {{0, 8191}}}, rng);
  runCase({16, 512, 64, 3, 8192, {{2, 4000}, {1, -1}, {0, 8191}}}, rng);
  runCase({128, 512, 64, 1, 4096, {{0, 4095}}}, rng);
}

TEST(MlaAttention, PrefillRows) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  runCase({16, 512, 64, 3, 200, prefillRows(3, 200)}, rng);
  runCase({4, 32, 8, 2, 40, prefillRows(2, 40)}, rng);
}

TEST(MlaAttention, TinyShapes) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  for (int latent : {16, 32}) {
    runCase({4, latent, 8, 9, 1200, decodeRows()}, rng);
    // No sequence list: row r reads sequence r.
    Case own{4, latent, 8, 3, 100, {{0, 99}, {1, 5}, {2, 64}}, true};
    runCase(own, rng);
  }
}

TEST(MlaAttention, OtherShapes) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  // Every latent size, each head-group size, and head counts that leave the
  // last group part empty (1, 6, 20, 40).
  struct Shape {
    int heads, latent, rope;
  };
  for (Shape s : {Shape{1, 512, 64}, Shape{6, 64, 16}, Shape{8, 128, 32},
                  Shape{20, 128, 32}, Shape{40, 256, 64}, Shape{16, 256, 8},
                  Shape{12, 16, 64}})
    runCase({s.heads, s.latent, s.rope, 9, 1200, decodeRows()}, rng);
}

// fp8 latent caches (a scale per ropeDim values): decode rows, long
// contexts split over blocks, prefill rows, the tiny shapes and every scale
// group count the shipped kernels meet (latent / rope from 2 to 64).
TEST(MlaAttention, Fp8LatentCache) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  auto fp8 = [](Case c) {
    c.fp8 = true;
    return c;
  };
  runCase(fp8({16, 512, 64, 9, 1200, decodeRows()}), rng);
  runCase(fp8({128, 512, 64, 3, 1200, {{2, 1199}, {0, 517}}}), rng);
  runCase(fp8({16, 512, 64, 3, 8192, {{2, 4000}, {1, -1}, {0, 8191}}}), rng);
  runCase(fp8({16, 512, 64, 3, 200, prefillRows(3, 200)}), rng);
  runCase(fp8({4, 16, 8, 9, 1200, decodeRows()}), rng);
  runCase(fp8({4, 32, 8, 3, 100, {{0, 99}, {1, 5}, {2, 64}}, true}), rng);
  for (auto [heads, latent, rope] :
       {std::tuple{1, 512, 8}, std::tuple{6, 64, 16}, std::tuple{20, 128, 32},
        std::tuple{40, 256, 64}})
    runCase(fp8({heads, latent, rope, 9, 1200, decodeRows()}), rng);
}

TEST(MlaAttention, NegativePositionGivesZeros) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng = seeded();
  runCase({16, 512, 64, 3, 64, {{0, 40}, {1, -1}, {2, 63}, {0, -5}}}, rng);
}

TEST(MlaAttention, RefusesUnsupportedShapes) {
  for (bool fp8 : {false, true}) {
    EXPECT_TRUE(kn::mlaAttentionSupports(16, 512, 64, fp8));
    EXPECT_TRUE(kn::mlaAttentionSupports(128, 512, 64, fp8));
    EXPECT_TRUE(kn::mlaAttentionSupports(4, 16, 8, fp8));
    EXPECT_FALSE(kn::mlaAttentionSupports(0, 512, 64, fp8));   // no heads
    EXPECT_FALSE(kn::mlaAttentionSupports(129, 512, 64, fp8)); // > 128 heads
    EXPECT_FALSE(kn::mlaAttentionSupports(16, 576, 64, fp8));  // latent 576
    EXPECT_FALSE(kn::mlaAttentionSupports(16, 8, 8, fp8));     // latent 8
    EXPECT_FALSE(kn::mlaAttentionSupports(16, 1024, 64, fp8)); // latent 1024
    EXPECT_FALSE(kn::mlaAttentionSupports(16, 512, 0, fp8));   // no rope part
    EXPECT_FALSE(kn::mlaAttentionSupports(16, 512, 128, fp8)); // rope 128
    EXPECT_FALSE(kn::mlaAttentionSupports(16, 512, 24, fp8));  // rope not 2^k
  }
  // fp8 scales groups of ropeDim values: the latent must be whole groups.
  EXPECT_TRUE(kn::mlaAttentionSupports(12, 16, 64, false));
  EXPECT_FALSE(kn::mlaAttentionSupports(12, 16, 64, true));
  // Tensor cores for the latent shapes of real checkpoints, the general
  // kernel for the rest.
  EXPECT_TRUE(kn::mlaAttentionOnTensorCores(512, 64));
  EXPECT_TRUE(kn::mlaAttentionOnTensorCores(256, 32));
  EXPECT_TRUE(kn::mlaAttentionOnTensorCores(128, 64));
  EXPECT_FALSE(kn::mlaAttentionOnTensorCores(64, 16));
  EXPECT_FALSE(kn::mlaAttentionOnTensorCores(512, 16));
  EXPECT_FALSE(kn::mlaAttentionOnTensorCores(512, 8));
  EXPECT_FALSE(kn::mlaAttentionOnTensorCores(16, 8));

  // The launcher checks its arguments before touching the device.
  alignas(16) static const kn::bf16 cache[16] = {};
  kn::MlaAttentionArgs a;
  a.cache = cache;
  a.heads = 16;
  a.latentDim = 512;
  a.ropeDim = 64;
  a.rowBytes = 1152;
  a.seqStride = 1152;
  EXPECT_EQ(kn::mlaAttention(a, 132, nullptr), cudaSuccess); // rows 0
  a.rows = 1;
  a.maxSpan = 8192;
  ASSERT_GT(kn::mlaAttentionWorkspaceBytes(1, 16, 512, 8192, 132), 0u);
  EXPECT_EQ(kn::mlaAttention(a, 132, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(kn::mlaAttentionWorkspaceBytes(1024, 16, 512, 640, 132), 0u);
  a.rows = 0;
  a.seqStride = 1160;
  EXPECT_EQ(kn::mlaAttention(a, 132, nullptr), cudaErrorMisalignedAddress);
  a.seqStride = 1152;
  a.cache = cache + 1;
  EXPECT_EQ(kn::mlaAttention(a, 132, nullptr), cudaErrorMisalignedAddress);
  a.cache = cache;
  a.ropeDim = 48;
  EXPECT_EQ(kn::mlaAttention(a, 132, nullptr), cudaErrorInvalidValue);
  // An fp8 row holds 576 codes, then 9 scales from 576: 624 bytes.
  a.ropeDim = 64;
  a.fp8 = true;
  a.rowBytes = 624;
  EXPECT_EQ(kn::mlaAttention(a, 132, nullptr), cudaErrorInvalidValue);
  a.scalesOffset = 576;
  EXPECT_EQ(kn::mlaAttention(a, 132, nullptr), cudaSuccess);
  a.rowBytes = 608; // the last scale past the row
  EXPECT_EQ(kn::mlaAttention(a, 132, nullptr), cudaErrorInvalidValue);
  a.fp8 = false; // a bf16 row is 2 bytes a value
  a.rowBytes = 1168;
  EXPECT_EQ(kn::mlaAttention(a, 132, nullptr), cudaErrorInvalidValue);
}

} // namespace
