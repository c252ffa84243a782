// The vector inner loops of host decode attention (DecodeAttention.h), one
// implementation per instruction set behind one table: scoring a group of
// query heads against a tile of cached rows, the softmax's scaling, maxima
// and exponentials, mixing the tile's values by the heads' weights, and
// widening fp8 rows with scales per group within a vector (MLA's latent) to
// fp32 first. Rows are converted in registers, each key and value vector
// once per block of the heads that share it. The driver keeps everything else
// (tiles, the online softmax's running maxima and sums, splits, merging) scalar
// and shared. Widths are multiples of 8 elements.
#pragma once

#include "runtime/host/CpuFeatures.h"

#include <cstdint>

namespace moe::host {

/// A tile's key or value vectors: `count` rows `strideBytes` apart from
/// `base`, read as fp32 (widened rows), bf16, or fp8 E4M3 codes without
/// their scales (the caller applies a row's one scale to its score or
/// weight).
enum class RowFormat { fp32, bf16, fp8Codes };
struct TileRows {
  const uint8_t *base;
  int64_t strideBytes;
  RowFormat format;
};

struct TileKernels {
  /// out[t][e] = E4M3 code e of row t times the fp32 scale of its group:
  /// the (e / group)-th at `scales` of the same row (group a multiple of 8).
  /// A NaN code (never written: encoding saturates) reads as 480.
  void (*widenFp8)(const uint8_t *codes, const uint8_t *scales,
                   int64_t rowBytes, int64_t count, int64_t width,
                   int64_t group, float *out);
  /// scores[h·scoreStride + t] = q[h] · keys[t] for h < heads, t < count;
  /// q [heads][width].
  void (*score)(const float *q, int64_t heads, TileRows keys, int64_t count,
                int64_t width, float *scores, int64_t scoreStride);
  /// score's result from bf16 q [heads][width] and bf16 keys by AMX tiles
  /// (exact products, fp32 sums) for heads and count multiples of 16 and
  /// width of 32; null where the instruction set has none.
  void (*scoreAmx)(const uint16_t *q, int64_t heads, TileRows keys,
                   int64_t count, int64_t width, float *scores,
                   int64_t scoreStride);
  /// x[i] ·= scale (· factors[i] where given) for i < n; returns their max.
  float (*scaleMax)(float *x, int64_t n, float scale, const float *factors);
  /// x[i] = exp(x[i] − shift) for i < n; returns their sum. Then, where
  /// given, x[i] ·= factors[i].
  float (*expSum)(float *x, int64_t n, float shift, const float *factors);
  /// acc[h][e] += Σ_t weights[h·weightStride + t] · values[t][e] for
  /// h < heads, e < width, t < count.
  void (*mix)(const float *weights, int64_t weightStride, int64_t heads,
              TileRows values, int64_t count, int64_t width, float *acc);
};

/// The kernels of each instruction set; the caller checks that the CPU
/// supports it (AttentionTilesAvx2.cpp, AttentionTilesAvx512.cpp: compiled
/// with function-level targets, so the binary runs on any x86-64 host).
const TileKernels &avx2TileKernels();
const TileKernels &avx512TileKernels();
const TileKernels &avx512AmxTileKernels();

inline const TileKernels &tileKernels(VectorIsa isa) {
  switch (isa) {
  case VectorIsa::avx512amx:
    return avx512AmxTileKernels();
  case VectorIsa::avx512:
    return avx512TileKernels();
  case VectorIsa::avx2:
    break;
  }
  return avx2TileKernels();
}

} // namespace moe::host
