// The CUDA kernels against the CPU backend's reference kernels (or a plain
// loop where the CPU has no separate function), on fresh random inputs of
// several shapes. Every output buffer is poisoned (all bits set: NaN or −1)
// before the launch, so an element left unwritten fails the comparison.
#include "runtime/backends/cpu/Kernels.h"
#include "runtime/backends/cuda/kernels/Kernels.h"
#include "runtime/backends/cuda/kernels/QuantizedExperts.h"
#include "runtime/model/ResolvedModel.h"
#include "runtime/model/Rope.h"
#include "runtime/model/WeightFormat.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace {

namespace gpu = moe::cuda::kernels;
namespace cpu = moe::cpu;
namespace model = moe::model;
using gpu::bf16;

void check(cudaError_t code, const char *what) {
  if (code != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " +
                             cudaGetErrorString(code));
}

// A launcher's own code, then the last error, then faults of the kernel.
#define LAUNCH(expr)                                                           \
  do {                                                                         \
    check((expr), #expr);                                                      \
    check(cudaGetLastError(), "last error after " #expr);                      \
    check(cudaDeviceSynchronize(), "sync after " #expr);                       \
  } while (false)

#define REQUIRE_DEVICE()                                                       \
  do {                                                                         \
    int count_ = 0;                                                            \
    cudaError_t code_ = cudaGetDeviceCount(&count_);                           \
    if (code_ != cudaSuccess || count_ == 0)                                   \
      GTEST_SKIP() << "needs a CUDA device ("                                  \
                   << (code_ != cudaSuccess ? cudaGetErrorString(code_)        \
                                            : "no device found")               \
                   << ")";                                                     \
  } while (false)

template <typename T> class Device {
public:
  explicit Device(size_t count) : count_(count) {
    check(cudaMalloc(&data_, std::max<size_t>(count, 1) * sizeof(T)),
          "cudaMalloc");
    poison();
  }
  explicit Device(const std::vector<T> &host) : Device(host.size()) {
    check(cudaMemcpy(data_, host.data(), count_ * sizeof(T),
                     cudaMemcpyHostToDevice),
          "cudaMemcpy H2D");
  }
  ~Device() { cudaFree(data_); }
  Device(const Device &) = delete;
  Device &operator=(const Device &) = delete;

  T *get() const { return data_; }
  bf16 *bf() const { return reinterpret_cast<bf16 *>(data_); }
  void poison() {
    check(cudaMemset(data_, 0xFF, count_ * sizeof(T)), "cudaMemset");
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    check(cudaMemcpy(host.data(), data_, count_ * sizeof(T),
                     cudaMemcpyDeviceToHost),
          "cudaMemcpy D2H");
    return host;
  }

private:
  T *data_ = nullptr;
  size_t count_;
};

uint16_t toBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u); // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

float fromBf16(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

std::vector<float> fromBf16(const std::vector<uint16_t> &bits) {
  std::vector<float> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i)
    out[i] = fromBf16(bits[i]);
  return out;
}

std::mt19937 freshRng() {
  unsigned seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  return std::mt19937(seed);
}

std::vector<uint16_t> randomBf16(size_t count, std::mt19937 &rng, float low,
                                 float high) {
  std::uniform_real_distribution<float> dist(low, high);
  std::vector<uint16_t> out(count);
  for (auto &v : out)
    v = toBf16(dist(rng));
  return out;
}

// ‖got − ref‖ / ‖ref‖; NaN (failing every bound) when got has a NaN.
double relativeL2(const std::vector<float> &got,
                  const std::vector<float> &ref) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double d = static_cast<double>(got[i]) - ref[i];
    diff += d * d;
    norm += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(diff / norm);
}

constexpr double kBf16Tolerance = 1e-2;

//===----------------------------------------------------------------------===//
// RMSNorm
//===----------------------------------------------------------------------===//

TEST(Kernels, RmsNorm) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  struct Shape {
    int64_t rows, width;
  };
  for (Shape s : {Shape{1, 64}, Shape{3, 2048}, Shape{7, 7168}, Shape{5, 1001},
                  Shape{2, 6}, Shape{4, 6144}})
    for (bool residual : {false, true})
      for (bool afterCast : {true, false}) {
        SCOPED_TRACE(testing::Message()
                     << "rows " << s.rows << " width " << s.width
                     << " residual " << residual << " afterCast " << afterCast);
        size_t n = s.rows * s.width;
        auto x = randomBf16(n, rng, -2, 2), r = randomBf16(n, rng, -2, 2);
        auto w = randomBf16(s.width, rng, 0.5f, 1.5f);
        Device<uint16_t> dx(x), dr(r), dw(w), dout(n);
        gpu::RmsNormArgs args;
        args.x = dx.bf();
        args.weight = dw.bf();
        args.out = dout.bf();
        args.residual = residual ? dr.bf() : nullptr;
        args.rows = s.rows;
        args.width = s.width;
        args.eps = 1e-5f;
        args.weightAfterCast = afterCast;
        LAUNCH(gpu::rmsNorm(args, nullptr));

        std::vector<uint16_t> sum(x);
        if (residual)
          for (size_t i = 0; i < n; ++i)
            sum[i] = toBf16(fromBf16(x[i]) + fromBf16(r[i]));
        std::vector<float> in = fromBf16(sum), wf = fromBf16(w), ref(n);
        for (int64_t row = 0; row < s.rows; ++row)
          cpu::rmsNorm(in.data() + row * s.width, wf.data(), s.width, 1e-5,
                       ref.data() + row * s.width);
        EXPECT_LE(relativeL2(fromBf16(dout.download()), ref), kBf16Tolerance);
        if (residual) {
          EXPECT_EQ(dr.download(), sum) << "new residual ≠ bf16(x + residual)";
        }
      }
}

