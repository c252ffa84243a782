// Quantized expert weights (runtime/model/WeightFormat.h: fp8 and mxfp4)
// as the GPU holds them, and their widening to bf16 for the per-expert
// GEMMs: after their copy over PCIe at a byte (fp8) or half a byte (mxfp4)
// an element, before the GEMMs read them. nvcc compiles this header, so it
// includes no fmt.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda::kernels {

// The formats' numbers are model::WeightDtype's.
enum class ExpertFormat : int { fp8 = 1, mxfp4 = 2 };

// A stacked expert weight of E experts, each `parts` matrices of
// [partRows, cols] one under the other (gate then up: 2 parts), each
// expert one block of `stride` bytes (model::quantizedExpertLayout): its
// codes, then from `scaleOffset` its scales.
//  * fp8: E4M3 codes [parts · partRows, cols]; fp32 scales [parts,
//    ⌈partRows/128⌉, ⌈cols/128⌉], one per 128 × 128 block.
//  * mxfp4: E2M1 codes [parts · partRows, cols / 2] (the low nibble first);
//    E8M0 scales [parts · partRows, cols / 32].
// Expert e's block is at resident + e·stride for e < residentExperts, else
// at streamed + (e − residentExperts)·stride.
struct QuantizedExpertMatrix {
  ExpertFormat format = ExpertFormat::fp8;
  const uint8_t *resident = nullptr;
  const uint8_t *streamed = nullptr;
  int64_t residentExperts = 0;
  int64_t parts = 1, partRows = 0, cols = 0;
  int64_t scaleOffset = 0, stride = 0; // bytes
};

// What every kernel reading quantized experts needs: cols a multiple of
// 16 (fp8: a row is read 16 codes at a time) or 32 (mxfp4: a scale block),
// a positive part size, 16-byte aligned blocks and scales, and the block
// pointers its experts use present.
bool validQuantizedMatrix(const QuantizedExpertMatrix &weight, int64_t experts);

// out[e, r, c] = bf16(code · scale) for every expert: [E, parts·partRows,
// cols] row-major, `out` 16-byte aligned (else, or for an invalid matrix,
// cudaErrorInvalidValue).
cudaError_t widenExperts(const QuantizedExpertMatrix &weight, int64_t experts,
                         __nv_bfloat16 *out, cudaStream_t stream);

} // namespace moe::cuda::kernels
