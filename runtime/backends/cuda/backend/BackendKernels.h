// Device kernels the CUDA backend needs beyond runtime/backends/cuda/kernels:
// embedding gather, scaled residual adds and RMSNorm on the fp32 residual
// stream, fp32 router logits, the KV-cache append, MLA's per-head layout
// swaps, the sigmoid output gate and dtype conversions.
// Plain launchers returning cudaError_t: nvcc compiles this header, so no fmt.
// Every pointer is device memory, row-major, rows = tokens.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda::backend {

using bf16 = __nv_bfloat16;

// out[r] = table[ids[r]] for rows of `hidden`, widened to fp32.
cudaError_t embedRows(const bf16 *table, const int32_t *ids, int64_t rows,
                      int64_t hidden, float *out, cudaStream_t stream);

// out = skipScale·skip + updateScale·update over n values: the residual
// stream stays fp32, so rounding does not accumulate across layers.
cudaError_t scaledAdd(const float *skip, const float *update, float skipScale,
                      float updateScale, int64_t n, float *out,
                      cudaStream_t stream);

// y = w ⊙ x / sqrt(mean(x²) + eps) per row of `width`, from the fp32
// residual stream: out = bf16(y) (one rounding, after the weight) and, when
// outF32 is set, y itself in fp32 (for the router).
cudaError_t rmsNormF32(const float *x, const bf16 *weight, int64_t rows,
                       int64_t width, float eps, bf16 *out, float *outF32,
                       cudaStream_t stream);

// Router logits all in fp32: out[r, e] = x[r]·w[e] (+ bias[e]). Expert
// choices hinge on near-ties that bf16 rounding of x, w or the scores would
// flip.
cudaError_t routerLogits(const float *x, const float *w, const float *bias,
                         int64_t rows, int64_t hidden, int64_t experts,
                         float *out, cudaStream_t stream);

// Writes each row's K and V ([rows, width]) into a layer's caches
// [slot·maxContext + position][width] at cacheRows[r]; v may be null (MLA's
// latent cache has no V).
cudaError_t appendKv(const bf16 *k, const bf16 *v, const int32_t *cacheRows,
                     int64_t rows, int64_t width, bf16 *kCache, bf16 *vCache,
                     cudaStream_t stream);

// out[j][i][0:width] = in[i][j][offset : offset + width] for i < a, j < b,
// in's innermost rows inWidth wide: moves per-head vectors between
// [rows, heads, ·] and [heads, rows, ·] (MLA's per-head GEMMs).
cudaError_t swapLeadingDims(const bf16 *in, int64_t a, int64_t b,
                            int64_t inWidth, int64_t offset, int64_t width,
                            bf16 *out, cudaStream_t stream);

// x[r, i] *= σ(gate[r, i]) with gate [rows, width] (lightning attention's
// output gate), or x[r, :] *= σ(gate[r]) with gateWidth 1 (Qwen2's
// shared-expert gate).
cudaError_t sigmoidGate(const bf16 *gate, int64_t gateWidth, int64_t rows,
                        int64_t width, bf16 *x, cudaStream_t stream);

cudaError_t toFloat(const bf16 *in, int64_t n, float *out, cudaStream_t stream);
cudaError_t toBf16(const float *in, int64_t n, bf16 *out, cudaStream_t stream);

} // namespace moe::cuda::backend
