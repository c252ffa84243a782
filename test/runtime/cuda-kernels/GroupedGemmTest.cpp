// The grouped expert GEMM against a double-precision CPU loop on the same bf16
// inputs, over tiny shapes, every tile height, the decode shapes of real
// models (uneven expert loads with empty and one-row experts) and a weight
// split over two allocations. The output is poisoned (all bits set: a bf16
// NaN) before each launch, so a row left unwritten fails.
//
// Expert e's weight block is a window of one random pool starting kShift·e
// elements in, so every expert's data differs while only one expert-sized
// block is generated on the host.
#include "runtime/backends/cuda/kernels/GroupedGemm.h"
#include "runtime/model/WeightFormat.h"
#include "test/runtime/cuda/CudaTestSupport.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace {

namespace gpu = moe::cuda::kernels;
using moe::cuda::test::bf16ToFloat;
using moe::cuda::test::check;
using moe::cuda::test::randomBf16;

constexpr int64_t kShift = 97;         // pool offset between experts, elements
constexpr double kCheckMacs = 1 << 27; // reference work per problem

class DeviceBuffer {
public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    check(cudaMalloc(&data_, std::max<size_t>(bytes, 16)), "cudaMalloc");
  }
  DeviceBuffer(DeviceBuffer &&other) noexcept
      : data_(std::exchange(other.data_, nullptr)), bytes_(other.bytes_) {}
  DeviceBuffer &operator=(DeviceBuffer &&other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    return *this;
  }
  ~DeviceBuffer() { cudaFree(data_); }

  template <typename T> T *as() const { return static_cast<T *>(data_); }
  void upload(const void *host, size_t bytes, size_t at = 0) {
    check(cudaMemcpy(static_cast<char *>(data_) + at, host, bytes,
                     cudaMemcpyHostToDevice),
          "cudaMemcpy H2D");
  }
  void poison() { check(cudaMemset(data_, 0xFF, bytes_), "cudaMemset"); }
  std::vector<uint16_t> downloadBf16() const {
    std::vector<uint16_t> host(bytes_ / 2);
    check(cudaMemcpy(host.data(), data_, bytes_, cudaMemcpyDeviceToHost),
          "cudaMemcpy D2H");
    return host;
  }

private:
  void *data_ = nullptr;
  size_t bytes_ = 0;
};

struct Problem {
  std::string name;
  std::vector<int32_t> counts; // rows per expert
  int64_t n = 0;
  int64_t k = 0;
  bool bias = false;
  // ≥ 0: the first residentExperts blocks in one allocation, the rest in
  // another; −1: all in one.
  int residentExperts = -1;
  int64_t stridePad = 0; // elements between expert blocks, multiple of 8
  unsigned seed = 1;
};

// `rows` over `experts` (≥ 4) with log-normal popularity, as routers skew it;
// then experts 1 and E−1 are emptied and expert E/2 keeps one row (the
// difference goes to expert 0).
std::vector<int32_t> unevenCounts(int experts, int64_t rows, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.7);
  std::vector<double> popularity(experts);
  for (double &p : popularity)
    p = std::exp(normal(rng));
  std::discrete_distribution<int> pick(popularity.begin(), popularity.end());
  std::vector<int32_t> counts(experts, 0);
  for (int64_t r = 0; r < rows; ++r)
    ++counts[pick(rng)];
  int last = experts - 1, mid = experts / 2;
  counts[0] += counts[1] + counts[last] + counts[mid] - 1;
  counts[1] = counts[last] = 0;
  counts[mid] = 1;
  return counts;
}