//===----------------------------------------------------------------------===//
// RoPE and QK norm
//===----------------------------------------------------------------------===//

model::RopeParams ropeParams(moe::plan::RopeStyle style, double theta,
                             int64_t rotaryDim) {
  model::RopeParams p;
  p.style = style;
  p.theta = theta;
  p.rotaryDim = rotaryDim;
  return p;
}

model::RopeParams withYarn(model::RopeParams p, double factor, int64_t original,
                           bool truncate, double attentionFactor) {
  p.yarn = true;
  p.factor = factor;
  p.originalMaxPosition = original;
  p.truncate = truncate;
  p.attentionFactor = attentionFactor;
  return p;
}

// The tables the CUDA backend uploads equal cpu::RopeTable's: rotating a
// unit vector e_i yields exactly (cos_i, sin_i) in the NeoX pairing.
TEST(Kernels, RopeTableMatchesCpu) {
  using moe::plan::RopeStyle;
  for (const model::RopeParams &p :
       {ropeParams(RopeStyle::neox, 1e6, 128),
        withYarn(ropeParams(RopeStyle::neox, 150000, 64), 32, 4096, false,
                 1.3466),
        withYarn(ropeParams(RopeStyle::neox, 10000, 64), 40, 4096, true,
                 1.0)}) {
    constexpr int64_t kPositions = 300;
    int64_t half = p.rotaryDim / 2;
    model::RopeTables t = model::ropeTables(p, kPositions);
    cpu::RopeTable reference(p, kPositions);
    int64_t mismatches = 0;
    for (int64_t pos = 0; pos < kPositions; ++pos)
      for (int64_t i = 0; i < half; ++i) {
        std::vector<float> v(p.rotaryDim, 0.0f);
        v[i] = 1.0f;
        reference.apply(v.data(), pos);
        mismatches += v[i] != t.cos[pos * half + i] ||
                      v[i + half] != t.sin[pos * half + i];
      }
    EXPECT_EQ(mismatches, 0) << "theta " << p.theta;
  }
}

TEST(Kernels, RopeAndQkNorm) {
  REQUIRE_DEVICE();
  using moe::plan::RopeStyle;
  std::mt19937 rng = freshRng();
  struct Case {
    const char *name;
    model::RopeParams p;
    int heads, kvHeads, headDim;
    int64_t rows;
    bool qkNorm;
  };
  const Case cases[] = {
      {"neox", ropeParams(RopeStyle::neox, 1e6, 128), 32, 4, 128, 5, false},
      {"neox rows=1", ropeParams(RopeStyle::neox, 10000, 64), 3, 1, 64, 1,
       false},
      {"interleaved yarn (DeepSeek)",
       withYarn(ropeParams(RopeStyle::interleaved, 10000, 64), 40, 4096, true,
                1.0),
       16, 1, 64, 7, false},
      {"neox yarn untruncated (GPT-OSS)",
       withYarn(ropeParams(RopeStyle::neox, 150000, 64), 32, 4096, false,
                1.3466),
       8, 2, 64, 9, false},
      {"partial rotary (MiniMax)", ropeParams(RopeStyle::neox, 1e7, 64), 6, 2,
       128, 3, false},
      {"qk norm (Qwen3)", ropeParams(RopeStyle::neox, 1e6, 128), 4, 2, 128, 6,
       true},
      {"qk norm, partial interleaved, odd head",
       ropeParams(RopeStyle::interleaved, 10000, 40), 5, 1, 90, 3, true},
  };
  constexpr int64_t kPositions = 8192;
  constexpr float kEps = 1e-6f;
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    model::RopeTables t = model::ropeTables(c.p, kPositions);
    cpu::RopeTable reference(c.p, kPositions);
    size_t nq = c.rows * c.heads * c.headDim,
           nk = c.rows * c.kvHeads * c.headDim;
    auto q = randomBf16(nq, rng, -2, 2), k = randomBf16(nk, rng, -2, 2);
    auto qn = randomBf16(c.headDim, rng, 0.5f, 1.5f),
         kn = randomBf16(c.headDim, rng, 0.5f, 1.5f);
    std::uniform_int_distribution<int32_t> positionDist(0, kPositions - 1);
    std::vector<int32_t> positions(c.rows);
    for (auto &p : positions)
      p = positionDist(rng);
    Device<uint16_t> dq(q), dk(k), dqn(qn), dkn(kn);
    Device<int32_t> dpos(positions);
    Device<float> dcos(t.cos), dsin(t.sin);
    gpu::RopeArgs args;
    args.q = dq.bf();
    args.k = dk.bf();
    args.rows = c.rows;
    args.heads = c.heads;
    args.kvHeads = c.kvHeads;
    args.headDim = c.headDim;
    args.rotaryDim = static_cast<int>(c.p.rotaryDim);
    args.style = c.p.style == RopeStyle::neox ? gpu::RopeStyle::neox
                                              : gpu::RopeStyle::interleaved;
    args.positions = dpos.get();
    args.cos = dcos.get();
    args.sin = dsin.get();
    args.qNorm = c.qkNorm ? dqn.bf() : nullptr;
    args.kNorm = c.qkNorm ? dkn.bf() : nullptr;
    args.normEps = kEps;
    LAUNCH(gpu::applyRope(args, nullptr));

    auto expected = [&](const std::vector<uint16_t> &in,
                        const std::vector<uint16_t> &norm, int heads) {
      std::vector<float> x = fromBf16(in), w = fromBf16(norm);
      for (int64_t r = 0; r < c.rows; ++r)
        for (int h = 0; h < heads; ++h) {
          float *v = x.data() + (r * heads + h) * c.headDim;
          if (c.qkNorm)
            cpu::rmsNorm(v, w.data(), c.headDim, kEps, v);
          reference.apply(v, positions[r]);
        }
      return x;
    };
    EXPECT_LE(relativeL2(fromBf16(dq.download()), expected(q, qn, c.heads)),
              kBf16Tolerance);
    EXPECT_LE(relativeL2(fromBf16(dk.download()), expected(k, kn, c.kvHeads)),
              kBf16Tolerance);
  }
}

