// AVX2 + FMA tiles: 8 fp32 lanes.
#include "runtime/host/AttentionTiles.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#define MOE_AVX2 __attribute__((target("avx2,fma")))
// Helpers inline into their callers, so their vectors stay in registers.
#define MOE_AVX2_INLINE MOE_AVX2 inline __attribute__((always_inline))

namespace moe::host {
namespace {

MOE_AVX2_INLINE __m256 bf16x8(const uint8_t *p) {
  __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

// E4M3 codes as fp32 bits (sign to bit 31, exponent and mantissa to bits
// 20-26): the value times 2^-120, subnormal codes included. Sign-extended,
// a code's bits 7-31 are all its sign, so one mask keeps bit 31.
MOE_AVX2_INLINE __m256 fp8x8(const uint8_t *p) {
  __m256i x = _mm256_cvtepi8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)));
  return _mm256_castsi256_ps(_mm256_and_si256(
      _mm256_slli_epi32(x, 20), _mm256_set1_epi32(int(0x87F00000u))));
}

MOE_AVX2_INLINE float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) for x ≤ 88: Cody-Waite reduction by ln 2 and Cephes' degree-6
// polynomial, within 2 ulp; x below −87.3 gives 2^-126·e^r (≈ 0).
MOE_AVX2_INLINE __m256 exp8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  __m256 e = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r),
                             _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i power = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(e, _mm256_castsi256_ps(power));
}

MOE_AVX2 void widenFp8(const uint8_t *codes, const uint8_t *scales,
                       int64_t rowBytes, int64_t count, int64_t width,
                       int64_t group, float *out) {
  const __m256 unbias = _mm256_set1_ps(0x1p120f);
  for (int64_t t = 0; t < count; ++t) {
    const uint8_t *row = codes + t * rowBytes;
    const uint8_t *rowScales = scales + t * rowBytes;
    float *to = out + t * width;
    for (int64_t first = 0; first < width; first += group) {
      float groupScale;
      std::memcpy(&groupScale, rowScales, sizeof groupScale);
      rowScales += sizeof groupScale;
      __m256 scale = _mm256_set1_ps(groupScale);
      for (int64_t e = first; e < first + group; e += 8) {
        __m256 value = _mm256_mul_ps(fp8x8(row + e), unbias);
        _mm256_storeu_ps(to + e, _mm256_mul_ps(value, scale));
      }
    }
  }
}

// Row sources: load(t, e) gives elements [e, e + 8) of row t.
struct Fp32Rows {
  const uint8_t *base;
  int64_t stride;
  MOE_AVX2_INLINE __m256 load(int64_t t, int64_t e) const {
    return _mm256_loadu_ps(reinterpret_cast<const float *>(base + t * stride) +
                           e);
  }
};
struct Bf16Rows {
  const uint8_t *base;
  int64_t stride;
  MOE_AVX2_INLINE __m256 load(int64_t t, int64_t e) const {
    return bf16x8(base + t * stride + 2 * e);
  }
};
struct Fp8Rows {
  const uint8_t *base;
  int64_t stride;
  MOE_AVX2_INLINE __m256 load(int64_t t, int64_t e) const {
    return _mm256_mul_ps(fp8x8(base + t * stride + e),
                         _mm256_set1_ps(0x1p120f));
  }
};

