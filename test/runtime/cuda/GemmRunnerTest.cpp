#include "runtime/backends/cuda/GemmRunner.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/backends/cuda/Memory.h"
#include "runtime/backends/cuda/Stream.h"

#include "CudaTestSupport.h"

namespace moe::cuda {
namespace {

using test::bf16ToFloat;
using test::randomBf16;
using test::relativeL2;
using bf16 = __nv_bfloat16;

// bf16 operands, fp32 accumulation, bf16 result: ~4e-3 typical.
constexpr double kTolerance = 1e-2;

// y = x · Wᵀ (+ bias) in double over the bf16 inputs.
std::vector<double> reference(const std::vector<std::uint16_t> &x,
                              const std::vector<std::uint16_t> &w,
                              const std::vector<std::uint16_t> *bias,
                              std::int64_t m, std::int64_t n, std::int64_t k) {
  std::vector<float> xf(x.size()), wf(w.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    xf[i] = bf16ToFloat(x[i]);
  for (std::size_t i = 0; i < w.size(); ++i)
    wf[i] = bf16ToFloat(w[i]);
  std::vector<double> y(m * n);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double sum = bias ? bf16ToFloat((*bias)[j]) : 0.0;
      for (std::int64_t p = 0; p < k; ++p)
        sum += double(xf[i * k + p]) * double(wf[j * k + p]);
      y[i * n + j] = sum;
    }
  return y;
}

// Device memory from one arena, with host round trips.
class GemmTest : public ::testing::Test {
protected:
  void SetUp() override {
    MOE_REQUIRE_CUDA_DEVICE();
    auto arena = DeviceArena::create(std::size_t(256) << 20, "gemm test");
    ASSERT_TRUE(arena.ok()) << arena.error().message();
    arena_ = std::make_unique<DeviceArena>(std::move(*arena));
    auto stream = Stream::create();
    ASSERT_TRUE(stream.ok()) << stream.error().message();
    stream_ = std::make_unique<Stream>(std::move(*stream));
  }

  bf16 *upload(const std::vector<std::uint16_t> &host) {
    auto ptr = arena_->allocateArray<bf16>(host.size(), "operand");
    EXPECT_TRUE(ptr.ok()) << ptr.error().message();
    EXPECT_EQ(
        cudaMemcpy(*ptr, host.data(), host.size() * 2, cudaMemcpyHostToDevice),
        cudaSuccess);
    return *ptr;
  }

  // Output memory filled with NaN, so an element left unwritten fails.
  bf16 *poisoned(std::size_t count) {
    auto ptr = arena_->allocateArray<bf16>(count, "output");
    EXPECT_TRUE(ptr.ok()) << ptr.error().message();
    EXPECT_EQ(cudaMemset(*ptr, 0xFF, count * 2), cudaSuccess);
    return *ptr;
  }

  std::vector<float> download(const bf16 *ptr, std::size_t count) {
    EXPECT_TRUE(stream_->synchronize().ok());
    std::vector<std::uint16_t> bits(count);
    EXPECT_EQ(cudaMemcpy(bits.data(), ptr, count * 2, cudaMemcpyDeviceToHost),
              cudaSuccess);
    std::vector<float> out(count);
    for (std::size_t i = 0; i < count; ++i)
      out[i] = bf16ToFloat(bits[i]);
    return out;
  }

  std::unique_ptr<GemmRunner> runner(bool autotune = true) {
    GemmRunnerOptions options;
    options.autotune = autotune;
    auto created = GemmRunner::create(options);
    EXPECT_TRUE(created.ok()) << created.error().message();
    return created.ok() ? std::move(*created) : nullptr;
  }

  // Runs one random problem and returns its rel-L2 error.
  double check(GemmRunner &gemm, std::int64_t m, std::int64_t n, std::int64_t k,
               bool withBias, std::mt19937 &rng) {
    auto x = randomBf16(m * k, rng);
    auto w = randomBf16(n * k, rng);
    auto bias = randomBf16(n, rng);
    GemmArgs args;
    args.x = upload(x);
    args.w = upload(w);
    args.bias = withBias ? upload(bias) : nullptr;
    args.y = poisoned(m * n);
    args.m = m;
    args.n = n;
    args.k = k;
    Status status = gemm.run(args, stream_->get());
    EXPECT_TRUE(status.ok()) << status.error().message();
    auto y = download(args.y, m * n);
    return relativeL2(y, reference(x, w, withBias ? &bias : nullptr, m, n, k));
  }