// Host data, device buffers and the launch arguments of one problem.
class GroupedProblem {
public:
  explicit GroupedProblem(Problem p) : p_(std::move(p)) {
    std::printf("[%s] seed %u\n", p_.name.c_str(), p_.seed);
    std::mt19937 rng(p_.seed);
    experts_ = static_cast<int>(p_.counts.size());
    offsets_.assign(1, 0);
    for (int32_t c : p_.counts)
      offsets_.push_back(offsets_.back() + c);
    rows_ = offsets_.back();
    x_ = randomBf16(rows_ * p_.k, rng);
    wPool_ = randomBf16(p_.n * p_.k + experts_ * kShift, rng);
    if (p_.bias)
      biasPool_ = randomBf16(p_.n + experts_ * kShift, rng);

    x = DeviceBuffer(x_.size() * 2);
    x.upload(x_.data(), x_.size() * 2);
    offsets = DeviceBuffer(offsets_.size() * 4);
    offsets.upload(offsets_.data(), offsets_.size() * 4);
    y = DeviceBuffer(rows_ * p_.n * 2);
    args.x = x.as<gpu::bf16>();
    args.offsets = offsets.as<int32_t>();
    args.y = y.as<gpu::bf16>();
    args.rows = rows_;
    args.experts = experts_;
    args.n = p_.n;
    args.k = p_.k;
    args.weight =
        stack(wPool_, p_.n * p_.k, p_.n * p_.k + p_.stridePad, weightParts_);
    if (p_.bias)
      args.bias = stack(biasPool_, p_.n, p_.n + p_.stridePad, biasParts_);
  }

  int64_t rows() const { return rows_; }
  const std::vector<int32_t> &counts() const { return p_.counts; }
  // Expert e's [n, k] weight block (bf16 bits).
  const uint16_t *weightBlock(int e) const {
    return wPool_.data() + e * kShift;
  }
  int residentExperts() const {
    return p_.residentExperts < 0 ? experts_ : p_.residentExperts;
  }

  // Bytes of the weight blocks that some row uses: the least a launch reads.
  double usedWeightBytes() const {
    int used = 0;
    for (int32_t c : p_.counts)
      used += c > 0;
    return 2.0 * used * p_.n * p_.k;
  }

  void run() {
    y.poison();
    check(gpu::groupedGemm(args, nullptr), "groupedGemm");
    check(cudaDeviceSynchronize(), "sync after groupedGemm");
  }

  // Every element written; sampled rows and columns match the reference
  // within bf16 rounding.
  void expectMatches() const {
    SCOPED_TRACE(p_.name);
    std::vector<uint16_t> got = y.downloadBf16();
    int64_t unwritten = std::count_if(got.begin(), got.end(), [](uint16_t v) {
      return !std::isfinite(bf16ToFloat(v));
    });
    EXPECT_EQ(unwritten, 0) << "non-finite (unwritten) outputs";

    std::vector<int64_t> cols = checkedColumns();
    std::vector<std::pair<int64_t, int>> rows = checkedRows(cols.size());
    std::vector<float> gotValues;
    std::vector<double> refValues;
    for (auto [r, e] : rows)
      for (int64_t c : cols) {
        gotValues.push_back(bf16ToFloat(got[r * p_.n + c]));
        refValues.push_back(reference(r, e, c));
      }
    double sumSquares = 0;
    for (double v : refValues)
      sumSquares += v * v;
    double rms = std::sqrt(sumSquares / refValues.size());
    EXPECT_LE(moe::cuda::test::relativeL2(gotValues, refValues), 1e-2);
    int64_t bad = 0;
    for (size_t i = 0; i < refValues.size(); ++i) {
      double err = std::abs(gotValues[i] - refValues[i]);
      if (!(err <= 1e-2 * std::abs(refValues[i]) + 1e-2 * rms) && bad++ == 0)
        ADD_FAILURE() << "row " << rows[i / cols.size()].first << " column "
                      << cols[i % cols.size()] << ": got " << gotValues[i]
                      << ", want " << refValues[i];
    }
    EXPECT_EQ(bad, 0) << "of " << refValues.size() << " checked elements";
  }