TEST(Kernels, HeadRmsNorm) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  for (auto [vectors, headDim] :
       {std::pair<int64_t, int>{1, 128}, {37, 64}, {10, 100}, {64, 256}}) {
    SCOPED_TRACE(testing::Message() << vectors << " × " << headDim);
    auto x = randomBf16(vectors * headDim, rng, -3, 3);
    auto w = randomBf16(headDim, rng, 0.5f, 1.5f);
    Device<uint16_t> dx(x), dw(w);
    LAUNCH(
        gpu::headRmsNorm(dx.bf(), dw.bf(), vectors, headDim, 1e-6f, nullptr));
    std::vector<float> ref = fromBf16(x), wf = fromBf16(w);
    for (int64_t v = 0; v < vectors; ++v)
      cpu::rmsNorm(ref.data() + v * headDim, wf.data(), headDim, 1e-6,
                   ref.data() + v * headDim);
    EXPECT_LE(relativeL2(fromBf16(dx.download()), ref), kBf16Tolerance);
  }
}

//===----------------------------------------------------------------------===//
// Router
//===----------------------------------------------------------------------===//

struct RouterCase {
  const char *name;
  int experts, topK;
  moe::plan::RouterScoring scoring;
  moe::plan::RouterSelection selection;
  int groups, keptGroups;
  bool normalize;
  double scaling;
  bool bias;
};

// Logits whose selection scores are well apart: a random permutation of
// evenly spaced levels (no near-ties, so indices must agree exactly), with
// distinct group scores for the grouped selections.
struct RouterInputs {
  std::vector<float> logits, bias;
};

RouterInputs routerInputs(const RouterCase &c, int64_t rows,
                          std::mt19937 &rng) {
  RouterInputs in{std::vector<float>(rows * c.experts),
                  std::vector<float>(c.bias ? c.experts : 0)};
  std::uniform_real_distribution<float> biasDist(-0.05f, 0.05f);
  for (float &b : in.bias)
    b = biasDist(rng);
  int size = c.experts / c.groups;
  std::vector<int> level(c.experts);
  for (int64_t r = 0; r < rows; ++r) {
    for (;;) {
      std::iota(level.begin(), level.end(), 0);
      std::shuffle(level.begin(), level.end(), rng);
      if (c.selection != moe::plan::RouterSelection::noaux_tc || c.groups == 1)
        break;
      std::vector<int> sums;
      for (int g = 0; g < c.groups; ++g) {
        std::vector<int> members(level.begin() + g * size,
                                 level.begin() + (g + 1) * size);
        std::sort(members.rbegin(), members.rend());
        sums.push_back(members[0] + (size > 1 ? members[1] : 0));
      }
      std::sort(sums.begin(), sums.end());
      if (std::adjacent_find(sums.begin(), sums.end()) == sums.end())
        break;
    }
    for (int e = 0; e < c.experts; ++e) {
      float &z = in.logits[r * c.experts + e];
      if (c.scoring == moe::plan::RouterScoring::softmax) {
        z = 0.05f * level[e] - 3.0f;
      } else {
        // sigmoid(z) + bias lands on the level.
        float choice = 0.15f + 0.7f * level[e] / c.experts;
        float s = choice - (c.bias ? in.bias[e] : 0.0f);
        z = std::log(s / (1.0f - s));
      }
    }
  }
  return in;
}

