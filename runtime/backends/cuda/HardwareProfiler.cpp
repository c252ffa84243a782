// Host side of the hardware profiler: device/host facts, copy rates,
// GEMM times (cuBLASLt and the grouped expert kernel) and decode-attention
// times, each the median of timed repeats.
//
// Method: CUDA events; warm-up calls first; every timed batch is preceded by a
// short spin kernel so the host can queue the whole batch and the batch runs
// back to back (GPU time, no launch gaps); batches of small calls are sized
// to last about a millisecond; median of >= 11 batches. Inputs are random
// (never zeros) and rotated over enough copies that the 50 MB L2 cannot hold
// them. Every CUDA and cuBLASLt return code is checked. Each GEMM point uses
// the fastest of cuBLASLt's (up to 8) heuristic candidates for that shape.
#include "runtime/backends/cuda/HardwareProfiler.h"

#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/GemmRunner.h"
#include "runtime/backends/cuda/ProfilerKernels.h"
#include "runtime/backends/cuda/kernels/GroupedGemm.h"
#include "runtime/backends/cuda/kernels/Kernels.h"
#include "runtime/backends/cuda/kernels/MlaAttention.h"
#include "runtime/host/HostProfiler.h"
#include "runtime/host/ReadBandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <utility>

#include <sched.h>

#include <cuda_runtime.h>
#include <fmt/ranges.h>

namespace moe::cuda {
namespace {

constexpr std::size_t kMiB = std::size_t(1) << 20;
constexpr std::size_t kGiB = std::size_t(1) << 30;
using bf16 = __nv_bfloat16;

// --- small owners -----------------------------------------------------------

class DeviceBuffer {
public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  ~DeviceBuffer() {
    if (ptr_)
      cudaFree(ptr_);
  }
  Status allocate(std::size_t bytes) {
    if (ptr_)
      cudaFree(ptr_);
    ptr_ = nullptr;
    cudaError_t code = cudaMalloc(&ptr_, std::max<std::size_t>(bytes, 256));
    if (code != cudaSuccess) {
      ptr_ = nullptr;
      return makeError("cudaMalloc of {} MiB: {}", bytes / kMiB,
                       cudaGetErrorString(code));
    }
    bytes_ = bytes;
    return Status::success();
  }
  template <typename T = void> T *as() const { return static_cast<T *>(ptr_); }
  std::size_t bytes() const { return bytes_; }

private:
  void *ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

class PinnedBuffer {
public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer &) = delete;
  PinnedBuffer &operator=(const PinnedBuffer &) = delete;
  ~PinnedBuffer() {
    if (ptr_)
      cudaFreeHost(ptr_);
  }
  Status allocate(std::size_t bytes) {
    cudaError_t code = cudaHostAlloc(&ptr_, bytes, cudaHostAllocDefault);
    if (code != cudaSuccess) {
      ptr_ = nullptr;
      return makeError("cudaHostAlloc of {} MiB: {}", bytes / kMiB,
                       cudaGetErrorString(code));
    }
    return Status::success();
  }
  void *get() const { return ptr_; }

private:
  void *ptr_ = nullptr;
};

struct EventPair {
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  EventPair() = default;
  EventPair(const EventPair &) = delete;
  EventPair &operator=(const EventPair &) = delete;
  ~EventPair() {
    if (start)
      cudaEventDestroy(start);
    if (stop)
      cudaEventDestroy(stop);
  }
  Status create() {
    MOE_CUDA_TRY(cudaEventCreate(&start));
    MOE_CUDA_TRY(cudaEventCreate(&stop));
    return Status::success();
  }
};

struct Context {
  cudaStream_t stream = nullptr;
  int smCount = 0;
  bool quick = false;
  std::function<void(std::string_view)> log;
  ~Context() {
    if (stream)
      cudaStreamDestroy(stream);
  }
  template <typename... Args>
  void print(fmt::format_string<Args...> format, Args &&...args) const {
    if (log)
      log(fmt::format(format, std::forward<Args>(args)...));
  }
};

Status fillRandom(const Context &ctx, bf16 *data, std::size_t count,
                  std::uint64_t seed, float scale = 1.0f) {
  MOE_CUDA_TRY(fillRandomBf16(data, count, seed, scale, ctx.stream));
  return Status::success();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// Median seconds per call of launch(i) (i counts calls, for rotating inputs).
// Calls are grouped into batches lasting about targetSeconds; each batch is
// timed with events after a spin kernel that covers the host's enqueueing.
Result<double> timeCalls(const Context &ctx,
                         const std::function<Status(std::int64_t)> &launch,
                         int repeats = 15, double targetSeconds = 1e-3) {
  EventPair ev;
  MOE_RETURN_IF_ERROR(ev.create());
  std::int64_t call = 0;
  for (int i = 0; i < 3; ++i)
    MOE_RETURN_IF_ERROR(launch(call++));
  MOE_CUDA_TRY(cudaStreamSynchronize(ctx.stream));

  MOE_CUDA_TRY(cudaEventRecord(ev.start, ctx.stream));
  for (int i = 0; i < 3; ++i)
    MOE_RETURN_IF_ERROR(launch(call++));
  MOE_CUDA_TRY(cudaEventRecord(ev.stop, ctx.stream));
  MOE_CUDA_TRY(cudaEventSynchronize(ev.stop));
  float ms = 0;
  MOE_CUDA_TRY(cudaEventElapsedTime(&ms, ev.start, ev.stop));
  double estimate = std::max(1e-3 * ms / 3, 1e-7);
  int perBatch = static_cast<int>(
      std::clamp(std::ceil(targetSeconds / estimate), 1.0, 200.0));

  std::vector<double> samples;
  for (int r = 0; r < repeats; ++r) {
    // Enough spin to cover ~10 us of host work per queued call.
    MOE_CUDA_TRY(spinFor(20000 + 10000ull * perBatch, ctx.stream));
    MOE_CUDA_TRY(cudaEventRecord(ev.start, ctx.stream));
    for (int i = 0; i < perBatch; ++i)
      MOE_RETURN_IF_ERROR(launch(call++));
    MOE_CUDA_TRY(cudaEventRecord(ev.stop, ctx.stream));
    MOE_CUDA_TRY(cudaEventSynchronize(ev.stop));
    MOE_CUDA_TRY(cudaEventElapsedTime(&ms, ev.start, ev.stop));
    samples.push_back(1e-3 * ms / perBatch);
  }
  return median(std::move(samples));
}

// --- bf16 on the host -------------------------------------------------------

float bf16ToFloat(std::uint16_t bits) {
  std::uint32_t w = static_cast<std::uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &w, sizeof f);
  return f;
}

Result<std::vector<float>> downloadBf16(const Context &ctx, const bf16 *data,
                                        std::size_t count) {
  std::vector<std::uint16_t> bits(count);
  MOE_CUDA_TRY(cudaMemcpyAsync(bits.data(), data, count * 2,
                               cudaMemcpyDeviceToHost, ctx.stream));
  MOE_CUDA_TRY(cudaStreamSynchronize(ctx.stream));
  std::vector<float> out(count);
  for (std::size_t i = 0; i < count; ++i)
    out[i] = bf16ToFloat(bits[i]);
  return out;
}

// ‖got − ref‖ / ‖ref‖; NaN when anything is NaN.
double relativeL2(const std::vector<float> &got,
                  const std::vector<double> &ref) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    double d = static_cast<double>(got[i]) - ref[i];
    diff += d * d;
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff) / std::sqrt(norm);
}

