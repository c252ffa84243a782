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

template <typename Rows>
MOE_AVX2_INLINE void scoreRows(const float *q, int64_t heads, const Rows &keys,
                               int64_t count, int64_t width, float *scores,
                               int64_t scoreStride) {
  for (int64_t h = 0; h < heads; ++h) {
    const float *qh = q + h * width;
    float *out = scores + h * scoreStride;
    int64_t t = 0;
    // Four tokens at a time: four independent FMA chains per q load.
    for (; t + 4 <= count; t += 4) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t e = 0; e < width; e += 8) {
        __m256 qv = _mm256_loadu_ps(qh + e);
        a0 = _mm256_fmadd_ps(qv, keys.load(t, e), a0);
        a1 = _mm256_fmadd_ps(qv, keys.load(t + 1, e), a1);
        a2 = _mm256_fmadd_ps(qv, keys.load(t + 2, e), a2);
        a3 = _mm256_fmadd_ps(qv, keys.load(t + 3, e), a3);
      }
      out[t] = sum8(a0);
      out[t + 1] = sum8(a1);
      out[t + 2] = sum8(a2);
      out[t + 3] = sum8(a3);
    }
    for (; t < count; ++t) {
      __m256 a = _mm256_setzero_ps();
      for (int64_t e = 0; e < width; e += 8)
        a = _mm256_fmadd_ps(_mm256_loadu_ps(qh + e), keys.load(t, e), a);
      out[t] = sum8(a);
    }
  }
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

template <typename Rows>
MOE_AVX2_INLINE void mixRows(const float *weights, int64_t weightStride,
                             int64_t heads, const Rows &values, int64_t count,
                             int64_t width, float *acc) {
  for (int64_t h = 0; h < heads; ++h) {
    const float *w = weights + h * weightStride;
    float *a = acc + h * width;
    int64_t e = 0;
    // 32 outputs at a time: four independent FMA chains per weight.
    for (; e + 32 <= width; e += 32) {
      __m256 a0 = _mm256_loadu_ps(a + e), a1 = _mm256_loadu_ps(a + e + 8),
             a2 = _mm256_loadu_ps(a + e + 16), a3 = _mm256_loadu_ps(a + e + 24);
      for (int64_t t = 0; t < count; ++t) {
        __m256 p = _mm256_broadcast_ss(w + t);
        a0 = _mm256_fmadd_ps(p, values.load(t, e), a0);
        a1 = _mm256_fmadd_ps(p, values.load(t, e + 8), a1);
        a2 = _mm256_fmadd_ps(p, values.load(t, e + 16), a2);
        a3 = _mm256_fmadd_ps(p, values.load(t, e + 24), a3);
      }
      _mm256_storeu_ps(a + e, a0);
      _mm256_storeu_ps(a + e + 8, a1);
      _mm256_storeu_ps(a + e + 16, a2);
      _mm256_storeu_ps(a + e + 24, a3);
    }
    for (; e < width; e += 8) {
      __m256 a0 = _mm256_loadu_ps(a + e);
      for (int64_t t = 0; t < count; ++t)
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + t), values.load(t, e), a0);
      _mm256_storeu_ps(a + e, a0);
    }
  }
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