TEST(Kernels, Router) {
  REQUIRE_DEVICE();
  using moe::plan::RouterScoring;
  using moe::plan::RouterSelection;
  std::mt19937 rng = freshRng();
  const RouterCase cases[] = {
      {"Mixtral", 8, 2, RouterScoring::softmax, RouterSelection::greedy, 1, 1,
       true, 1.0, false},
      {"Qwen2-MoE", 60, 4, RouterScoring::softmax, RouterSelection::greedy, 1,
       1, false, 1.0, false},
      {"Qwen3-MoE", 128, 8, RouterScoring::softmax, RouterSelection::greedy, 1,
       1, true, 1.0, false},
      {"odd experts", 37, 3, RouterScoring::softmax, RouterSelection::greedy, 1,
       1, false, 1.0, false},
      {"DeepSeek-V2", 160, 6, RouterScoring::softmax,
       RouterSelection::group_limited_greedy, 8, 3, false, 16.0, false},
      {"DeepSeek-V3", 256, 8, RouterScoring::sigmoid, RouterSelection::noaux_tc,
       8, 4, true, 2.5, true},
      {"noaux_tc small groups", 64, 6, RouterScoring::sigmoid,
       RouterSelection::noaux_tc, 4, 2, true, 1.5, true},
      {"noaux_tc one group (Kimi-like)", 96, 8, RouterScoring::sigmoid,
       RouterSelection::noaux_tc, 1, 1, true, 2.827, true},
      {"GPT-OSS", 32, 4, RouterScoring::softmax, RouterSelection::greedy, 1, 1,
       true, 1.0, false},
  };
  for (const RouterCase &c : cases)
    for (int64_t rows : {1, 5, 67}) {
      SCOPED_TRACE(testing::Message() << c.name << ", rows " << rows);
      RouterInputs in = routerInputs(c, rows, rng);
      Device<float> dlogits(in.logits), dbias(in.bias), dweights(rows * c.topK);
      Device<int32_t> dindices(rows * c.topK);
      gpu::RouterArgs args;
      args.logits = dlogits.get();
      args.correctionBias = c.bias ? dbias.get() : nullptr;
      args.weights = dweights.get();
      args.indices = dindices.get();
      args.rows = rows;
      args.experts = c.experts;
      args.topK = c.topK;
      args.scoring = static_cast<gpu::RouterScoring>(c.scoring);
      args.selection = static_cast<gpu::RouterSelection>(c.selection);
      args.groups = c.groups;
      args.keptGroups = c.keptGroups;
      args.normalize = c.normalize;
      args.scaling = static_cast<float>(c.scaling);
      LAUNCH(gpu::routeTopK(args, nullptr));

      moe::model::RouterSpec params{};
      params.experts = c.experts;
      params.topK = c.topK;
      params.scoring = c.scoring;
      params.selection = c.selection;
      params.groups = c.groups;
      params.keptGroups = c.keptGroups;
      params.normalize = c.normalize;
      params.scaling = c.scaling;
      std::vector<float> weights(rows * c.topK);
      std::vector<int32_t> indices(rows * c.topK);
      for (int64_t r = 0; r < rows; ++r)
        cpu::routeToken(params, in.logits.data() + r * c.experts,
                        c.bias ? in.bias.data() : nullptr,
                        weights.data() + r * c.topK,
                        indices.data() + r * c.topK);
      EXPECT_EQ(dindices.download(), indices);
      std::vector<float> got = dweights.download();
      for (size_t i = 0; i < weights.size(); ++i)
        EXPECT_NEAR(got[i], weights[i],
                    1e-5 * std::max(1.0f, std::abs(weights[i])))
            << "weight " << i;

      if (std::string(c.name) == "GPT-OSS") {
        // HF's form: softmax over the k selected raw logits.
        for (int64_t r = 0; r < rows; ++r) {
          const float *z = in.logits.data() + r * c.experts;
          float top = z[indices[r * c.topK]], sum = 0;
          for (int j = 0; j < c.topK; ++j)
            sum += std::exp(z[indices[r * c.topK + j]] - top);
          for (int j = 0; j < c.topK; ++j)
            EXPECT_NEAR(got[r * c.topK + j],
                        std::exp(z[indices[r * c.topK + j]] - top) / sum, 1e-5);
        }
      }
    }
}

TEST(Kernels, RouterRejectsUnsupportedShapes) {
  REQUIRE_DEVICE();
  Device<float> logits(300), weights(9);
  Device<int32_t> indices(9);
  gpu::RouterArgs args;
  args.logits = logits.get();
  args.weights = weights.get();
  args.indices = indices.get();
  args.rows = 1;
  args.experts = 300;
  args.topK = 8;
  EXPECT_EQ(gpu::routeTopK(args, nullptr), cudaErrorInvalidValue);
  args.experts = 64;
  args.topK = 9;
  EXPECT_EQ(gpu::routeTopK(args, nullptr), cudaErrorInvalidValue);
  args.topK = 4;
  args.groups = 3; // does not divide 64
  EXPECT_EQ(gpu::routeTopK(args, nullptr), cudaErrorInvalidValue);
}