// --- GEMM check -------------------------------------------------------------

constexpr std::size_t kGemmWorkspaceBytes = 32 * kMiB;

Status checkGemm(const Context &ctx, GemmRunner &runner) {
  const std::int64_t m = 37, n = 200, k = 136;
  DeviceBuffer x, w, y;
  MOE_RETURN_IF_ERROR(x.allocate(m * k * 2));
  MOE_RETURN_IF_ERROR(w.allocate(n * k * 2));
  MOE_RETURN_IF_ERROR(y.allocate(m * n * 2));
  MOE_RETURN_IF_ERROR(fillRandom(ctx, x.as<bf16>(), m * k, 101));
  MOE_RETURN_IF_ERROR(fillRandom(ctx, w.as<bf16>(), n * k, 102));
  MOE_CUDA_TRY(cudaMemsetAsync(y.as(), 0xFF, m * n * 2, ctx.stream)); // NaN
  GemmArgs args;
  args.x = x.as<bf16>();
  args.w = w.as<bf16>();
  args.y = y.as<bf16>();
  args.m = m;
  args.n = n;
  args.k = k;
  MOE_RETURN_IF_ERROR(runner.run(args, ctx.stream));
  auto hx = downloadBf16(ctx, x.as<bf16>(), m * k);
  MOE_RETURN_IF_ERROR(hx);
  auto hw = downloadBf16(ctx, w.as<bf16>(), n * k);
  MOE_RETURN_IF_ERROR(hw);
  auto hy = downloadBf16(ctx, y.as<bf16>(), m * n);
  MOE_RETURN_IF_ERROR(hy);
  std::vector<double> ref(m * n);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::int64_t p = 0; p < k; ++p)
        s += double((*hx)[i * k + p]) * double((*hw)[j * k + p]);
      ref[i * n + j] = s;
    }
  double err = relativeL2(*hy, ref);
  ctx.print("check  gemm y=x·Wᵀ m={} n={} k={}: rel-L2 {:.2e}", m, n, k, err);
  if (!(err < 1e-2))
    return makeError("cuBLASLt GEMM check failed: rel-L2 {} (m={} n={} k={})",
                     err, m, n, k);
  return Status::success();
}

// --- decode attention check -------------------------------------------------

Status checkDecodeAttention(const Context &ctx, int heads, int kvHeads,
                            int headDim, int batch, int maxContext,
                            std::vector<int> lens, std::uint64_t seed) {
  const std::int64_t seqStride =
      static_cast<std::int64_t>(maxContext) * kvHeads * headDim;
  const std::size_t qCount = std::size_t(batch) * heads * headDim;
  const std::size_t kvCount = std::size_t(batch) * seqStride;
  DeviceBuffer q, k, v, out, positions, workspace;
  MOE_RETURN_IF_ERROR(q.allocate(qCount * 2));
  MOE_RETURN_IF_ERROR(k.allocate(kvCount * 2));
  MOE_RETURN_IF_ERROR(v.allocate(kvCount * 2));
  MOE_RETURN_IF_ERROR(out.allocate(qCount * 2));
  MOE_RETURN_IF_ERROR(fillRandom(ctx, q.as<bf16>(), qCount, seed, 3.0f));
  MOE_RETURN_IF_ERROR(fillRandom(ctx, k.as<bf16>(), kvCount, seed + 1));
  MOE_RETURN_IF_ERROR(fillRandom(ctx, v.as<bf16>(), kvCount, seed + 2));
  MOE_CUDA_TRY(cudaMemsetAsync(out.as(), 0xFF, qCount * 2, ctx.stream)); // NaN
  std::vector<std::int32_t> last(batch, maxContext - 1);
  for (std::size_t b = 0; b < lens.size(); ++b)
    last[b] = lens[b] - 1;
  MOE_RETURN_IF_ERROR(positions.allocate(last.size() * sizeof(std::int32_t)));
  MOE_CUDA_TRY(cudaMemcpyAsync(positions.as(), last.data(), last.size() * 4,
                               cudaMemcpyHostToDevice, ctx.stream));
  std::size_t wsBytes = kernels::attentionWorkspaceBytes(
      batch, heads, kvHeads, headDim, maxContext, ctx.smCount);
  MOE_RETURN_IF_ERROR(workspace.allocate(wsBytes));

  kernels::AttentionArgs args;
  args.q = q.as<bf16>();
  args.k = k.as<bf16>();
  args.v = v.as<bf16>();
  args.out = out.as<bf16>();
  args.positions = positions.as<std::int32_t>();
  args.rows = batch;
  args.heads = heads;
  args.kvHeads = kvHeads;
  args.headDim = headDim;
  args.maxSpan = maxContext;
  args.rowBytes = int64_t(kvHeads) * headDim * sizeof(bf16);
  args.seqStride = seqStride * int64_t(sizeof(bf16));
  args.scale = 1.0f / std::sqrt(static_cast<float>(headDim));
  args.workspace = workspace.as<float>();
  MOE_CUDA_TRY(kernels::attention(args, ctx.smCount, ctx.stream));
  MOE_CUDA_TRY(cudaStreamSynchronize(ctx.stream));

  auto hq = downloadBf16(ctx, q.as<bf16>(), qCount);
  MOE_RETURN_IF_ERROR(hq);
  auto hk = downloadBf16(ctx, k.as<bf16>(), kvCount);
  MOE_RETURN_IF_ERROR(hk);
  auto hv = downloadBf16(ctx, v.as<bf16>(), kvCount);
  MOE_RETURN_IF_ERROR(hv);
  auto ho = downloadBf16(ctx, out.as<bf16>(), qCount);
  MOE_RETURN_IF_ERROR(ho);

  const int group = heads / kvHeads;
  std::vector<double> ref(qCount, 0.0);
  std::vector<double> scores;
  for (int b = 0; b < batch; ++b) {
    int len = lens.empty() ? maxContext : lens[b];
    for (int h = 0; h < heads; ++h) {
      int kvh = h / group;
      const float *qv = hq->data() + (std::size_t(b) * heads + h) * headDim;
      scores.assign(len, 0.0);
      double mx = -INFINITY;
      for (int t = 0; t < len; ++t) {
        const float *kr = hk->data() + b * seqStride +
                          (std::int64_t(t) * kvHeads + kvh) * headDim;
        double s = 0;
        for (int d = 0; d < headDim; ++d)
          s += double(qv[d]) * double(kr[d]);
        scores[t] = s * args.scale;
        mx = std::max(mx, scores[t]);
      }
      double sum = 0;
      for (int t = 0; t < len; ++t)
        sum += (scores[t] = std::exp(scores[t] - mx));
      double *o = ref.data() + (std::size_t(b) * heads + h) * headDim;
      for (int t = 0; t < len; ++t) {
        const float *vr = hv->data() + b * seqStride +
                          (std::int64_t(t) * kvHeads + kvh) * headDim;
        for (int d = 0; d < headDim; ++d)
          o[d] += scores[t] / sum * double(vr[d]);
      }
    }
  }
  double err = relativeL2(*ho, ref);
  ctx.print("check  attention heads={} kv_heads={} head_dim={} batch={} "
            "context={}{}: rel-L2 {:.2e}",
            heads, kvHeads, headDim, batch, maxContext,
            lens.empty() ? "" : " (varied lengths)", err);
  if (!(err < 1e-2))
    return makeError("decode attention check failed: rel-L2 {} (heads={} "
                     "kv_heads={} head_dim={} batch={} context={})",
                     err, heads, kvHeads, headDim, batch, maxContext);
  return Status::success();
}