  gpu::GroupedGemmArgs args;
  DeviceBuffer x, offsets, y;

private:
  // The experts' blocks (window e of the pool, `size` elements each) placed
  // `stride` apart, in one allocation or split as the problem asks.
  gpu::ExpertMatrix stack(const std::vector<uint16_t> &pool, int64_t size,
                          int64_t stride, DeviceBuffer (&parts)[2]) {
    int64_t resident =
        p_.residentExperts < 0 ? experts_ : int64_t(p_.residentExperts);
    int64_t perPart[2] = {resident, experts_ - resident};
    for (int i = 0; i < 2; ++i)
      if (perPart[i] > 0)
        parts[i] = DeviceBuffer(perPart[i] * stride * 2);
    for (int64_t e = 0; e < experts_; ++e) {
      int part = e < resident ? 0 : 1;
      int64_t slot = part == 0 ? e : e - resident;
      parts[part].upload(pool.data() + e * kShift, size * 2, slot * stride * 2);
    }
    gpu::ExpertMatrix m;
    m.resident = parts[0].as<gpu::bf16>();
    m.streamed = parts[1].as<gpu::bf16>();
    m.residentExperts = resident;
    m.stride = stride;
    return m;
  }

  double reference(int64_t r, int e, int64_t c) const {
    const uint16_t *xr = x_.data() + r * p_.k;
    const uint16_t *wr = wPool_.data() + e * kShift + c * p_.k;
    double sum[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < p_.k; i += 4)
      for (int j = 0; j < 4; ++j)
        sum[j] += double(bf16ToFloat(xr[i + j])) * bf16ToFloat(wr[i + j]);
    double bias = p_.bias ? bf16ToFloat(biasPool_[e * kShift + c]) : 0.0;
    return (sum[0] + sum[1]) + (sum[2] + sum[3]) + bias;
  }

  // All columns of narrow outputs; else ~256 at an odd step (every fragment
  // position, every n-tile) and the last one.
  std::vector<int64_t> checkedColumns() const {
    std::vector<int64_t> cols;
    int64_t step = p_.n <= 512 ? 1 : (p_.n / 256) | 1;
    for (int64_t c = 0; c < p_.n; c += step)
      cols.push_back(c);
    if (cols.back() != p_.n - 1)
      cols.push_back(p_.n - 1);
    return cols;
  }

  // (row, expert): every row when the reference is cheap; else each expert's
  // first and last row, thinned to the budget (one-row experts always kept).
  std::vector<std::pair<int64_t, int>> checkedRows(size_t cols) const {
    double perRow = double(cols) * p_.k;
    std::vector<std::pair<int64_t, int>> rows;
    bool all = rows_ * perRow <= kCheckMacs;
    for (int e = 0; e < experts_; ++e)
      for (int64_t r = offsets_[e]; r < offsets_[e + 1]; ++r)
        if (all || r == offsets_[e] || r == offsets_[e + 1] - 1)
          rows.emplace_back(r, e);
    size_t step = static_cast<size_t>(
        std::ceil(double(rows.size()) * perRow / kCheckMacs));
    if (step <= 1)
      return rows;
    std::vector<std::pair<int64_t, int>> thinned;
    for (size_t i = 0; i < rows.size(); ++i)
      if (i % step == 0 || p_.counts[rows[i].second] == 1)
        thinned.push_back(rows[i]);
    return thinned;
  }

  Problem p_;
  int experts_ = 0;
  int64_t rows_ = 0;
  std::vector<int32_t> offsets_;
  std::vector<uint16_t> x_, wPool_, biasPool_;
  DeviceBuffer weightParts_[2], biasParts_[2];
};

void expectCorrect(Problem p) {
  GroupedProblem problem(std::move(p));
  problem.run();
  problem.expectMatches();
}