// Router logits against a double-precision loop: fp32 throughout, each
// within a few fp32 roundings of its magnitude (Σ|x·w|); shapes of real
// routers at decode row counts (the warp kernel) and at prefill's (the
// tiled one: 16,384 and 8,257 rows), tiles filled partly (rows, experts and
// hidden not multiples of the kernel's), with and without a bias.
TEST(Kernels, RouterLogitsAreFp32Products) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  struct Shape {
    int64_t rows, hidden, experts;
    bool bias;
  };
  for (Shape c : {Shape{1, 4096, 8, false}, Shape{300, 2048, 64, false},
                  Shape{130, 7168, 256, true}, Shape{67, 100, 37, true},
                  Shape{2048, 2048, 128, false}, Shape{16384, 256, 128, false},
                  Shape{8257, 100, 250, true}}) {
    SCOPED_TRACE(testing::Message() << "rows " << c.rows << " hidden "
                                    << c.hidden << " experts " << c.experts);
    std::vector<float> x(size_t(c.rows * c.hidden)),
        w(size_t(c.experts * c.hidden)), bias(size_t(c.experts));
    for (auto *v : {&x, &w, &bias})
      for (float &f : *v)
        f = dist(rng);
    Device<float> dx(x), dw(w), dBias(bias), out(size_t(c.rows * c.experts));
    LAUNCH(gpu::routerLogits(dx.get(), dw.get(), c.bias ? dBias.get() : nullptr,
                             c.rows, c.hidden, c.experts, out.get(), nullptr));
    std::vector<float> got = out.download();
    double worst = 0;
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t e = 0; e < c.experts; ++e) {
        double dot = c.bias ? bias[e] : 0.0, magnitude = std::fabs(dot);
        for (int64_t k = 0; k < c.hidden; ++k) {
          double p = double(x[r * c.hidden + k]) * w[e * c.hidden + k];
          dot += p;
          magnitude += std::fabs(p);
        }
        worst = std::max(worst,
                         std::fabs(got[r * c.experts + e] - dot) / magnitude);
      }
    EXPECT_LE(worst, 1e-5);
  }
}

//===----------------------------------------------------------------------===//
// Gated activations
//===----------------------------------------------------------------------===//

TEST(Kernels, SiluMul) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  for (auto [rows, width] : {std::pair<int64_t, int64_t>{1, 768},
                             {5, 1408},
                             {3, 37},
                             {8, 2048},
                             {2, 3}}) {
    SCOPED_TRACE(testing::Message() << rows << " × " << width);
    auto gu = randomBf16(rows * 2 * width, rng, -4, 4);
    Device<uint16_t> dgu(gu), dout(rows * width);
    LAUNCH(gpu::siluMul(dgu.bf(), dout.bf(), rows, width, nullptr));
    std::vector<float> in = fromBf16(gu), ref(rows * width);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < width; ++i)
        ref[r * width + i] =
            cpu::silu(in[r * 2 * width + i]) * in[r * 2 * width + width + i];
    EXPECT_LE(relativeL2(fromBf16(dout.download()), ref), kBf16Tolerance);
  }
}

TEST(Kernels, SwigluClamped) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  constexpr float kLimit = 7.0f, kAlpha = 1.702f;
  for (auto [rows, width] : {std::pair<int64_t, int64_t>{1, 2880},
                             {4, 45},
                             {3, 6},
                             {2, 7},
                             {16, 512}}) {
    SCOPED_TRACE(testing::Message() << rows << " × " << width);
    // Wide enough that both clamps engage.
    auto gu = randomBf16(rows * 2 * width, rng, -10, 10);
    Device<uint16_t> dgu(gu), dout(rows * width);
    LAUNCH(gpu::swigluClamped(dgu.bf(), dout.bf(), rows, width, kLimit, kAlpha,
                              nullptr));
    std::vector<float> in = fromBf16(gu), ref(rows * width);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < width; ++i) {
        float g = std::min(in[r * 2 * width + 2 * i], kLimit);
        float u = std::clamp(in[r * 2 * width + 2 * i + 1], -kLimit, kLimit);
        ref[r * width + i] = (u + 1.0f) * (g * cpu::sigmoid(g * kAlpha));
      }
    EXPECT_LE(relativeL2(fromBf16(dout.download()), ref), kBf16Tolerance);
  }
}

//===----------------------------------------------------------------------===//
// Dispatch, gather, combine
//===----------------------------------------------------------------------===//