// --- measurements -----------------------------------------------------------

Status measureLinks(const Context &ctx, LinkRates &links) {
  const std::size_t maxBytes = ctx.quick ? 256 * kMiB : 1 * kGiB;
  PinnedBuffer host;
  MOE_RETURN_IF_ERROR(host.allocate(maxBytes));
  DeviceBuffer dev;
  MOE_RETURN_IF_ERROR(dev.allocate(2 * maxBytes));
  MOE_RETURN_IF_ERROR(fillRandom(ctx, dev.as<bf16>(), maxBytes, 7));
  MOE_CUDA_TRY(cudaMemcpyAsync(host.get(), dev.as(), maxBytes,
                               cudaMemcpyDeviceToHost, ctx.stream));
  MOE_CUDA_TRY(cudaStreamSynchronize(ctx.stream));
  char *devBytes = dev.as<char>();

  std::vector<std::size_t> sizes = {64 * kMiB, 256 * kMiB};
  if (!ctx.quick)
    sizes.push_back(1 * kGiB);
  for (std::size_t bytes : sizes) {
    auto h2d = timeCalls(
        ctx,
        [&](std::int64_t) -> Status {
          MOE_CUDA_TRY(cudaMemcpyAsync(devBytes, host.get(), bytes,
                                       cudaMemcpyHostToDevice, ctx.stream));
          return Status::success();
        },
        11, 0.0);
    MOE_RETURN_IF_ERROR(h2d);
    auto d2h = timeCalls(
        ctx,
        [&](std::int64_t) -> Status {
          MOE_CUDA_TRY(cudaMemcpyAsync(host.get(), devBytes, bytes,
                                       cudaMemcpyDeviceToHost, ctx.stream));
          return Status::success();
        },
        11, 0.0);
    MOE_RETURN_IF_ERROR(d2h);
    links.h2dPinned = bytes / *h2d;
    links.d2hPinned = bytes / *d2h;
    ctx.print("copy   pinned {:>5} MiB   H2D {:6.1f} GB/s   D2H {:6.1f} GB/s",
              bytes / kMiB, links.h2dPinned / 1e9, links.d2hPinned / 1e9);
  }

  // Pageable host memory: cudaMemcpy stages it through the driver's own
  // pinned buffers on the host, so time it with the host clock.
  const std::size_t pageable = ctx.quick ? 64 * kMiB : 256 * kMiB;
  std::unique_ptr<char[]> plain(new char[pageable]);
  std::memcpy(plain.get(), host.get(), pageable); // touch every page
  std::vector<double> samples;
  for (int r = 0; r < 12; ++r) {
    MOE_CUDA_TRY(cudaDeviceSynchronize());
    auto t0 = std::chrono::steady_clock::now();
    MOE_CUDA_TRY(
        cudaMemcpy(devBytes, plain.get(), pageable, cudaMemcpyHostToDevice));
    auto t1 = std::chrono::steady_clock::now();
    if (r > 0) // the first is a warm-up
      samples.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  links.h2dPageable = pageable / median(samples);
  ctx.print("copy   pageable {:>3} MiB H2D {:6.1f} GB/s", pageable / kMiB,
            links.h2dPageable / 1e9);

  std::vector<std::size_t> d2dSizes = {256 * kMiB};
  if (!ctx.quick)
    d2dSizes.push_back(1 * kGiB);
  for (std::size_t bytes : d2dSizes) {
    auto t = timeCalls(
        ctx,
        [&](std::int64_t) -> Status {
          MOE_CUDA_TRY(cudaMemcpyAsync(devBytes + maxBytes, devBytes, bytes,
                                       cudaMemcpyDeviceToDevice, ctx.stream));
          return Status::success();
        },
        11, 0.0);
    MOE_RETURN_IF_ERROR(t);
    links.hbm = 2.0 * bytes / *t;
    ctx.print("copy   device {:>5} MiB   D2D {:6.1f} GB/s (read + write)",
              bytes / kMiB, links.hbm / 1e9);
  }
  return Status::success();
}

Status measureGemm(const Context &ctx, GemmRunner &runner,
                   std::vector<GemmProfile> &out) {
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes;
  std::vector<std::int64_t> ms;
  if (ctx.quick) {
    shapes = {{14336, 4096}, {1408, 2048}};
    ms = {1, 16, 128, 512, 4096};
  } else {
    shapes = {{14336, 4096}, {4096, 14336}, {4096, 4096}, {1024, 4096},
              {1408, 2048},  {2048, 1408},  {768, 2048},  {2048, 768},
              {2048, 7168},  {7168, 2048},  {1536, 7168}, {4096, 2048}};
    ms = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};
  }
  const std::int64_t maxM = ms.back();
  for (const auto &shape : shapes) {
    const std::int64_t n = shape.first, k = shape.second;
    GemmProfile profile;
    profile.n = n;
    profile.k = k;
    const std::size_t wCount = std::size_t(n) * k;
    // Enough weight copies that rotating through them misses in L2.
    const std::int64_t wCopies = std::clamp<std::int64_t>(
        (256 * kMiB + wCount * 2 - 1) / (wCount * 2), 1, 64);
    DeviceBuffer w, x, y;
    MOE_RETURN_IF_ERROR(w.allocate(wCopies * wCount * 2));
    MOE_RETURN_IF_ERROR(x.allocate(std::size_t(maxM) * k * 2));
    MOE_RETURN_IF_ERROR(y.allocate(std::size_t(maxM) * n * 2));
    MOE_RETURN_IF_ERROR(
        fillRandom(ctx, w.as<bf16>(), wCopies * wCount, 1000 + n + k));
    MOE_RETURN_IF_ERROR(
        fillRandom(ctx, x.as<bf16>(), std::size_t(maxM) * k, 2000 + n + k));
    for (std::int64_t m : ms) {
      const std::int64_t ioCopies = std::clamp<std::int64_t>(maxM / m, 1, 64);
      auto argsFor = [&](std::int64_t i) {
        std::int64_t slot = i % ioCopies;
        GemmArgs args;
        args.x = x.as<bf16>() + slot * m * k;
        args.w = w.as<bf16>() + (i % wCopies) * wCount;
        args.y = y.as<bf16>() + slot * m * n;
        args.m = m;
        args.n = n;
        args.k = k;
        return args;
      };
      auto launch = [&](std::int64_t i) -> Status {
        return runner.run(argsFor(i), ctx.stream);
      };
      // The heuristic's first choice is sometimes several times slower than
      // its runners-up at small m: time each candidate briefly (with inputs
      // rotated past L2, unlike the runner's own tuning), keep the fastest.
      auto candidates = runner.candidateCount(argsFor(0));
      MOE_RETURN_IF_ERROR(candidates);
      int best = 0;
      double bestSeconds = INFINITY;
      for (int c = 0; c < *candidates; ++c) {
        MOE_RETURN_IF_ERROR(runner.selectCandidate(argsFor(0), c));
        auto trial = timeCalls(ctx, launch, 3, 2e-4);
        if (!trial) { // an algorithm that fails to launch is skipped
          MOE_CUDA_TRY(cudaStreamSynchronize(ctx.stream));
          continue;
        }
        if (*trial < bestSeconds) {
          bestSeconds = *trial;
          best = c;
        }
      }
      MOE_RETURN_IF_ERROR(runner.selectCandidate(argsFor(0), best));
      auto t = timeCalls(ctx, launch);
      MOE_RETURN_IF_ERROR(t);
      profile.points.push_back({m, *t});
      double flops = 2.0 * m * n * k;
      double bytes = 2.0 * (wCount + m * k + m * n);
      ctx.print("gemm   n={:>5} k={:>5} m={:>5}: {:>9.1f} us {:>7.1f} TFLOP/s "
                "{:>6.2f} TB/s  algo {}/{}",
                n, k, m, *t * 1e6, flops / *t / 1e12, bytes / *t / 1e12,
                best + 1, *candidates);
    }
    out.push_back(std::move(profile));
  }
  return Status::success();
}