TEST(GroupedGemm, TinyShapes) {
  MOE_REQUIRE_CUDA_DEVICE();
  expectCorrect({"n32 k16", {5, 0, 1, 9}, 32, 16, false, -1, 0, 11});
  expectCorrect(
      {"n64 k32 bias", {3, 7, 0, 2, 11, 1, 0, 4}, 64, 32, true, -1, 0, 12});
  expectCorrect({"n48 k24 bias", {17, 1, 0, 40}, 48, 24, true, -1, 0, 13});
  expectCorrect({"odd n33 k8", {2, 9, 1, 0, 6}, 33, 8, true, -1, 0, 14});
  expectCorrect({"one expert", {23}, 40, 56, false, -1, 0, 15});
}

// Mean rows per expert of 10, 25, 50 and 150 pick each tile height; n and k
// leave tails (n = 200, k = 72).
TEST(GroupedGemm, EveryTileHeight) {
  MOE_REQUIRE_CUDA_DEVICE();
  for (int mean : {10, 25, 50, 150}) {
    unsigned seed = 20 + mean;
    expectCorrect({"mean " + std::to_string(mean),
                   unevenCounts(6, 6 * mean, seed), 200, 72, mean % 20 == 10,
                   -1, 0, seed});
  }
}

TEST(GroupedGemm, LargeGroup) {
  MOE_REQUIRE_CUDA_DEVICE();
  expectCorrect({"600 rows", {600, 0, 37, 129}, 320, 256, true, -1, 0, 31});
}

TEST(GroupedGemm, ResidentStreamedSplit) {
  MOE_REQUIRE_CUDA_DEVICE();
  for (int resident : {0, 3, 8}) {
    unsigned seed = 40 + resident;
    expectCorrect({"resident " + std::to_string(resident),
                   unevenCounts(8, 160, seed), 160, 96, true, resident, 24,
                   seed});
  }
}

TEST(GroupedGemm, Qwen3DecodeShapes) {
  MOE_REQUIRE_CUDA_DEVICE();
  std::vector<int32_t> counts = unevenCounts(128, 362 * 8, 51);
  expectCorrect({"qwen3 gate|up", counts, 1536, 2048, false, 64, 0, 52});
  expectCorrect({"qwen3 down", counts, 2048, 768, false, -1, 0, 53});
}

TEST(GroupedGemm, OtherModelShapes) {
  MOE_REQUIRE_CUDA_DEVICE();
  expectCorrect({"mixtral down", unevenCounts(8, 1024 * 2, 61), 4096, 14336,
                 false, -1, 0, 62});
  expectCorrect({"deepseek-v2-lite gate|up", unevenCounts(64, 362 * 6, 63),
                 2816, 2048, false, -1, 0, 64});
  expectCorrect({"gpt-oss down bias", unevenCounts(32, 362 * 4, 65), 2880, 2880,
                 true, 20, 0, 66});
}

// A problem's weights quantized (runtime/model/WeightFormat.h: fp8 or
// mxfp4), each expert's [n, k] block as `parts` matrices of n / parts rows
// and one block of codes and scales, the experts split between two
// allocations as the problem splits the bf16 ones; and the same widened to
// bf16 by widenExperts.
struct QuantizedWeights {
  DeviceBuffer blocks[2], widened;
  gpu::QuantizedExpertMatrix matrix;