// Quantized experts (fp8, mxfp4) widened to bf16: every element equals the
// host's value of its code and scale (runtime/model/WeightFormat.h) rounded
// to bf16, for experts split between the resident and the streamed range,
// two parts (gate|up) whose rows are no multiple of fp8's block, and
// columns that are none either.
TEST(Kernels, WidenExpertsMatchesTheHostFormat) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  const int64_t experts = 3, resident = 1, parts = 2, partRows = 200,
                cols = 288;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (model::WeightDtype dtype :
       {model::WeightDtype::fp8, model::WeightDtype::mxfp4}) {
    SCOPED_TRACE(model::weightDtypeName(dtype));
    bool fp8 = dtype == model::WeightDtype::fp8;
    model::QuantizedExpertLayout layout =
        model::quantizedExpertLayout(dtype, parts, partRows, cols);
    std::vector<uint8_t> blocks(size_t(experts * layout.bytes));
    std::vector<float> values(size_t(parts * partRows * cols));
    for (int64_t e = 0; e < experts; ++e) {
      // Each (expert, part) at its own magnitude.
      for (size_t i = 0; i < values.size(); ++i)
        values[i] = normal(rng) *
                    std::ldexp(1.0f, int(e * parts) +
                                         int(i / size_t(partRows * cols)) - 2);
      model::quantizeExpert(dtype, layout, values.data(), parts, partRows, cols,
                            blocks.data() + e * layout.bytes);
    }
    int64_t split = resident * layout.bytes;
    Device<uint8_t> residentBlocks(
        std::vector<uint8_t>(blocks.begin(), blocks.begin() + split));
    Device<uint8_t> streamedBlocks(
        std::vector<uint8_t>(blocks.begin() + split, blocks.end()));
    Device<uint16_t> out(
        static_cast<size_t>(experts * parts * partRows * cols));
    gpu::QuantizedExpertMatrix weight;
    weight.format = fp8 ? gpu::ExpertFormat::fp8 : gpu::ExpertFormat::mxfp4;
    weight.resident = residentBlocks.get();
    weight.streamed = streamedBlocks.get();
    weight.residentExperts = resident;
    weight.parts = parts;
    weight.partRows = partRows;
    weight.cols = cols;
    weight.scaleOffset = layout.scaleOffset;
    weight.stride = layout.bytes;
    LAUNCH(gpu::widenExperts(weight, experts, out.bf(), nullptr));
    std::vector<uint16_t> got = out.download();
    for (int64_t e = 0; e < experts; ++e)
      for (int64_t part = 0; part < parts; ++part) {
        const uint8_t *block = blocks.data() + e * layout.bytes;
        const uint8_t *codes = block + part * layout.partCodeBytes;
        const uint8_t *scales =
            block + layout.scaleOffset + part * layout.partScaleBytes;
        for (int64_t r = 0; r < partRows; ++r)
          for (int64_t c = 0; c < cols; ++c) {
            float want =
                fp8 ? model::fp8MatrixValue(
                          codes, reinterpret_cast<const float *>(scales), cols,
                          r, c)
                    : model::mxfp4MatrixValue(codes, scales, cols, r, c);
            ASSERT_EQ(
                got[size_t(((e * parts + part) * partRows + r) * cols + c)],
                toBf16(want))
                << "expert " << e << " part " << part << " row " << r
                << " column " << c;
          }
      }
    // Rows no 16-byte load of codes (or no scale block) divides are
    // refused.
    weight.cols = fp8 ? 24 : 48;
    EXPECT_EQ(gpu::widenExperts(weight, experts, out.bf(), nullptr),
              cudaErrorInvalidValue);
  }
}