// cuBLASLt's block-scaled FP8 GEMM at the routed experts' shapes (the
// per-expert GEMMs of fp8 experts), with the heuristic's best candidate
// per point as for bf16. Values do not change the time: codes of 1.0 and
// zero scales. Row counts cuBLASLt has no algorithm for are left out.
Status measureGemmFp8(const Context &ctx, GemmRunner &runner,
                      std::vector<GemmProfile> &out) {
  std::vector<std::pair<std::int64_t, std::int64_t>> shapes;
  std::vector<std::int64_t> ms;
  if (ctx.quick) {
    shapes = {{1536, 2048}};
    ms = {128, 1024};
  } else {
    // Mixtral-8x7B, Qwen3-30B-A3B and DeepSeek-V2-Lite gate|up and down.
    shapes = {{28672, 4096}, {4096, 14336}, {1536, 2048},
              {2048, 768},   {2816, 2048},  {2048, 1408}};
    ms = {16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192};
  }
  constexpr std::int64_t kBlock = 128;
  auto blocks = [](std::int64_t v) { return (v + kBlock - 1) / kBlock; };
  const std::int64_t maxM = ms.back();
  for (const auto &[n, k] : shapes) {
    GemmProfile profile;
    profile.n = n;
    profile.k = k;
    const std::size_t wCount = std::size_t(n) * k;
    const std::int64_t wCopies =
        std::clamp<std::int64_t>((256 * kMiB + wCount - 1) / wCount, 1, 64);
    const std::size_t wScales =
        std::size_t(blocks(n)) * ((blocks(k) + 3) / 4 * 4);
    DeviceBuffer w, ws, x, xs, y;
    MOE_RETURN_IF_ERROR(w.allocate(wCopies * wCount));
    MOE_RETURN_IF_ERROR(ws.allocate(wScales * sizeof(float)));
    MOE_RETURN_IF_ERROR(x.allocate(std::size_t(maxM) * k));
    MOE_RETURN_IF_ERROR(
        xs.allocate(std::size_t(blocks(k)) * maxM * sizeof(float)));
    MOE_RETURN_IF_ERROR(y.allocate(std::size_t(maxM) * n * 2));
    constexpr int kOne = 0x38; // E4M3 1.0
    MOE_CUDA_TRY(cudaMemsetAsync(w.as(), kOne, wCopies * wCount, ctx.stream));
    MOE_CUDA_TRY(
        cudaMemsetAsync(x.as(), kOne, std::size_t(maxM) * k, ctx.stream));
    MOE_CUDA_TRY(
        cudaMemsetAsync(ws.as(), 0, wScales * sizeof(float), ctx.stream));
    MOE_CUDA_TRY(cudaMemsetAsync(
        xs.as(), 0, std::size_t(blocks(k)) * maxM * sizeof(float), ctx.stream));
    for (std::int64_t m : ms) {
      auto argsFor = [&](std::int64_t i) {
        GemmArgs args;
        args.fp8.x = x.as<std::uint8_t>();
        args.fp8.xScales = xs.as<float>();
        args.fp8.w = w.as<std::uint8_t>() + (i % wCopies) * wCount;
        args.fp8.wScales = ws.as<float>();
        args.y = y.as<bf16>();
        args.m = m;
        args.n = n;
        args.k = k;
        return args;
      };
      auto supported = runner.supports(argsFor(0));
      MOE_RETURN_IF_ERROR(supported);
      if (!*supported) {
        ctx.print("gemm8  n={:>5} k={:>5} m={:>5}: no algorithm", n, k, m);
        continue;
      }
      auto launch = [&](std::int64_t i) -> Status {
        return runner.run(argsFor(i), ctx.stream);
      };
      auto candidates = runner.candidateCount(argsFor(0));
      MOE_RETURN_IF_ERROR(candidates);
      int best = 0;
      double bestSeconds = INFINITY;
      for (int c = 0; c < *candidates; ++c) {
        MOE_RETURN_IF_ERROR(runner.selectCandidate(argsFor(0), c));
        auto trial = timeCalls(ctx, launch, 3, 2e-4);
        if (!trial) {
          MOE_CUDA_TRY(cudaStreamSynchronize(ctx.stream));
          continue;
        }
        if (*trial < bestSeconds) {
          bestSeconds = *trial;
          best = c;
        }
      }
      MOE_RETURN_IF_ERROR(runner.selectCandidate(argsFor(0), best));
      auto t = timeCalls(ctx, launch);
      MOE_RETURN_IF_ERROR(t);
      profile.points.push_back({m, *t});
      ctx.print("gemm8  n={:>5} k={:>5} m={:>5}: {:>9.1f} us {:>7.1f} TFLOP/s",
                n, k, m, *t * 1e6, 2.0 * m * n * k / *t / 1e12);
    }
    if (!profile.points.empty())
      out.push_back(std::move(profile));
  }
  return Status::success();
}