  QuantizedWeights(const GroupedProblem &problem, moe::model::WeightDtype dtype,
                   int64_t parts) {
    const gpu::GroupedGemmArgs &a = problem.args;
    int64_t partRows = a.n / parts;
    moe::model::QuantizedExpertLayout layout =
        moe::model::quantizedExpertLayout(dtype, parts, partRows, a.k);
    std::vector<uint8_t> host(size_t(a.experts * layout.bytes));
    std::vector<float> values(size_t(a.n * a.k));
    for (int e = 0; e < a.experts; ++e) {
      const uint16_t *block = problem.weightBlock(e);
      for (size_t i = 0; i < values.size(); ++i)
        values[i] = bf16ToFloat(block[i]);
      moe::model::quantizeExpert(dtype, layout, values.data(), parts, partRows,
                                 a.k, host.data() + e * layout.bytes);
    }
    int64_t resident = problem.residentExperts();
    int64_t perPart[2] = {resident, a.experts - resident};
    for (int i = 0; i < 2; ++i)
      if (perPart[i] > 0) {
        blocks[i] = DeviceBuffer(size_t(perPart[i] * layout.bytes));
        blocks[i].upload(host.data() + (i == 0 ? 0 : resident * layout.bytes),
                         size_t(perPart[i] * layout.bytes));
      }
    matrix.format = dtype == moe::model::WeightDtype::fp8
                        ? gpu::ExpertFormat::fp8
                        : gpu::ExpertFormat::mxfp4;
    matrix.resident = blocks[0].as<uint8_t>();
    matrix.streamed = blocks[1].as<uint8_t>();
    matrix.residentExperts = resident;
    matrix.parts = parts;
    matrix.partRows = partRows;
    matrix.cols = a.k;
    matrix.scaleOffset = layout.scaleOffset;
    matrix.stride = layout.bytes;
    widened = DeviceBuffer(size_t(a.experts * a.n * a.k * 2));
    check(
        gpu::widenExperts(matrix, a.experts, widened.as<gpu::bf16>(), nullptr),
        "widenExperts");
  }
};

// The grouped kernel reading codes, widening each tile in shared memory,
// equals the bf16 kernel over the weights widened beforehand, bit for bit.
void expectQuantizedEqualsWidened(Problem p, moe::model::WeightDtype dtype,
                                  int64_t parts) {
  GroupedProblem problem(std::move(p));
  QuantizedWeights quantized(problem, dtype, parts);
  gpu::GroupedGemmArgs bf16Args = problem.args;
  bf16Args.weight = {quantized.widened.as<gpu::bf16>(), nullptr,
                     bf16Args.experts, bf16Args.n * bf16Args.k};
  problem.args = bf16Args;
  problem.run();
  std::vector<uint16_t> want = problem.y.downloadBf16();
  problem.args.weight = {};
  problem.args.quantizedWeight = quantized.matrix;
  problem.run();
  std::vector<uint16_t> got = problem.y.downloadBf16();
  ASSERT_EQ(got.size(), want.size());
  int64_t differing = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && differing++ == 0)
      ADD_FAILURE() << "row " << i / problem.args.n << " column "
                    << i % problem.args.n << ": " << bf16ToFloat(got[i])
                    << " against " << bf16ToFloat(want[i]);
  EXPECT_EQ(differing, 0) << "of " << got.size() << " outputs";
}

// Every tile height, two parts (gate|up) of 200 rows (partial fp8 scale
// blocks), k = 288 (a partial k-tile and, for fp8, a partial scale block),
// a bias, experts split between two allocations; then decode shapes of
// real models.
TEST(GroupedGemm, QuantizedWeightsEqualTheWidenedBf16Gemm) {
  MOE_REQUIRE_CUDA_DEVICE();
  using moe::model::WeightDtype;
  for (WeightDtype dtype : {WeightDtype::fp8, WeightDtype::mxfp4}) {
    std::string name(moe::model::weightDtypeName(dtype));
    SCOPED_TRACE(name);
    for (int mean : {10, 25, 50, 150}) {
      unsigned seed = 90 + mean;
      SCOPED_TRACE(mean);
      expectQuantizedEqualsWidened({name + " mean " + std::to_string(mean),
                                    unevenCounts(6, 6 * mean, seed), 400, 288,
                                    true, 2, 0, seed},
                                   dtype, 2);
    }
    expectQuantizedEqualsWidened({name + " qwen3 gate|up",
                                  unevenCounts(128, 362 * 8, 95), 1536, 2048,
                                  false, 64, 0, 96},
                                 dtype, 2);
    expectQuantizedEqualsWidened({name + " mixtral down",
                                  unevenCounts(8, 512 * 2, 97), 4096, 14336,
                                  false, 3, 0, 98},
                                 dtype, 1);
    expectQuantizedEqualsWidened({name + " gpt-oss-20b gate|up",
                                  unevenCounts(32, 256 * 4, 99), 5760, 2880,
                                  true, 20, 0, 100},
                                 dtype, 1);
  }
}