TEST(Kernels, DispatchGatherCombine) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  struct Shape {
    int64_t rows;
    int topK, experts;
  };
  for (Shape s : {Shape{1, 2, 8}, Shape{7, 6, 64}, Shape{300, 8, 256},
                  Shape{513, 4, 60}, Shape{33, 8, 384}, Shape{5, 1, 1}})
    for (int64_t width : {64, 13}) {
      SCOPED_TRACE(testing::Message()
                   << "rows " << s.rows << " k " << s.topK << " experts "
                   << s.experts << " width " << width);
      int64_t pairs = s.rows * s.topK;
      // Distinct experts per row, as a router picks them.
      std::vector<int32_t> indices(pairs), all(s.experts);
      for (int64_t r = 0; r < s.rows; ++r) {
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        std::copy_n(all.begin(), s.topK, indices.begin() + r * s.topK);
      }
      Device<int32_t> dindices(indices), dcounts(s.experts),
          doffsets(s.experts + 1), dslotToPair(pairs), dpairToSlot(pairs);
      gpu::DispatchArgs dispatch;
      dispatch.indices = dindices.get();
      dispatch.rows = s.rows;
      dispatch.topK = s.topK;
      dispatch.experts = s.experts;
      dispatch.counts = dcounts.get();
      dispatch.offsets = doffsets.get();
      dispatch.slotToPair = dslotToPair.get();
      dispatch.pairToSlot = dpairToSlot.get();
      LAUNCH(gpu::buildDispatch(dispatch, nullptr));

      // The stable counting sort the CPU backend's per-expert lists give.
      std::vector<int32_t> counts(s.experts, 0), offsets(s.experts + 1, 0),
          slotToPair, pairToSlot(pairs);
      for (int32_t e : indices)
        ++counts[e];
      std::partial_sum(counts.begin(), counts.end(), offsets.begin() + 1);
      for (int e = 0; e < s.experts; ++e)
        for (int64_t p = 0; p < pairs; ++p)
          if (indices[p] == e) {
            pairToSlot[p] = static_cast<int32_t>(slotToPair.size());
            slotToPair.push_back(static_cast<int32_t>(p));
          }
      EXPECT_EQ(dcounts.download(), counts);
      EXPECT_EQ(doffsets.download(), offsets);
      EXPECT_EQ(dslotToPair.download(), slotToPair);
      EXPECT_EQ(dpairToSlot.download(), pairToSlot);

      auto x = randomBf16(s.rows * width, rng, -1, 1);
      Device<uint16_t> dx(x), dgathered(pairs * width);
      LAUNCH(gpu::gatherRows(dx.bf(), dslotToPair.get(), pairs, s.topK, width,
                             dgathered.bf(), nullptr));
      std::vector<uint16_t> gathered(pairs * width);
      for (int64_t slot = 0; slot < pairs; ++slot)
        std::copy_n(x.begin() + (slotToPair[slot] / s.topK) * width, width,
                    gathered.begin() + slot * width);
      EXPECT_EQ(dgathered.download(), gathered);

      auto expertOut = randomBf16(pairs * width, rng, -1, 1);
      std::vector<float> weights(pairs);
      std::uniform_real_distribution<float> weightDist(0.01f, 1.0f);
      for (float &w : weights)
        w = weightDist(rng);
      Device<uint16_t> dexpertOut(expertOut);
      Device<float> dweights(weights), dout(s.rows * width);
      gpu::CombineArgs combine;
      combine.expertOut = dexpertOut.bf();
      combine.weights = dweights.get();
      combine.indices = dindices.get();
      combine.pairToSlot = dpairToSlot.get();
      combine.rows = s.rows;
      combine.topK = s.topK;
      combine.width = width;
      combine.out = dout.get();
      LAUNCH(gpu::combineExperts(combine, nullptr));
      // CpuBackend's combine: y += result · weight, experts in index order.
      std::vector<float> ref(s.rows * width, 0.0f);
      for (int64_t r = 0; r < s.rows; ++r) {
        std::vector<int64_t> order(s.topK);
        std::iota(order.begin(), order.end(), r * s.topK);
        std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
          return indices[a] < indices[b];
        });
        for (int64_t pick : order)
          for (int64_t i = 0; i < width; ++i)
            ref[r * width + i] +=
                fromBf16(expertOut[pairToSlot[pick] * width + i]) *
                weights[pick];
      }
      EXPECT_EQ(dout.download(), ref) << "combine is not bit-identical";
    }
}

//===----------------------------------------------------------------------===//
// Greedy argmax
//===----------------------------------------------------------------------===//

// Whole-row picks: the first maximum, or kArgmaxNotFinite.
std::vector<int32_t> argmaxReference(const std::vector<float> &values,
                                     int64_t rows, int64_t vocab) {
  std::vector<int32_t> ref(rows);
  for (int64_t r = 0; r < rows; ++r) {
    auto row = values.begin() + r * vocab;
    bool finite =
        std::all_of(row, row + vocab, [](float v) { return std::isfinite(v); });
    ref[r] =
        finite ? static_cast<int32_t>(std::max_element(row, row + vocab) - row)
               : gpu::kArgmaxNotFinite;
  }
  return ref;
}

template <typename T>
void checkArgmax(const std::vector<T> &logits, int64_t rows, int64_t vocab,
                 const std::vector<float> &values) {
  Device<T> dlogits(logits);
  Device<int32_t> dout(rows);
  if constexpr (std::is_same_v<T, float>)
    LAUNCH(gpu::argmaxRows(dlogits.get(), rows, vocab, dout.get(), nullptr));
  else
    LAUNCH(gpu::argmaxRows(dlogits.bf(), rows, vocab, dout.get(), nullptr));
  EXPECT_EQ(dout.download(), argmaxReference(values, rows, vocab));
}

// fp32 rows, then the same rows rounded to bf16, where random rows tie
// often: the first maximum must still win.
void checkArgmaxInBothDtypes(const std::vector<float> &values, int64_t rows,
                             int64_t vocab) {
  checkArgmax(values, rows, vocab, values);
  std::vector<uint16_t> bits(values.size());
  std::vector<float> rounded(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    bits[i] = toBf16(values[i]);
    rounded[i] = fromBf16(bits[i]);
  }
  checkArgmax(bits, rows, vocab, rounded);
}