// The grouped expert GEMM at the expert shapes of the common MoE models,
// for the decode-sized groups the backend gives it (fewer than
// CudaBackendOptions::perExpertGemmRows rows per expert).
Status measureGroupedGemm(const Context &ctx,
                          std::vector<GroupedGemmProfile> &out) {
  struct Shape {
    std::int64_t n, k, experts;
  };
  std::vector<Shape> shapes;
  std::vector<std::int64_t> rows;
  if (ctx.quick) {
    shapes = {{1536, 2048, 128}};
    rows = {1, 16, 64};
  } else {
    // Qwen3-30B-A3B gate|up and down, DeepSeek-V2-Lite's, GPT-OSS-20B's.
    shapes = {{1536, 2048, 128}, {2048, 768, 128}, {2816, 2048, 64},
              {2048, 1408, 64},  {5760, 2880, 32}, {2880, 2880, 32}};
    rows = {1, 2, 4, 8, 16, 32, 64, 128};
  }
  const std::int64_t maxRows = rows.back();
  for (const Shape &shape : shapes) {
    GroupedGemmProfile profile;
    profile.n = shape.n;
    profile.k = shape.k;
    profile.experts = shape.experts;
    // All experts' weights exceed L2, so every launch reads them from HBM.
    const std::size_t wCount = std::size_t(shape.experts) * shape.n * shape.k;
    const std::size_t xRows = std::size_t(shape.experts) * maxRows;
    DeviceBuffer w, x, y, offsets;
    MOE_RETURN_IF_ERROR(w.allocate(wCount * 2));
    MOE_RETURN_IF_ERROR(x.allocate(xRows * shape.k * 2));
    MOE_RETURN_IF_ERROR(y.allocate(xRows * shape.n * 2));
    MOE_RETURN_IF_ERROR(
        offsets.allocate((shape.experts + 1) * sizeof(std::int32_t)));
    MOE_RETURN_IF_ERROR(fillRandom(ctx, w.as<bf16>(), wCount, 3000 + shape.n));
    MOE_RETURN_IF_ERROR(
        fillRandom(ctx, x.as<bf16>(), xRows * shape.k, 4000 + shape.k));
    for (std::int64_t r : rows) {
      std::vector<std::int32_t> starts(shape.experts + 1);
      for (std::int64_t e = 0; e <= shape.experts; ++e)
        starts[e] = static_cast<std::int32_t>(e * r);
      MOE_CUDA_TRY(cudaMemcpyAsync(offsets.as(), starts.data(),
                                   starts.size() * sizeof(std::int32_t),
                                   cudaMemcpyHostToDevice, ctx.stream));
      kernels::GroupedGemmArgs args;
      args.x = x.as<bf16>();
      args.offsets = offsets.as<std::int32_t>();
      args.weight.resident = w.as<bf16>();
      args.weight.residentExperts = shape.experts;
      args.weight.stride = shape.n * shape.k;
      args.y = y.as<bf16>();
      args.rows = shape.experts * r;
      args.experts = static_cast<int>(shape.experts);
      args.n = shape.n;
      args.k = shape.k;
      auto t = timeCalls(ctx, [&](std::int64_t) -> Status {
        MOE_CUDA_TRY(kernels::groupedGemm(args, ctx.stream));
        return Status::success();
      });
      MOE_RETURN_IF_ERROR(t);
      profile.points.push_back({r, *t});
      ctx.print("grouped n={:>5} k={:>5} experts={:>3} rows/expert={:>3}: "
                "{:>8.1f} us {:>6.2f} TB/s of weights",
                shape.n, shape.k, shape.experts, r, *t * 1e6,
                2.0 * wCount / *t / 1e12);
    }
    out.push_back(std::move(profile));
  }
  return Status::success();
}

struct AttentionShape {
  int heads, kvHeads, headDim;
};

Status measureAttention(const Context &ctx,
                        std::vector<AttentionProfile> &out) {
  std::vector<AttentionShape> shapes;
  std::vector<int> batches, contexts;
  if (ctx.quick) {
    shapes = {{32, 8, 128}};
    batches = {1, 64};
    contexts = {512, 4096};
  } else {
    shapes = {{32, 8, 128}, {32, 4, 128}, {16, 16, 128}};
    batches = {1, 16, 64, 256};
    contexts = {512, 1024, 2048, 4096};
  }
  const std::size_t kvLimit = 8 * kGiB; // K + V bytes of one point
  for (const AttentionShape &s : shapes) {
    AttentionProfile profile;
    profile.heads = s.heads;
    profile.kvHeads = s.kvHeads;
    profile.headDim = s.headDim;
    auto kBytesOf = [&](int batch, int context) {
      return std::size_t(batch) * context * s.kvHeads * s.headDim * 2;
    };
    std::size_t maxKBytes = 0, maxWs = 0;
    int maxBatch = 0;
    for (int batch : batches)
      for (int context : contexts)
        if (2 * kBytesOf(batch, context) <= kvLimit) {
          maxKBytes = std::max(maxKBytes, kBytesOf(batch, context));
          maxBatch = std::max(maxBatch, batch);
          maxWs = std::max(maxWs, kernels::attentionWorkspaceBytes(
                                      batch, s.heads, s.kvHeads, s.headDim,
                                      context, ctx.smCount));
        }
    const std::size_t poolBytes = std::max(maxKBytes, 512 * kMiB);
    DeviceBuffer k, v, q, o, ws, positions;
    MOE_RETURN_IF_ERROR(positions.allocate(maxBatch * sizeof(std::int32_t)));
    MOE_RETURN_IF_ERROR(k.allocate(poolBytes));
    MOE_RETURN_IF_ERROR(v.allocate(poolBytes));
    const std::size_t qCount = std::size_t(maxBatch) * s.heads * s.headDim;
    MOE_RETURN_IF_ERROR(q.allocate(qCount * 2));
    MOE_RETURN_IF_ERROR(o.allocate(qCount * 2));
    MOE_RETURN_IF_ERROR(ws.allocate(maxWs));
    MOE_RETURN_IF_ERROR(fillRandom(ctx, k.as<bf16>(), poolBytes / 2, 31));
    MOE_RETURN_IF_ERROR(fillRandom(ctx, v.as<bf16>(), poolBytes / 2, 32));
    MOE_RETURN_IF_ERROR(fillRandom(ctx, q.as<bf16>(), qCount, 33));

    for (int batch : batches)
      for (int context : contexts) {
        const std::size_t kBytes = kBytesOf(batch, context);
        if (2 * kBytes > kvLimit)
          continue;
        // Rotate over K/V copies until ~768 MiB is touched (or the pool ends).
        const std::size_t copies = std::max<std::size_t>(
            1,
            std::min(poolBytes / kBytes, (384 * kMiB + kBytes - 1) / kBytes));
        std::vector<std::int32_t> last(batch, context - 1);
        MOE_CUDA_TRY(cudaMemcpyAsync(positions.as(), last.data(),
                                     last.size() * sizeof(std::int32_t),
                                     cudaMemcpyHostToDevice, ctx.stream));
        kernels::AttentionArgs args;
        args.q = q.as<bf16>();
        args.out = o.as<bf16>();
        args.positions = positions.as<std::int32_t>();
        args.rows = batch;
        args.heads = s.heads;
        args.kvHeads = s.kvHeads;
        args.headDim = s.headDim;
        args.maxSpan = context;
        args.rowBytes = std::int64_t(s.kvHeads) * s.headDim * sizeof(bf16);
        args.seqStride = std::int64_t(context) * args.rowBytes;
        args.scale = 1.0f / std::sqrt(static_cast<float>(s.headDim));
        args.workspace = ws.as<float>();
        auto t = timeCalls(ctx, [&](std::int64_t i) -> Status {
          kernels::AttentionArgs a = args;
          std::size_t offset = (i % copies) * (kBytes / 2);
          a.k = k.as<bf16>() + offset;
          a.v = v.as<bf16>() + offset;
          MOE_CUDA_TRY(kernels::attention(a, ctx.smCount, ctx.stream));
          return Status::success();
        });
        MOE_RETURN_IF_ERROR(t);
        profile.points.push_back({batch, context, *t});
        ctx.print("attn   heads={} kv={} dim={} batch={:>3} context={:>4}: "
                  "{:>8.1f} us  KV {:>7.1f} MiB  {:>5.2f} TB/s",
                  s.heads, s.kvHeads, s.headDim, batch, context, *t * 1e6,
                  2.0 * kBytes / kMiB, 2.0 * kBytes / *t / 1e12);
      }
    out.push_back(std::move(profile));
  }
  return Status::success();
}

