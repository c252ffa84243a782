// GEMMs through cuBLASLt: the CUDA backend's dense GEMMs and per-expert
// GEMMs (small expert groups run as one grouped kernel,
// kernels/GroupedGemm.h) and the hardware profiler's:
//
//   y[m, n] = x[m, k] · W[n, k]ᵀ (+ bias[n])
//
// bf16 operands, or E4M3 ones with block scales (Fp8GemmOperands); a bf16
// result, fp32 accumulation; row-major as in HF checkpoints (a Linear's
// weight is [out, in]), x's rows ldx and y's rows ldy apart; optionally a
// strided batch of such GEMMs.
//
// cuBLASLt's heuristic's first choice is sometimes 3-6x slower than one of
// its runners-up (the profiler saw it at small m), so the runner times up to
// kMaxCandidates heuristic candidates once per (m bucket, n, k, bias,
// operand alignment) on the first call and caches the fastest; a later m of
// the same bucket reuses that choice when cuBLASLt accepts it for that m, and
// takes its own heuristic's first choice otherwise. Descriptors are cached
// per exact problem (a few hundred bytes each).
//
// Not thread-safe, and the workspace is shared by all calls: use one runner
// per stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "runtime/support/Result.h"

namespace moe::cuda {

// E4M3 operands with DeepSeek-V3's scales in place of GemmArgs' bf16 x and
// w: cuBLASLt's block-scaled FP8 GEMM (twice bf16's tensor-core rate on
// Hopper), each product scaled in fp32 as it accumulates.
struct Fp8GemmOperands {
  const std::uint8_t *x = nullptr; // [m, k] codes
  const float *xScales = nullptr; // [⌈k/128⌉, m]: per 128 of a row's inputs
  const std::uint8_t *w = nullptr; // [n, k] codes
  // [⌈n/128⌉, ⌈k/128⌉ padded to a multiple of 4]: per 128 × 128 block.
  const float *wScales = nullptr;
};

struct GemmArgs {
  const __nv_bfloat16 *x = nullptr;    // [m, k]
  const __nv_bfloat16 *w = nullptr;    // [n, k]
  const __nv_bfloat16 *bias = nullptr; // [n], optional
  __nv_bfloat16 *y = nullptr;          // [m, n]; overlaps no input
  std::int64_t m = 0; // 0 is a no-op (an expert no token chose)
  std::int64_t n = 0;
  std::int64_t k = 0;
  std::int64_t ldy = 0; // y's row stride in elements (0: n)
  Fp8GemmOperands fp8;  // used in place of x and w when fp8.x is set
  std::int64_t ldx = 0; // x's row stride in elements (0: k; bf16 only)
  // batch > 1 (bf16, no bias): `batch` GEMMs of these sizes in one launch,
  // the i-th on x + i·xStride, w + i·wStride and y + i·yStride (elements):
  // per-head products whose heads are columns of one row-major tensor.
  std::int64_t batch = 1;
  std::int64_t xStride = 0, wStride = 0, yStride = 0;
};

struct GemmRunnerOptions {
  std::size_t workspaceBytes = std::size_t(32) << 20;
  // Device memory of workspaceBytes (from a DeviceArena, say); the runner
  // allocates its own when this is null.
  void *workspace = nullptr;
  // Time the candidates on the first call of each bucket (this synchronises
  // with the stream once per bucket: warm up before the step loop). Off, the
  // heuristic's first choice is used unless selectCandidate() says otherwise.
  bool autotune = true;
};

class GemmRunner {
public:
  static constexpr int kMaxCandidates = 8;

  static Result<std::unique_ptr<GemmRunner>>
  create(const GemmRunnerOptions &options = {});
  ~GemmRunner();
  GemmRunner(const GemmRunner &) = delete;
  GemmRunner &operator=(const GemmRunner &) = delete;

  // Enqueues one GEMM on `stream`.
  Status run(const GemmArgs &args, cudaStream_t stream);

  // Whether cuBLASLt has an algorithm for this problem (asked once per
  // exact problem; block-scaled FP8 takes fewer shapes than bf16).
  Result<bool> supports(const GemmArgs &args);

  // The heuristic's candidates for exactly this problem, for callers that
  // time them themselves (the hardware profiler).
  Result<int> candidateCount(const GemmArgs &args);
  // Uses candidate `index` for this problem and its bucket from now on.
  Status selectCandidate(const GemmArgs &args, int index);
  // The candidate in use for this exact problem (-1 before its first run),
  // as an index into its heuristic's list; -1 too when a bucket's choice was
  // reused that is not in this problem's own list.
  int selectedCandidate(const GemmArgs &args) const;

  // m values share an algorithm choice within a bucket: the next power of 2.
  static std::int64_t mBucket(std::int64_t m);

private:
  struct State;
  explicit GemmRunner(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

} // namespace moe::cuda