  std::unique_ptr<DeviceArena> arena_;
  std::unique_ptr<Stream> stream_;
};

struct Shape {
  std::int64_t m, n, k;
};

// m = 1 (decode), odd sizes (operands only 2-byte aligned) and the usual
// powers of two.
const std::vector<Shape> kShapes = {
    {1, 64, 64},    {1, 4096, 1024}, {1, 333, 257},    {2, 50, 30},
    {3, 77, 45},    {7, 129, 96},    {16, 256, 200},   {33, 1000, 130},
    {64, 512, 512}, {100, 384, 777}, {128, 1024, 256}, {257, 96, 1024},
    {512, 300, 64}};

TEST_F(GemmTest, MatchesCpuReference) {
  auto gemm = runner();
  ASSERT_TRUE(gemm);
  std::mt19937 rng(1);
  for (const Shape &s : kShapes) {
    double err = check(*gemm, s.m, s.n, s.k, false, rng);
    EXPECT_LE(err, kTolerance) << "m=" << s.m << " n=" << s.n << " k=" << s.k;
    arena_->reset();
  }
}

TEST_F(GemmTest, HeuristicChoiceMatchesToo) {
  auto gemm = runner(/*autotune=*/false);
  ASSERT_TRUE(gemm);
  std::mt19937 rng(2);
  for (const Shape &s : kShapes) {
    double err = check(*gemm, s.m, s.n, s.k, false, rng);
    EXPECT_LE(err, kTolerance) << "m=" << s.m << " n=" << s.n << " k=" << s.k;
    arena_->reset();
  }
}

TEST_F(GemmTest, AddsBias) {
  auto gemm = runner();
  ASSERT_TRUE(gemm);
  std::mt19937 rng(3);
  for (const Shape &s : {Shape{1, 256, 128}, Shape{5, 300, 64},
                         Shape{128, 256, 512}, Shape{9, 77, 45}}) {
    double err = check(*gemm, s.m, s.n, s.k, true, rng);
    EXPECT_LE(err, kTolerance) << "m=" << s.m << " n=" << s.n << " k=" << s.k;
    arena_->reset();
  }
}

TEST_F(GemmTest, TunesOncePerBucket) {
  auto gemm = runner();
  ASSERT_TRUE(gemm);
  EXPECT_EQ(GemmRunner::mBucket(0), 1);
  EXPECT_EQ(GemmRunner::mBucket(1), 1);
  EXPECT_EQ(GemmRunner::mBucket(100), 128);
  EXPECT_EQ(GemmRunner::mBucket(128), 128);
  EXPECT_EQ(GemmRunner::mBucket(129), 256);
  std::mt19937 rng(5);
  const std::int64_t n = 1024, k = 512;
  auto w = randomBf16(n * k, rng);
  bf16 *wDev = upload(w);
  for (std::int64_t m : {100, 120}) {
    auto x = randomBf16(m * k, rng);
    GemmArgs args;
    args.x = upload(x);
    args.w = wDev;
    args.y = poisoned(m * n);
    args.m = m;
    args.n = n;
    args.k = k;
    auto count = gemm->candidateCount(args);
    ASSERT_TRUE(count.ok()) << count.error().message();
    EXPECT_GE(*count, 1);
    EXPECT_LE(*count, GemmRunner::kMaxCandidates);
    ASSERT_TRUE(gemm->run(args, stream_->get()).ok());
    if (m == 100) { // tuned: one of its own candidates
      EXPECT_GE(gemm->selectedCandidate(args), 0);
      EXPECT_LT(gemm->selectedCandidate(args), *count);
    }
    auto y = download(args.y, m * n);
    EXPECT_LE(relativeL2(y, reference(x, w, nullptr, m, n, k)), kTolerance);
  }
}

TEST_F(GemmTest, SelectsCandidatesAndRejectsBadInput) {
  auto gemm = runner(/*autotune=*/false);
  ASSERT_TRUE(gemm);
  std::mt19937 rng(6);
  const std::int64_t m = 16, n = 256, k = 128;
  auto x = randomBf16(m * k, rng);
  auto w = randomBf16(n * k, rng);
  GemmArgs args;
  args.x = upload(x);
  args.w = upload(w);
  args.y = poisoned(m * n);
  args.m = m;
  args.n = n;
  args.k = k;
  auto count = gemm->candidateCount(args);
  ASSERT_TRUE(count.ok()) << count.error().message();
  auto ref = reference(x, w, nullptr, m, n, k);
  // Every candidate computes the same function.
  for (int c = 0; c < *count; ++c) {
    ASSERT_TRUE(gemm->selectCandidate(args, c).ok());
    EXPECT_EQ(gemm->selectedCandidate(args), c);
    ASSERT_EQ(cudaMemset(args.y, 0xFF, m * n * 2), cudaSuccess);
    ASSERT_TRUE(gemm->run(args, stream_->get()).ok());
    EXPECT_LE(relativeL2(download(args.y, m * n), ref), kTolerance)
        << "candidate " << c;
  }
  Status outOfRange = gemm->selectCandidate(args, *count);
  ASSERT_FALSE(outOfRange.ok());
  EXPECT_NE(outOfRange.error().message().find("no candidate"),
            std::string::npos);

  GemmArgs empty = args;
  empty.m = 0;
  EXPECT_TRUE(gemm->run(empty, stream_->get()).ok());
  GemmArgs bad = args;
  bad.n = 0;
  Status badShape = gemm->run(bad, stream_->get());
  ASSERT_FALSE(badShape.ok());
  EXPECT_EQ(badShape.error().message(), "gemm: bad shape m=16 n=0 k=128");
}

// Per-head products as MLA runs them: head h of x [m, heads·hx] (its
// columns [h·hx, h·hx + k)) times w_h [n, k], into y [m, heads·n]'s columns
// [h·n, (h + 1)·n), all heads in one launch; every head against its own
// reference, at decode and prefill row counts and DeepSeek-V2-Lite's sizes.
TEST_F(GemmTest, StridedBatchesMultiplyEachHeadInPlace) {
  auto gemm = runner();
  ASSERT_TRUE(gemm);
  std::mt19937 rng(7);
  struct Case {
    std::int64_t m, heads, n, k, hx;
  };
  for (Case c : {Case{1, 16, 512, 128, 192}, Case{300, 16, 512, 128, 192},
                 Case{77, 3, 128, 512, 512}, Case{5, 4, 40, 24, 32}}) {
    SCOPED_TRACE(testing::Message() << "m " << c.m << " heads " << c.heads
                                    << " n " << c.n << " k " << c.k);
    auto x = randomBf16(c.m * c.heads * c.hx, rng);
    auto w = randomBf16(c.heads * c.n * c.k, rng);
    GemmArgs args;
    args.x = upload(x);
    args.w = upload(w);
    args.y = poisoned(c.m * c.heads * c.n);
    args.m = c.m;
    args.n = c.n;
    args.k = c.k;
    args.ldx = c.heads * c.hx;
    args.ldy = c.heads * c.n;
    args.batch = c.heads;
    args.xStride = c.hx;
    args.wStride = c.n * c.k;
    args.yStride = c.n;
    Status status = gemm->run(args, stream_->get());
    ASSERT_TRUE(status.ok()) << status.error().message();
    auto y = download(args.y, c.m * c.heads * c.n);
    for (std::int64_t h = 0; h < c.heads; ++h) {
      std::vector<std::uint16_t> xh(c.m * c.k),
          wh(w.begin() + h * c.n * c.k, w.begin() + (h + 1) * c.n * c.k);
      for (std::int64_t i = 0; i < c.m; ++i)
        std::copy_n(x.begin() + i * c.heads * c.hx + h * c.hx, c.k,
                    xh.begin() + i * c.k);
      std::vector<float> yh(c.m * c.n);
      for (std::int64_t i = 0; i < c.m; ++i)
        std::copy_n(y.begin() + i * c.heads * c.n + h * c.n, c.n,
                    yh.begin() + i * c.n);
      EXPECT_LE(relativeL2(yh, reference(xh, wh, nullptr, c.m, c.n, c.k)),
                kTolerance)
          << "head " << h;
    }
    arena_->reset();
  }
  // Batches are for bf16 without bias; x's stride holds its row.
  GemmArgs bad;
  bad.x = bad.w = reinterpret_cast<const bf16 *>(16);
  bad.y = reinterpret_cast<bf16 *>(16);
  bad.m = bad.n = bad.k = 8;
  bad.ldx = 4;
  EXPECT_FALSE(gemm->run(bad, stream_->get()).ok());
  bad.ldx = 0;
  bad.batch = 2;
  bad.bias = bad.x;
  EXPECT_FALSE(gemm->run(bad, stream_->get()).ok());
  bad.bias = nullptr;
  bad.batch = 0;
  EXPECT_FALSE(gemm->run(bad, stream_->get()).ok());
}

} // namespace
} // namespace moe::cuda