// The sums of 8 vectors' lanes: lane i holds a[i]'s.
MOE_AVX2_INLINE __m256 sum8x8(const __m256 (&a)[8]) {
  __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
  __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
  // 128-bit lane l of s0123: the sums of a[0..3] over lane l of each.
  __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                       _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// Scores of H heads × T tokens from [t, t + T) (H·T ≤ 8): each key vector
// converted once for the H heads, the dot products reduced together;
// scores[h·scoreStride + j] = lane h·T + j of sum8x8.
template <int H, int T, typename Rows>
MOE_AVX2_INLINE void scoreBlock(const float *q, const Rows &keys, int64_t t,
                                int64_t width, float *scores,
                                int64_t scoreStride) {
  static_assert(H * T <= 8);
  __m256 a[8];
  for (__m256 &v : a)
    v = _mm256_setzero_ps();
  for (int64_t e = 0; e < width; e += 8) {
    __m256 k[T];
    for (int j = 0; j < T; ++j)
      k[j] = keys.load(t + j, e);
    for (int h = 0; h < H; ++h) {
      __m256 qv = _mm256_loadu_ps(q + h * width + e);
      for (int j = 0; j < T; ++j)
        a[T * h + j] = _mm256_fmadd_ps(qv, k[j], a[T * h + j]);
    }
  }
  alignas(32) float sums[8];
  _mm256_store_ps(sums, sum8x8(a));
  for (int h = 0; h < H; ++h)
    std::memcpy(scores + h * scoreStride + t, sums + T * h, T * sizeof(float));
}

// Heads [h, h + H·⌊(heads − h) / H⌋) by blocks of H heads × 8 / H tokens,
// the tokens past the last whole block by blocks of H × 1; returns the
// first head left.
template <int H, typename Rows>
MOE_AVX2_INLINE int64_t scoreHeads(const float *q, int64_t h, int64_t heads,
                                   const Rows &keys, int64_t count,
                                   int64_t width, float *scores,
                                   int64_t scoreStride) {
  constexpr int T = 8 / H;
  int64_t blocked = count / T * T;
  for (; h + H <= heads; h += H) {
    const float *qh = q + h * width;
    float *sh = scores + h * scoreStride;
    for (int64_t t = 0; t < blocked; t += T)
      scoreBlock<H, T>(qh, keys, t, width, sh, scoreStride);
    for (int64_t t = blocked; t < count; ++t)
      scoreBlock<H, 1>(qh, keys, t, width, sh, scoreStride);
  }
  return h;
}

// Blocks of 4 heads × 2 tokens, then of 2 × 4 and 1 × 8 for the heads left.
template <typename Rows>
MOE_AVX2_INLINE void scoreRows(const float *q, int64_t heads, const Rows &keys,
                               int64_t count, int64_t width, float *scores,
                               int64_t scoreStride) {
  int64_t h =
      scoreHeads<4>(q, 0, heads, keys, count, width, scores, scoreStride);
  h = scoreHeads<2>(q, h, heads, keys, count, width, scores, scoreStride);
  scoreHeads<1>(q, h, heads, keys, count, width, scores, scoreStride);
}

MOE_AVX2 void score(const float *q, int64_t heads, TileRows keys, int64_t count,
                    int64_t width, float *scores, int64_t scoreStride) {
  switch (keys.format) {
  case RowFormat::fp32:
    return scoreRows(q, heads, Fp32Rows{keys.base, keys.strideBytes}, count,
                     width, scores, scoreStride);
  case RowFormat::bf16:
    return scoreRows(q, heads, Bf16Rows{keys.base, keys.strideBytes}, count,
                     width, scores, scoreStride);
  case RowFormat::fp8Codes:
    return scoreRows(q, heads, Fp8Rows{keys.base, keys.strideBytes}, count,
                     width, scores, scoreStride);
  }
}

MOE_AVX2 float scaleMax(float *x, int64_t n, float scale,
                        const float *factors) {
  __m256 top = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(scale));
    if (factors)
      v = _mm256_mul_ps(v, _mm256_loadu_ps(factors + i));
    _mm256_storeu_ps(x + i, v);
    top = _mm256_max_ps(top, v);
  }
  __m128 m =
      _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  float most = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  for (; i < n; ++i) {
    x[i] = x[i] * scale * (factors ? factors[i] : 1.0f);
    most = std::max(most, x[i]);
  }
  return most;
}

