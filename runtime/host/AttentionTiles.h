// The vector inner loops of host decode attention (DecodeAttention.h), one
// implementation per instruction set behind one table: widening a tile of
// cached rows to fp32, scoring a group of query heads against it, the
// softmax's exponentials and mixing the tile by the heads' weights. The
// driver keeps everything else (tiles, online softmax, splits, merging)
// scalar and shared. Widths are multiples of 8 elements.
#pragma once

#include <cstdint>

namespace moe::host {

struct TileKernels {
  /// out[t][e] = bf16 element e of row t, for `count` rows `rowBytes` apart
  /// and e < width.
  void (*widenBf16)(const uint8_t *rows, int64_t rowBytes, int64_t count,
                    int64_t width, float *out);
  /// out[t][e] = E4M3 code e of row t times the fp32 scale of its group:
  /// scales[e / group] of the same row (group a multiple of 8). A NaN code
  /// (never written: encoding saturates) reads as 480.
  void (*widenFp8)(const uint8_t *codes, const uint8_t *scales,
                   int64_t rowBytes, int64_t count, int64_t width,
                   int64_t group, float *out);
  /// scores[h·scoreStride + t] = q[h] · keys[t·keyStride, +width) for
  /// h < heads, t < count; q [heads][width].
  void (*score)(const float *q, int64_t heads, const float *keys,
                int64_t keyStride, int64_t count, int64_t width, float *scores,
                int64_t scoreStride);
  /// x[i] = exp(x[i] − shift) for i < n; returns their sum.
  float (*expSum)(float *x, int64_t n, float shift);
  /// acc[h][e] += Σ_t weights[h·weightStride + t] · values[t·valueStride + e]
  /// for h < heads, e < width, t < count.
  void (*mix)(const float *weights, int64_t weightStride, int64_t heads,
              const float *values, int64_t valueStride, int64_t count,
              int64_t width, float *acc);
};

/// The kernels of each instruction set; the caller checks that the CPU
/// supports it (AttentionTilesAvx2.cpp, AttentionTilesAvx512.cpp: compiled
/// with function-level targets, so the binary runs on any x86-64 host).
const TileKernels &avx2TileKernels();
const TileKernels &avx512TileKernels();

} // namespace moe::host
