// The grouped expert GEMM: every routed expert of one MoE layer in a single
// launch. The rows of x are grouped by expert (the dispatch's slot order) and
// expert e's rows [offsets[e], offsets[e+1]) are multiplied by its own weight.
// The offsets are read on the device, so the host needs no per-expert counts:
// no device→host copy and no stream synchronisation per layer, and one launch
// instead of one GEMM per expert.
//
// Requirements (else cudaErrorInvalidValue): k a multiple of 8; x, y and the
// weight pointers 16-byte aligned and the weight stride a multiple of 8
// elements (so every row of x and W starts on 16 bytes); 1 ≤ experts ≤ 1024;
// rows < 2³¹ (int32 offsets). The bias has no alignment requirement. nvcc
// compiles this header, so it includes no fmt (Result.h).
#pragma once

#include <cstdint>

#include "runtime/backends/cuda/kernels/QuantizedExperts.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda::kernels {

using bf16 = __nv_bfloat16;

// A stacked expert weight [E, rows_per_expert, cols] whose first
// `residentExperts` blocks live at `resident` and the others at `streamed`
// (an expert's block is `stride` elements after the previous one in its
// range). Expert e's block:
//   e < residentExperts ? resident + e*stride
//                       : streamed + (e - residentExperts)*stride
// Both null = absent (used for the optional bias).
struct ExpertMatrix {
  const bf16 *resident = nullptr;
  const bf16 *streamed = nullptr;
  int64_t residentExperts = 0;
  int64_t stride = 0; // elements
};

struct GroupedGemmArgs {
  // [rows, k] row-major; expert e's rows are [offsets[e], offsets[e+1]).
  const bf16 *x = nullptr;
  // Device memory, [experts + 1]: offsets[0] = 0, nondecreasing,
  // offsets[experts] = rows.
  const int32_t *offsets = nullptr;
  // Each expert's block is W_e [n, k] row-major (a Linear's [out, in]).
  ExpertMatrix weight;
  // Or, when its stride is set (and `weight` is absent), W_e in fp8 or
  // mxfp4: each tile's codes are widened to bf16 in shared memory, so the
  // weights cross HBM at a byte or half a byte an element (parts ·
  // partRows = n, cols = k).
  QuantizedExpertMatrix quantizedWeight;
  ExpertMatrix bias; // each expert's block is [n]; absent when both are null
  bf16 *y = nullptr; // [rows, n] row-major; does not overlap the inputs
  int64_t rows = 0;  // total rows (tokens × top-k)
  int experts = 0;
  int64_t n = 0;
  int64_t k = 0;
};

// y[r, :] = bf16(x[r, :] · W_e^T + bias_e) for every r in expert e's range:
// fp32 accumulation, the bias added in fp32, one rounding. A quantized
// weight's elements are bf16(code · scale), as widenExperts makes them: the
// result equals the bf16 GEMM over the widened weight bit for bit. The tile
// height follows rows / experts (small for decode, where the launch is bound by
// reading the weights once). cudaSuccess without a launch when rows or n is 0.
cudaError_t groupedGemm(const GroupedGemmArgs &args, cudaStream_t stream);

} // namespace moe::cuda::kernels