// Pinned host memory read and written by the SMs, as the host attention's
// outputs are: every byte lands, none past the end, aligned or not.
TEST(Kernels, CopyOnSmsMovesPinnedHostBytes) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  constexpr size_t kCapacity = (size_t(1) << 20) + 64;
  uint8_t *pinned = nullptr;
  check(cudaHostAlloc(reinterpret_cast<void **>(&pinned), kCapacity,
                      cudaHostAllocDefault),
        "cudaHostAlloc");
  Device<uint8_t> device(kCapacity);
  for (size_t bytes : {size_t(0), size_t(1), size_t(16), size_t(17),
                       size_t(4099), size_t(1) << 20})
    for (size_t offset : {size_t(0), size_t(3), size_t(16)}) {
      SCOPED_TRACE(testing::Message() << bytes << " bytes at +" << offset);
      std::uniform_int_distribution<int> byte(0, 255);
      for (size_t i = 0; i < kCapacity; ++i)
        pinned[i] = uint8_t(byte(rng));
      device.poison();
      LAUNCH(gpu::copyOnSms(device.get() + offset, pinned + offset, bytes,
                            nullptr));
      std::vector<uint8_t> got = device.download();
      for (size_t i = 0; i < kCapacity; ++i) {
        bool copied = i >= offset && i < offset + bytes;
        ASSERT_EQ(got[i], copied ? pinned[i] : 0xFF) << "byte " << i;
      }
      // And back: the device's bytes into the pinned buffer.
      std::vector<uint8_t> before(pinned, pinned + kCapacity);
      std::vector<uint8_t> fresh(kCapacity);
      for (uint8_t &b : fresh)
        b = uint8_t(byte(rng));
      check(cudaMemcpy(device.get(), fresh.data(), kCapacity,
                       cudaMemcpyHostToDevice),
            "cudaMemcpy H2D");
      LAUNCH(gpu::copyOnSms(pinned + offset, device.get() + offset, bytes,
                            nullptr));
      for (size_t i = 0; i < kCapacity; ++i) {
        bool copied = i >= offset && i < offset + bytes;
        ASSERT_EQ(pinned[i], copied ? fresh[i] : before[i]) << "byte " << i;
      }
    }
  cudaFreeHost(pinned);
}

TEST(Kernels, ArgmaxFirstMaximum) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  for (int64_t rows : {1, 3, 17})
    for (int64_t vocab : {1, 1000, 32001, 151936})
      for (bool planted : {true, false}) {
        SCOPED_TRACE(testing::Message() << rows << " × " << vocab
                                        << (planted ? " planted ties" : ""));
        std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
        std::uniform_int_distribution<int64_t> column(0, vocab - 1);
        std::vector<float> values(rows * vocab);
        for (float &v : values)
          v = dist(rng);
        if (planted)
          for (int64_t r = 0; r < rows; ++r) {
            // Two equal maxima: the first must win.
            values[r * vocab + column(rng)] = 2.0f;
            values[r * vocab + column(rng)] = 2.0f;
          }
        checkArgmaxInBothDtypes(values, rows, vocab);
      }
}

// A row holding NaN or ±Inf anywhere (first, last, or beside a larger
// finite value) has no pick: kArgmaxNotFinite, the others theirs.
TEST(Kernels, ArgmaxReportsRowsThatAreNotFinite) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  constexpr int64_t kRows = 6, kVocab = 32001;
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(kRows * kVocab);
  for (float &v : values)
    v = dist(rng);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  values[0 * kVocab + 0] = nan;
  values[1 * kVocab + kVocab - 1] = inf;
  values[2 * kVocab + 77] = -inf;
  values[3 * kVocab + 5] = 2.0f; // row 3 stays finite
  values[4 * kVocab + 6] = 2.0f;
  values[4 * kVocab + 9000] = nan;
  checkArgmaxInBothDtypes(values, kRows, kVocab);
}

// The vocabulary a slice at a time, as the LM head picks greedily: the
// same picks as whole rows, with equal maxima in different slices (the
// earlier wins), a row whose maximum is in its last slice, and rows that
// are not finite in their first, a middle or their last slice.
TEST(Kernels, ArgmaxBySlicesEqualsWholeRows) {
  REQUIRE_DEVICE();
  std::mt19937 rng = freshRng();
  constexpr int64_t kRows = 7, kVocab = 1000;
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> values(kRows * kVocab);
  for (float &v : values)
    v = fromBf16(toBf16(dist(rng)));
  values[0 * kVocab + 10] = values[0 * kVocab + 900] = 2.0f; // tie across
  values[1 * kVocab + 999] = 2.0f;                           // last slice
  values[2 * kVocab + 3] = std::numeric_limits<float>::quiet_NaN();
  values[3 * kVocab + 500] = std::numeric_limits<float>::infinity();
  values[4 * kVocab + 999] = -std::numeric_limits<float>::infinity();
  values[5 * kVocab + 256] = values[5 * kVocab + 257] = 2.0f; // tie within
  std::vector<int32_t> want = argmaxReference(values, kRows, kVocab);
  for (int64_t slice : {int64_t{8}, int64_t{256}, int64_t{336}, kVocab}) {
    SCOPED_TRACE(testing::Message() << "slices of " << slice);
    Device<float> best(kRows);
    Device<int32_t> out(kRows);
    for (int64_t first = 0; first < kVocab; first += slice) {
      int64_t width = std::min(slice, kVocab - first);
      std::vector<uint16_t> bits(kRows * width);
      for (int64_t r = 0; r < kRows; ++r)
        for (int64_t c = 0; c < width; ++c)
          bits[r * width + c] = toBf16(values[r * kVocab + first + c]);
      Device<uint16_t> logits(bits);
      LAUNCH(gpu::argmaxRowsOfSlice(logits.bf(), kRows, width, first,
                                    best.get(), out.get(), nullptr));
    }
    EXPECT_EQ(out.download(), want);
  }
}

} // namespace