// The MLA kernel the backend runs, at DeepSeek-V2-Lite's (16 heads) and
// DeepSeek-V2/V3's (128 heads) shapes: one query row per sequence at its
// last position, sequence r reading cache r.
Status measureMlaAttention(const Context &ctx,
                           std::vector<MlaAttentionProfile> &out) {
  std::vector<int> heads, batches, contexts;
  if (ctx.quick) {
    heads = {16};
    batches = {1, 64};
    contexts = {512, 4096};
  } else {
    heads = {16, 128};
    batches = {1, 16, 64, 256, 1024};
    contexts = {512, 1024, 2048, 4096};
  }
  constexpr int kLatent = 512, kRope = 64, kRow = kLatent + kRope;
  const std::size_t cacheLimit = 4 * kGiB; // latent bytes of one point
  for (int h : heads) {
    MlaAttentionProfile profile;
    profile.heads = h;
    profile.latentDim = kLatent;
    profile.ropeDim = kRope;
    auto cacheBytesOf = [](int batch, int context) {
      return std::size_t(batch) * context * kRow * 2;
    };
    std::size_t maxCache = 0, maxWs = 0;
    int maxBatch = 0;
    for (int batch : batches)
      for (int context : contexts)
        if (cacheBytesOf(batch, context) <= cacheLimit) {
          maxCache = std::max(maxCache, cacheBytesOf(batch, context));
          maxBatch = std::max(maxBatch, batch);
          maxWs = std::max(maxWs, kernels::mlaAttentionWorkspaceBytes(
                                      batch, h, kLatent, context, ctx.smCount));
        }
    const std::size_t poolBytes = std::max(maxCache, 512 * kMiB);
    DeviceBuffer cache, qLatent, qRope, o, ws, positions;
    MOE_RETURN_IF_ERROR(positions.allocate(maxBatch * sizeof(std::int32_t)));
    MOE_RETURN_IF_ERROR(cache.allocate(poolBytes));
    const std::size_t rows = std::size_t(maxBatch) * h;
    MOE_RETURN_IF_ERROR(qLatent.allocate(rows * kLatent * 2));
    MOE_RETURN_IF_ERROR(qRope.allocate(rows * kRope * 2));
    MOE_RETURN_IF_ERROR(o.allocate(rows * kLatent * 2));
    MOE_RETURN_IF_ERROR(ws.allocate(std::max<std::size_t>(maxWs, 4)));
    MOE_RETURN_IF_ERROR(fillRandom(ctx, cache.as<bf16>(), poolBytes / 2, 41));
    MOE_RETURN_IF_ERROR(
        fillRandom(ctx, qLatent.as<bf16>(), rows * kLatent, 42));
    MOE_RETURN_IF_ERROR(fillRandom(ctx, qRope.as<bf16>(), rows * kRope, 43));

    for (int batch : batches)
      for (int context : contexts) {
        const std::size_t bytes = cacheBytesOf(batch, context);
        if (bytes > cacheLimit)
          continue;
        // Rotate over cache copies until ~384 MiB is touched (or the pool
        // ends), as for softmax attention.
        const std::size_t copies = std::max<std::size_t>(
            1, std::min(poolBytes / bytes, (384 * kMiB + bytes - 1) / bytes));
        std::vector<std::int32_t> last(batch, context - 1);
        MOE_CUDA_TRY(cudaMemcpyAsync(positions.as(), last.data(),
                                     last.size() * sizeof(std::int32_t),
                                     cudaMemcpyHostToDevice, ctx.stream));
        kernels::MlaAttentionArgs args;
        args.qLatent = qLatent.as<bf16>();
        args.qRope = qRope.as<bf16>();
        args.out = o.as<bf16>();
        args.positions = positions.as<std::int32_t>();
        args.rows = batch;
        args.heads = h;
        args.latentDim = kLatent;
        args.ropeDim = kRope;
        args.rowBytes = kRow * 2;
        args.seqStride = std::int64_t(context) * kRow * 2;
        args.maxSpan = context;
        args.scale = 1.0f / std::sqrt(static_cast<float>(kRow));
        args.workspace = ws.as<float>();
        auto t = timeCalls(ctx, [&](std::int64_t i) -> Status {
          kernels::MlaAttentionArgs a = args;
          a.cache = cache.as<char>() + (i % copies) * bytes;
          MOE_CUDA_TRY(kernels::mlaAttention(a, ctx.smCount, ctx.stream));
          return Status::success();
        });
        MOE_RETURN_IF_ERROR(t);
        profile.points.push_back({batch, context, *t});
        ctx.print("mla    heads={} latent={} rope={} batch={:>4} "
                  "context={:>4}: {:>8.1f} us  cache {:>7.1f} MiB",
                  h, kLatent, kRope, batch, context, *t * 1e6,
                  double(bytes) / kMiB);
      }
    out.push_back(std::move(profile));
  }
  return Status::success();
}

// The prompt lengths and prompt counts of a prefill curve: one prompt, and
// enough prompts for `rows` rows.
std::vector<std::pair<int, int>> prefillPoints(const Context &ctx, int rows) {
  std::vector<std::pair<int, int>> points; // (prompts, prompt length)
  for (int length :
       ctx.quick ? std::vector<int>{512} : std::vector<int>{128, 512, 2048}) {
    points.push_back({1, length});
    if (rows / length > 1)
      points.push_back({rows / length, length});
  }
  return points;
}

// Row r of `prompts` prompts of `length` tokens: sequence r / length at
// position r % length.
Status uploadPromptRows(const Context &ctx, int prompts, int length,
                        DeviceBuffer &sequences, DeviceBuffer &positions) {
  std::vector<std::int32_t> seq(std::size_t(prompts) * length), pos(seq.size());
  for (std::size_t r = 0; r < seq.size(); ++r) {
    seq[r] = static_cast<std::int32_t>(r / length);
    pos[r] = static_cast<std::int32_t>(r % length);
  }
  MOE_RETURN_IF_ERROR(sequences.allocate(seq.size() * sizeof(std::int32_t)));
  MOE_RETURN_IF_ERROR(positions.allocate(pos.size() * sizeof(std::int32_t)));
  MOE_CUDA_TRY(cudaMemcpyAsync(sequences.as(), seq.data(),
                               seq.size() * sizeof(std::int32_t),
                               cudaMemcpyHostToDevice, ctx.stream));
  MOE_CUDA_TRY(cudaMemcpyAsync(positions.as(), pos.data(),
                               pos.size() * sizeof(std::int32_t),
                               cudaMemcpyHostToDevice, ctx.stream));
  MOE_CUDA_TRY(cudaStreamSynchronize(ctx.stream));
  return Status::success();
}