TEST(GroupedGemm, RejectsUnsupportedArguments) {
  MOE_REQUIRE_CUDA_DEVICE();
  GroupedProblem problem({"arguments", {3, 5}, 32, 16, false, -1, 0, 71});
  gpu::GroupedGemmArgs a = problem.args;
  a.k = 12;
  EXPECT_EQ(gpu::groupedGemm(a, nullptr), cudaErrorInvalidValue);
  a = problem.args;
  a.x = problem.x.as<gpu::bf16>() + 1;
  EXPECT_EQ(gpu::groupedGemm(a, nullptr), cudaErrorInvalidValue);
  a = problem.args;
  a.weight.stride += 4;
  EXPECT_EQ(gpu::groupedGemm(a, nullptr), cudaErrorInvalidValue);
  a = problem.args;
  a.experts = 1025;
  EXPECT_EQ(gpu::groupedGemm(a, nullptr), cudaErrorInvalidValue);
  a = problem.args;
  a.rows = 0;
  EXPECT_EQ(gpu::groupedGemm(a, nullptr), cudaSuccess);
  a = problem.args;
  a.n = 0;
  EXPECT_EQ(gpu::groupedGemm(a, nullptr), cudaSuccess);
}

// Prints (asserts nothing) the time per launch and the weight-read bandwidth
// of the Qwen3-30B-A3B decode expert GEMMs (H100 HBM3: 3350 GB/s).
// Prints (asserts nothing) the time per launch of decode shapes (bound by
// reading the weights: GB/s) and prefill shapes (bound by the tensor cores:
// TFLOP/s), for reading off the GPU log.
TEST(GroupedGemm, Timing) {
  MOE_REQUIRE_CUDA_DEVICE();
  struct Shape {
    const char *name;
    int experts, rows;
    int64_t n, k;
  };
  for (Shape s : {Shape{"qwen3 decode gate|up", 128, 362 * 8, 1536, 2048},
                  Shape{"qwen3 decode down", 128, 362 * 8, 2048, 768},
                  Shape{"qwen3 prefill gate|up", 128, 6000 * 8, 1536, 2048},
                  Shape{"mixtral prefill down", 8, 2000 * 2, 4096, 14336}}) {
    std::vector<int32_t> counts = unevenCounts(s.experts, s.rows, 81);
    GroupedProblem problem(
        {std::string("timing ") + s.name, counts, s.n, s.k, false, -1, 0, 82});
    for (int i = 0; i < 3; ++i)
      check(gpu::groupedGemm(problem.args, nullptr), "warm-up");
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    constexpr int kRepeats = 20;
    check(cudaEventRecord(start, nullptr), "cudaEventRecord");
    for (int i = 0; i < kRepeats; ++i)
      check(gpu::groupedGemm(problem.args, nullptr), "groupedGemm");
    check(cudaEventRecord(stop, nullptr), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    double seconds = ms * 1e-3 / kRepeats;
    double gbps = problem.usedWeightBytes() / seconds * 1e-9;
    double tflops = 2.0 * s.rows * s.n * s.k / seconds * 1e-12;
    std::printf("%s: rows %d, experts %d, n %lld, k %lld: %.1f us/launch, "
                "weights %.1f MB at %.0f GB/s, %.0f TFLOP/s\n",
                s.name, s.rows, s.experts, static_cast<long long>(s.n),
                static_cast<long long>(s.k), seconds * 1e6,
                problem.usedWeightBytes() * 1e-6, gbps, tflops);
  }
}

} // namespace
