// Widening fp8 expert weights (runtime/model/WeightFormat.h) to bf16 for the
// expert GEMMs: after their copy over PCIe at one byte an element, before
// the GEMMs read them. nvcc compiles this header, so it includes no fmt.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda::kernels {

// A stacked expert weight of E experts, each `parts` matrices of
// [partRows, cols] one under the other (gate then up: 2 parts), as E4M3
// codes: expert e's codes at resident + e·stride for e < residentExperts,
// else at streamed + (e − residentExperts)·stride (stride = parts ·
// partRows · cols bytes). Scales: fp32, row-major
// [E, parts, ⌈partRows/128⌉, ⌈cols/128⌉], one per 128 × 128 block.
struct Fp8ExpertMatrix {
  const uint8_t *resident = nullptr;
  const uint8_t *streamed = nullptr;
  int64_t residentExperts = 0;
  int64_t parts = 1, partRows = 0, cols = 0;
  const float *scales = nullptr;
};

// What every kernel reading fp8 experts needs: cols a multiple of 16 (a
// row is read 16 codes at a time), a positive part size, scales, and the
// code pointers its experts use present and 16-byte aligned.
bool validFp8Matrix(const Fp8ExpertMatrix &weight, int64_t experts);

// out[e, r, c] = bf16(code · scale) for every expert: [E, parts·partRows,
// cols] row-major, `out` 16-byte aligned (else, or for an invalid matrix,
// cudaErrorInvalidValue).
cudaError_t widenFp8Experts(const Fp8ExpertMatrix &weight, int64_t experts,
                            __nv_bfloat16 *out, cudaStream_t stream);

} // namespace moe::cuda::kernels