// The attention kernel the backend runs on prompt rows, at the decode
// curve's shapes.
Status measureAttentionPrefill(const Context &ctx,
                               std::vector<AttentionProfile> &out) {
  std::vector<AttentionShape> shapes = {{32, 8, 128}};
  if (!ctx.quick)
    shapes = {{32, 8, 128}, {32, 4, 128}, {16, 16, 128}};
  constexpr int kRows = 16384;
  for (const AttentionShape &s : shapes) {
    AttentionProfile profile;
    profile.heads = s.heads;
    profile.kvHeads = s.kvHeads;
    profile.headDim = s.headDim;
    const std::int64_t rowBytes = std::int64_t(s.kvHeads) * s.headDim * 2;
    for (auto [prompts, length] : prefillPoints(ctx, kRows)) {
      const std::int64_t rows = std::int64_t(prompts) * length;
      DeviceBuffer k, v, q, o, ws, sequences, positions;
      MOE_RETURN_IF_ERROR(k.allocate(rows * rowBytes));
      MOE_RETURN_IF_ERROR(v.allocate(rows * rowBytes));
      MOE_RETURN_IF_ERROR(q.allocate(rows * s.heads * s.headDim * 2));
      MOE_RETURN_IF_ERROR(o.allocate(rows * s.heads * s.headDim * 2));
      MOE_RETURN_IF_ERROR(ws.allocate(std::max<std::size_t>(
          4, kernels::attentionWorkspaceBytes(
                 rows, s.heads, s.kvHeads, s.headDim, length, ctx.smCount))));
      MOE_RETURN_IF_ERROR(
          fillRandom(ctx, k.as<bf16>(), rows * rowBytes / 2, 51));
      MOE_RETURN_IF_ERROR(
          fillRandom(ctx, v.as<bf16>(), rows * rowBytes / 2, 52));
      MOE_RETURN_IF_ERROR(
          fillRandom(ctx, q.as<bf16>(), rows * s.heads * s.headDim, 53));
      MOE_RETURN_IF_ERROR(
          uploadPromptRows(ctx, prompts, length, sequences, positions));
      kernels::AttentionArgs args;
      args.q = q.as<bf16>();
      args.k = k.as<bf16>();
      args.v = v.as<bf16>();
      args.out = o.as<bf16>();
      args.sequences = sequences.as<std::int32_t>();
      args.positions = positions.as<std::int32_t>();
      args.rows = rows;
      args.heads = s.heads;
      args.kvHeads = s.kvHeads;
      args.headDim = s.headDim;
      args.maxSpan = length;
      args.rowBytes = rowBytes;
      args.seqStride = std::int64_t(length) * rowBytes;
      args.scale = 1.0f / std::sqrt(static_cast<float>(s.headDim));
      args.workspace = ws.as<float>();
      args.rowsPerSequence = length;
      auto t = timeCalls(ctx, [&](std::int64_t) -> Status {
        MOE_CUDA_TRY(kernels::attention(args, ctx.smCount, ctx.stream));
        return Status::success();
      });
      MOE_RETURN_IF_ERROR(t);
      profile.points.push_back({prompts, length, *t});
      ctx.print("prefill attn heads={} kv={} dim={} prompts={:>3} x {:>4}: "
                "{:>8.1f} us",
                s.heads, s.kvHeads, s.headDim, prompts, length, *t * 1e6);
    }
    out.push_back(std::move(profile));
  }
  return Status::success();
}

// The MLA kernel on prompt rows, at the decode curve's shapes.
Status measureMlaAttentionPrefill(const Context &ctx,
                                  std::vector<MlaAttentionProfile> &out) {
  constexpr int kLatent = 512, kRope = 64, kRow = kLatent + kRope;
  for (int h : ctx.quick ? std::vector<int>{16} : std::vector<int>{16, 128}) {
    MlaAttentionProfile profile;
    profile.heads = h;
    profile.latentDim = kLatent;
    profile.ropeDim = kRope;
    // q and the output take rows · heads · 576 values: fewer rows for 128
    // heads.
    const int rowsTarget = h > 16 ? 4096 : 16384;
    for (auto [prompts, length] : prefillPoints(ctx, rowsTarget)) {
      const std::int64_t rows = std::int64_t(prompts) * length;
      DeviceBuffer cache, qLatent, qRope, o, ws, sequences, positions;
      MOE_RETURN_IF_ERROR(cache.allocate(rows * kRow * 2));
      MOE_RETURN_IF_ERROR(qLatent.allocate(rows * h * kLatent * 2));
      MOE_RETURN_IF_ERROR(qRope.allocate(rows * h * kRope * 2));
      MOE_RETURN_IF_ERROR(o.allocate(rows * h * kLatent * 2));
      MOE_RETURN_IF_ERROR(ws.allocate(std::max<std::size_t>(
          4, kernels::mlaAttentionWorkspaceBytes(rows, h, kLatent, length,
                                                 ctx.smCount))));
      MOE_RETURN_IF_ERROR(fillRandom(ctx, cache.as<bf16>(), rows * kRow, 61));
      MOE_RETURN_IF_ERROR(
          fillRandom(ctx, qLatent.as<bf16>(), rows * h * kLatent, 62));
      MOE_RETURN_IF_ERROR(
          fillRandom(ctx, qRope.as<bf16>(), rows * h * kRope, 63));
      MOE_RETURN_IF_ERROR(
          uploadPromptRows(ctx, prompts, length, sequences, positions));
      kernels::MlaAttentionArgs args;
      args.qLatent = qLatent.as<bf16>();
      args.qRope = qRope.as<bf16>();
      args.cache = cache.as<bf16>();
      args.out = o.as<bf16>();
      args.sequences = sequences.as<std::int32_t>();
      args.positions = positions.as<std::int32_t>();
      args.rows = rows;
      args.heads = h;
      args.latentDim = kLatent;
      args.ropeDim = kRope;
      args.rowBytes = kRow * 2;
      args.seqStride = std::int64_t(length) * kRow * 2;
      args.maxSpan = length;
      args.scale = 1.0f / std::sqrt(static_cast<float>(kRow));
      args.workspace = ws.as<float>();
      auto t = timeCalls(ctx, [&](std::int64_t) -> Status {
        MOE_CUDA_TRY(kernels::mlaAttention(args, ctx.smCount, ctx.stream));
        return Status::success();
      });
      MOE_RETURN_IF_ERROR(t);
      profile.points.push_back({prompts, length, *t});
      ctx.print("prefill mla heads={} latent={} rope={} prompts={:>3} x "
                "{:>4}: {:>8.1f} us",
                h, kLatent, kRope, prompts, length, *t * 1e6);
    }
    out.push_back(std::move(profile));
  }
  return Status::success();
}

HostInfo queryHost() {
  HostInfo host;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  std::int64_t value = 0;
  std::string unit;
  while (meminfo >> key >> value) {
    std::getline(meminfo, unit);
    if (key == "MemTotal:") {
      host.memoryBytes = value * 1024;
      break;
    }
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    host.cpuCores = CPU_COUNT(&set);
  if (host.cpuCores <= 0)
    host.cpuCores = static_cast<int>(std::thread::hardware_concurrency());
  return host;
}

// The cores reading DRAM on all threads while the GPU copies pinned host
// memory to itself back to back: both draw on the same DRAM, and the host's
// attention runs beside the KV loads.
Result<costmodel::HostReadWithCopyPoint>
measureReadBesideCopies(const Context &ctx, int threads) {
  size_t bytes = size_t(ctx.quick ? 64 : 512) * kMiB;
  void *pinned = nullptr, *device = nullptr;
  MOE_CUDA_TRY(cudaHostAlloc(&pinned, bytes, cudaHostAllocDefault));
  std::unique_ptr<void, decltype(&cudaFreeHost)> freePinned(pinned,
                                                            &cudaFreeHost);
  MOE_CUDA_TRY(cudaMalloc(&device, bytes));
  std::unique_ptr<void, decltype(&cudaFree)> freeDevice(device, &cudaFree);
  std::memset(pinned, 1, bytes);
  int gpu = 0;
  MOE_CUDA_TRY(cudaGetDevice(&gpu));
  std::atomic<bool> reading{true};
  cudaError_t copyError = cudaSuccess;
  int64_t copies = 0;
  double copySeconds = 0;
  std::thread copier([&] {
    copyError = cudaSetDevice(gpu);
    auto start = std::chrono::steady_clock::now();
    while (copyError == cudaSuccess && reading.load()) {
      copyError = cudaMemcpyAsync(device, pinned, bytes, cudaMemcpyHostToDevice,
                                  ctx.stream);
      if (copyError == cudaSuccess)
        copyError = cudaStreamSynchronize(ctx.stream);
      ++copies;
    }
    copySeconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
  });
  host::ReadBandwidthOptions read;
  if (ctx.quick)
    read.bufferBytes = 256 * kMiB;
  double readRate = host::measureReadBandwidth(threads, read);
  reading = false;
  copier.join();
  MOE_CUDA_TRY(copyError);
  costmodel::HostReadWithCopyPoint point{
      threads, readRate, double(copies) * double(bytes) / copySeconds};
  ctx.print("read   {:>3} threads beside H2D copies: {:>6.1f} GB/s read, "
            "{:>6.1f} GB/s copied",
            threads, point.readBytesPerSecond / 1e9,
            point.h2dBytesPerSecond / 1e9);
  return point;
}

// The host's section: runtime/host's profile, then its reads beside copies.
Result<HardwareProfile> withHost(const Context &ctx, HardwareProfile profile) {
  host::HostProfileOptions hostOptions;
  hostOptions.quick = ctx.quick;
  hostOptions.log = ctx.log;
  auto hostCpu = host::profileHost(hostOptions);
  MOE_RETURN_IF_ERROR(hostCpu);
  int threads = int(hostCpu->readBandwidth.back().threads);
  MOE_ASSIGN_OR_RETURN(costmodel::HostReadWithCopyPoint beside,
                       measureReadBesideCopies(ctx, threads));
  hostCpu->readWithH2d.push_back(beside);
  profile.hostCpu = std::move(*hostCpu);
  return profile;
}

} // namespace

