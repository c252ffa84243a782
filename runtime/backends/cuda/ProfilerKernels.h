// Device kernels used by the hardware profiler, behind plain launch functions
// that return cudaError_t. This header is included by nvcc-compiled code, so it
// must not pull in fmt (its consteval format strings break nvcc's front end);
// HardwareProfiler.cpp turns these codes into moe::Error values.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda {

// Fills `count` bf16 values with uniform random numbers in [-scale, scale),
// a pure function of (seed, index).
cudaError_t fillRandomBf16(__nv_bfloat16 *data, std::size_t count,
                           std::uint64_t seed, float scale,
                           cudaStream_t stream);

// Keeps the GPU busy for about `nanoseconds` (one thread spinning on the
// global timer): enqueued before a timed batch, it lets the host queue the
// whole batch so the batch runs back to back, without launch gaps.
cudaError_t spinFor(std::uint64_t nanoseconds, cudaStream_t stream);

// GQA decode attention: one query token per sequence against its cached K/V.
//   q, out: [batch, heads, headDim]
//   k, v:   sequence b starts at k + b * seqStride; inside it the layout is
//           [context, kvHeads, headDim] (token-major), contiguous.
// Query head h reads kv head h / (heads / kvHeads) (HF repeat_kv order).
// out = softmax(scale * q·Kᵀ) · V with fp32 scores, softmax and accumulation.
// contextLens (device, [batch]) gives each sequence's length; nullptr means
// every sequence has maxContext tokens. A sequence of length 0 yields zeros.
// Supported: headDim ∈ {64, 128, 256}, heads / kvHeads ∈ {1, 2, 4, 8};
// k, v 16-byte aligned and seqStride a multiple of 8 elements.
struct DecodeAttentionArgs {
  const __nv_bfloat16 *q = nullptr;
  const __nv_bfloat16 *k = nullptr;
  const __nv_bfloat16 *v = nullptr;
  __nv_bfloat16 *out = nullptr;
  const std::int32_t *contextLens = nullptr;
  int batch = 0;
  int heads = 0;
  int kvHeads = 0;
  int headDim = 0;
  int maxContext = 0;
  std::int64_t seqStride = 0; // elements between consecutive sequences
  float scale = 0.0f;         // usually 1 / sqrt(headDim)
  float *workspace = nullptr; // decodeAttentionWorkspaceBytes() bytes
};

// Bytes of device workspace decodeAttention needs for these sizes (the split
// of long contexts over several blocks keeps fp32 partial results there).
std::size_t decodeAttentionWorkspaceBytes(int batch, int heads, int kvHeads,
                                          int headDim, int maxContext,
                                          int smCount);

// Enqueues the attention (one or two kernels) on `stream`. smCount is the
// device's multiprocessor count and must match the workspace query.
cudaError_t decodeAttention(const DecodeAttentionArgs &args, int smCount,
                            cudaStream_t stream);

} // namespace moe::cuda