MOE_AVX2 float expSum(float *x, int64_t n, float shift, const float *factors) {
  __m256 total = _mm256_setzero_ps();
  __m256 s = _mm256_set1_ps(shift);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    total = _mm256_add_ps(total, e);
    if (factors)
      e = _mm256_mul_ps(e, _mm256_loadu_ps(factors + i));
    _mm256_storeu_ps(x + i, e);
  }
  float sum = sum8(total);
  for (; i < n; ++i) {
    float e = std::exp(x[i] - shift);
    sum += e;
    x[i] = factors ? e * factors[i] : e;
  }
  return sum;
}

// acc[h][e, e + 8·V) for H heads: each value vector converted once for H
// heads, H·V accumulators (at most 8) in registers.
template <int H, int V, typename Rows>
MOE_AVX2_INLINE void mixBlock(const float *weights, int64_t weightStride,
                              const Rows &values, int64_t e, int64_t count,
                              int64_t width, float *acc) {
  __m256 a[H][V];
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < V; ++i)
      a[h][i] = _mm256_loadu_ps(acc + h * width + e + 8 * i);
  for (int64_t t = 0; t < count; ++t) {
    __m256 v[V];
    for (int i = 0; i < V; ++i)
      v[i] = values.load(t, e + 8 * i);
    for (int h = 0; h < H; ++h) {
      __m256 p = _mm256_broadcast_ss(weights + h * weightStride + t);
      for (int i = 0; i < V; ++i)
        a[h][i] = _mm256_fmadd_ps(p, v[i], a[h][i]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < V; ++i)
      _mm256_storeu_ps(acc + h * width + e + 8 * i, a[h][i]);
}

// Heads [h, h + H·⌊(heads − h) / H⌋) in blocks of H heads × 8 / H vectors
// (4 for single heads), the rest of each row a vector at a time; returns
// the first head left.
template <int H, typename Rows>
MOE_AVX2_INLINE int64_t mixHeads(const float *weights, int64_t weightStride,
                                 int64_t h, int64_t heads, const Rows &values,
                                 int64_t count, int64_t width, float *acc) {
  constexpr int V = H >= 2 ? 8 / H : 4;
  int64_t vectors = width / 8, blocked = vectors / V * V;
  for (; h + H <= heads; h += H) {
    const float *w = weights + h * weightStride;
    float *a = acc + h * width;
    for (int64_t i = 0; i < blocked; i += V)
      mixBlock<H, V>(w, weightStride, values, 8 * i, count, width, a);
    for (int64_t i = blocked; i < vectors; ++i)
      mixBlock<H, 1>(w, weightStride, values, 8 * i, count, width, a);
  }
  return h;
}

// The widest block of heads the heads fill, as for the scores.
template <typename Rows>
MOE_AVX2_INLINE void mixRows(const float *weights, int64_t weightStride,
                             int64_t heads, const Rows &values, int64_t count,
                             int64_t width, float *acc) {
  int64_t h =
      mixHeads<4>(weights, weightStride, 0, heads, values, count, width, acc);
  h = mixHeads<2>(weights, weightStride, h, heads, values, count, width, acc);
  mixHeads<1>(weights, weightStride, h, heads, values, count, width, acc);
}

MOE_AVX2 void mix(const float *weights, int64_t weightStride, int64_t heads,
                  TileRows values, int64_t count, int64_t width, float *acc) {
  switch (values.format) {
  case RowFormat::fp32:
    return mixRows(weights, weightStride, heads,
                   Fp32Rows{values.base, values.strideBytes}, count, width,
                   acc);
  case RowFormat::bf16:
    return mixRows(weights, weightStride, heads,
                   Bf16Rows{values.base, values.strideBytes}, count, width,
                   acc);
  case RowFormat::fp8Codes:
    return mixRows(weights, weightStride, heads,
                   Fp8Rows{values.base, values.strideBytes}, count, width, acc);
  }
}

} // namespace

const TileKernels &avx2TileKernels() {
  static const TileKernels kernels{widenFp8, score,  nullptr,
                                   scaleMax, expSum, mix};
  return kernels;
}

} // namespace moe::host