Result<HardwareProfile> profileHardware(const ProfileOptions &options) {
  for (const std::string &section : options.sections)
    if (std::find(std::begin(kProfileSections), std::end(kProfileSections),
                  section) == std::end(kProfileSections))
      return makeError("no profile section '{}' (sections: {})", section,
                       fmt::join(kProfileSections, ", "));
  int count = 0;
  cudaError_t code = cudaGetDeviceCount(&count);
  if (code != cudaSuccess)
    return makeError("no CUDA device: {}", cudaGetErrorString(code));
  if (count == 0)
    return makeError("no CUDA device: none found");
  if (options.device < 0 || options.device >= count)
    return makeError("no CUDA device {} (found {})", options.device, count);
  MOE_CUDA_TRY(cudaSetDevice(options.device));

  HardwareProfile profile;
  cudaDeviceProp prop{};
  MOE_CUDA_TRY(cudaGetDeviceProperties(&prop, options.device));
  profile.device.name = prop.name;
  profile.device.memoryBytes = static_cast<std::int64_t>(prop.totalGlobalMem);
  std::size_t freeBytes = 0, totalBytes = 0;
  MOE_CUDA_TRY(cudaMemGetInfo(&freeBytes, &totalBytes));
  profile.device.reservedBytes =
      static_cast<std::int64_t>(totalBytes - freeBytes + 2 * kGiB);
  profile.device.smCount = prop.multiProcessorCount;
  profile.device.computeCapability =
      fmt::format("{}.{}", prop.major, prop.minor);
  profile.host = queryHost();
  profile.host.reservedBytes = static_cast<std::int64_t>(8 * kGiB);

  Context ctx;
  ctx.quick = options.quick;
  ctx.log = options.log;
  ctx.smCount = prop.multiProcessorCount;
  MOE_CUDA_TRY(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  ctx.print("device {} ({} MiB, {} SMs, cc {}, L2 {} MiB); host {} GiB, {} "
            "cores{}",
            profile.device.name, profile.device.memoryBytes / kMiB,
            profile.device.smCount, profile.device.computeCapability,
            prop.l2CacheSize / kMiB, profile.host.memoryBytes / kGiB,
            profile.host.cpuCores, options.quick ? " [quick]" : "");

  GemmRunnerOptions gemmOptions;
  gemmOptions.workspaceBytes = kGemmWorkspaceBytes;
  gemmOptions.autotune = false; // measureGemm times the candidates itself
  auto gemm = GemmRunner::create(gemmOptions);
  if (!gemm)
    return gemm.error();

  auto wanted = [&](std::string_view section) {
    return options.sections.empty() ||
           std::find(options.sections.begin(), options.sections.end(),
                     section) != options.sections.end();
  };
  const bool onlyHost =
      options.sections.size() == 1 && options.sections[0] == "host_cpu";
  if (onlyHost)
    return withHost(ctx, std::move(profile));
  // Correctness first: a wrong kernel must not produce a profile.
  MOE_RETURN_IF_ERROR(checkGemm(ctx, **gemm));
  MOE_RETURN_IF_ERROR(checkDecodeAttention(ctx, 32, 8, 128, 3, 300, {}, 11));
  MOE_RETURN_IF_ERROR(
      checkDecodeAttention(ctx, 16, 16, 128, 3, 800, {1, 777, 800}, 12));
  MOE_RETURN_IF_ERROR(checkDecodeAttention(ctx, 8, 1, 128, 2, 2000, {}, 13));
  MOE_RETURN_IF_ERROR(checkDecodeAttention(ctx, 32, 4, 128, 300, 64, {}, 14));
  MOE_RETURN_IF_ERROR(checkDecodeAttention(ctx, 8, 2, 64, 2, 100, {}, 15));
  MOE_RETURN_IF_ERROR(checkDecodeAttention(ctx, 8, 4, 256, 2, 333, {}, 16));
  if (options.checksOnly)
    return profile;

  if (wanted("links"))
    MOE_RETURN_IF_ERROR(measureLinks(ctx, profile.links));
  if (wanted("gemm_bf16"))
    MOE_RETURN_IF_ERROR(measureGemm(ctx, **gemm, profile.gemmBf16));
  if (wanted("gemm_fp8_block"))
    MOE_RETURN_IF_ERROR(measureGemmFp8(ctx, **gemm, profile.gemmFp8Block));
  if (wanted("grouped_gemm_bf16"))
    MOE_RETURN_IF_ERROR(measureGroupedGemm(ctx, profile.groupedGemmBf16));
  if (wanted("attention_decode_bf16"))
    MOE_RETURN_IF_ERROR(measureAttention(ctx, profile.attentionDecodeBf16));
  if (wanted("mla_attention_decode_bf16"))
    MOE_RETURN_IF_ERROR(
        measureMlaAttention(ctx, profile.mlaAttentionDecodeBf16));
  if (wanted("attention_prefill_bf16"))
    MOE_RETURN_IF_ERROR(
        measureAttentionPrefill(ctx, profile.attentionPrefillBf16));
  if (wanted("mla_attention_prefill_bf16"))
    MOE_RETURN_IF_ERROR(
        measureMlaAttentionPrefill(ctx, profile.mlaAttentionPrefillBf16));
  MOE_CUDA_TRY(cudaStreamSynchronize(ctx.stream));
  if (!wanted("host_cpu"))
    return profile;
  return withHost(ctx, std::move(profile));
}

Status measureProfileToFile(const ProfileOptions &options,
                            const std::string &path) {
  // An unwritable output fails before minutes of measuring, and a failed
  // measurement leaves no empty file behind.
  std::error_code error;
  const bool existed = std::filesystem::exists(path, error);
  {
    std::ofstream probe(path, std::ios::app);
    if (!probe)
      return makeError("cannot open {} for writing", path);
  }
  auto profile = profileHardware(options);
  Status written =
      profile ? writeProfileJson(*profile, path) : Status(profile.error());
  if (!written && !existed)
    std::filesystem::remove(path, error);
  return written;
}

} // namespace moe::cuda
