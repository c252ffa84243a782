// Quantized expert weights (runtime/model/WeightFormat.h: fp8 and mxfp4)
// as the GPU holds them, and what the per-expert GEMMs make of them after
// their copy over PCIe at a byte (fp8) or half a byte (mxfp4) an element:
// weights widened to bf16, or fp8 experts' scales and inputs arranged for
// FP8 GEMMs. nvcc compiles this header, so it
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

// W8A8: the per-expert GEMMs of fp8 experts as cuBLASLt's block-scaled
// FP8 GEMMs (GemmRunner's Fp8GemmOperands), their inputs quantized as they
// come, DeepSeek-V3's recipe: a scale per 128 of a token's inputs.

// cuBLASLt (13.1) offers block-scaled FP8 GEMMs only for row counts that
// are multiples of 4: a GEMM of m rows runs as fp8GemmRows(m), its extra
// rows read past its own (codes and scales of no row: finite or not, they
// reach only the extra output rows) and written past them (rows a later
// GEMM overwrites, or fp8GemmSlackRows more of the buffers).
constexpr int64_t kFp8GemmSlackRows = 3;
__host__ __device__ inline int64_t fp8GemmRows(int64_t m) {
  return (m + kFp8GemmSlackRows) / 4 * 4;
}

// x [rows, k] (bf16, k a multiple of 16), its rows grouped by expert
// (group e is rows [offsets[e], offsets[e+1]), on the device) and each group
// cut into GEMMs of at most `microBatch` rows, as E4M3 codes [rows, k] and
// one fp32 scale (amax / 448) per 128 of a row's inputs. The GEMM whose m
// rows start at row f finds its scales [⌈k/128⌉, fp8GemmRows(m)] at
// scales + fp8GemmScalesAt(f, k): the rows of each group of 128 inputs
// contiguous, as cuBLASLt's VEC128_32F scales are read. `scales` holds
// fp8GemmScaleCount(rows, k) floats.
__host__ __device__ inline int64_t fp8GemmScalesAt(int64_t first, int64_t k) {
  return 4 * first * ((k + 127) / 128); // room for each GEMM's extra rows
}
__host__ __device__ inline int64_t fp8GemmScaleCount(int64_t rows, int64_t k) {
  return fp8GemmScalesAt(rows, k);
}
cudaError_t quantizeExpertInputs(const __nv_bfloat16 *x, int64_t rows,
                                 int64_t k, const int32_t *offsets, int experts,
                                 int64_t microBatch, uint8_t *codes,
                                 float *scales, cudaStream_t stream);

// Scales per row of 128 × 128 blocks of an fp8 matrix with `cols` columns
// as cuBLASLt's BLK128x128_32F scales are read: ⌈cols/128⌉ padded to a
// multiple of 4.
__host__ __device__ inline int64_t fp8GemmScaleRowLength(int64_t cols) {
  return ((cols + 127) / 128 + 3) / 4 * 4;
}

// fp8 experts' block scales, expert by expert and part by part, as
// cuBLASLt reads them: [experts, parts, ⌈partRows/128⌉,
// fp8GemmScaleRowLength(cols)], the padding zero (cudaErrorInvalidValue
// for an invalid or mxfp4 matrix).
cudaError_t gatherFp8GemmScales(const QuantizedExpertMatrix &weight,
                                int64_t experts, float *out,
                                cudaStream_t stream);

} // namespace moe::cuda::kernels
