// AVX-512 (F, BW, VL) tiles: 16 fp32 lanes, a masked half vector for widths
// that are an odd multiple of 8.
#include "runtime/host/AttentionTiles.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>

#define MOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

namespace moe::host {
namespace {

// Lanes of the 16-wide step at element e of width (8 or 16).
MOE_AVX512 inline __mmask16 lanes(int64_t e, int64_t width) {
  return e + 16 <= width ? __mmask16(0xFFFF) : __mmask16(0x00FF);
}

MOE_AVX512 inline __m512 bf16x16(const uint8_t *p, __mmask16 mask) {
  __m256i raw = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// E4M3 codes as fp32 bits (sign to bit 31, exponent and mantissa to bits
// 20-26): the value times 2^-120, subnormal codes included.
MOE_AVX512 inline __m512 fp8x16(const uint8_t *p, __mmask16 mask) {
  __m512i x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, p));
  __m512i magnitude =
      _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x7F)), 20);
  __m512i sign =
      _mm512_slli_epi32(_mm512_and_si512(x, _mm512_set1_epi32(0x80)), 24);
  return _mm512_castsi512_ps(_mm512_or_si512(magnitude, sign));
}

// exp(x) for x ≤ 88: Cody-Waite reduction by ln 2 and Cephes' degree-6
// polynomial, within 2 ulp; x below −87.3 gives 2^-126·e^r (≈ 0).
MOE_AVX512 inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  __m512 e = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r),
                             _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  __m512i power = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(e, _mm512_castsi512_ps(power));
}

MOE_AVX512 void widenBf16(const uint8_t *rows, int64_t rowBytes, int64_t count,
                          int64_t width, float *out) {
  for (int64_t t = 0; t < count; ++t) {
    const uint8_t *row = rows + t * rowBytes;
    for (int64_t e = 0; e < width; e += 16) {
      __mmask16 m = lanes(e, width);
      _mm512_mask_storeu_ps(out + t * width + e, m, bf16x16(row + 2 * e, m));
    }
  }
}

MOE_AVX512 void widenFp8(const uint8_t *codes, const uint8_t *scales,
                         int64_t rowBytes, int64_t count, int64_t width,
                         int64_t group, float *out) {
  const __m512 unbias = _mm512_set1_ps(0x1p120f);
  for (int64_t t = 0; t < count; ++t) {
    const uint8_t *row = codes + t * rowBytes;
    const uint8_t *rowScales = scales + t * rowBytes;
    for (int64_t e = 0; e < width; e += 16) {
      __mmask16 m = lanes(e, width);
      // Groups are multiples of 8 wide: each half has one scale.
      int64_t highGroup = m == 0xFFFF ? (e + 8) / group : e / group;
      float low, high;
      std::memcpy(&low, rowScales + e / group * 4, sizeof low);
      std::memcpy(&high, rowScales + highGroup * 4, sizeof high);
      __m512 scale = _mm512_castpd_ps(_mm512_insertf64x4(
          _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(low))),
          _mm256_castps_pd(_mm256_set1_ps(high)), 1));
      __m512 value = _mm512_mul_ps(fp8x16(row + e, m), unbias);
      _mm512_mask_storeu_ps(out + t * width + e, m,
                            _mm512_mul_ps(value, scale));
    }
  }
}

MOE_AVX512 void score(const float *q, int64_t heads, const float *keys,
                      int64_t count, int64_t width, float *scores,
                      int64_t scoreStride) {
  for (int64_t h = 0; h < heads; ++h) {
    const float *qh = q + h * width;
    float *out = scores + h * scoreStride;
    int64_t t = 0;
    // Four tokens at a time: four independent FMA chains per q load.
    for (; t + 4 <= count; t += 4) {
      const float *k = keys + t * width;
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t e = 0; e < width; e += 16) {
        __mmask16 m = lanes(e, width);
        __m512 qv = _mm512_maskz_loadu_ps(m, qh + e);
        a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k + e), a0);
        a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k + width + e), a1);
        a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k + 2 * width + e),
                             a2);
        a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, k + 3 * width + e),
                             a3);
      }
      out[t] = _mm512_reduce_add_ps(a0);
      out[t + 1] = _mm512_reduce_add_ps(a1);
      out[t + 2] = _mm512_reduce_add_ps(a2);
      out[t + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; t < count; ++t) {
      __m512 a = _mm512_setzero_ps();
      for (int64_t e = 0; e < width; e += 16) {
        __mmask16 m = lanes(e, width);
        a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, qh + e),
                            _mm512_maskz_loadu_ps(m, keys + t * width + e), a);
      }
      out[t] = _mm512_reduce_add_ps(a);
    }
  }
}

MOE_AVX512 float expSum(float *x, int64_t n, float shift) {
  __m512 total = _mm512_setzero_ps();
  __m512 s = _mm512_set1_ps(shift);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m =
        n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s));
    _mm512_mask_storeu_ps(x + i, m, e);
    total = _mm512_mask_add_ps(total, m, total, e);
  }
  return _mm512_reduce_add_ps(total);
}

MOE_AVX512 void mix(const float *weights, int64_t weightStride, int64_t heads,
                    const float *values, int64_t valueStride, int64_t count,
                    int64_t width, float *acc) {
  for (int64_t h = 0; h < heads; ++h) {
    const float *w = weights + h * weightStride;
    float *a = acc + h * width;
    int64_t e = 0;
    // 64 outputs at a time: four independent FMA chains per weight.
    for (; e + 64 <= width; e += 64) {
      __m512 a0 = _mm512_loadu_ps(a + e), a1 = _mm512_loadu_ps(a + e + 16),
             a2 = _mm512_loadu_ps(a + e + 32), a3 = _mm512_loadu_ps(a + e + 48);
      for (int64_t t = 0; t < count; ++t) {
        const float *v = values + t * valueStride + e;
        __m512 p = _mm512_set1_ps(w[t]);
        a0 = _mm512_fmadd_ps(p, _mm512_loadu_ps(v), a0);
        a1 = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16), a1);
        a2 = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 32), a2);
        a3 = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 48), a3);
      }
      _mm512_storeu_ps(a + e, a0);
      _mm512_storeu_ps(a + e + 16, a1);
      _mm512_storeu_ps(a + e + 32, a2);
      _mm512_storeu_ps(a + e + 48, a3);
    }
    for (; e < width; e += 16) {
      __mmask16 m = lanes(e, width);
      __m512 a0 = _mm512_maskz_loadu_ps(m, a + e);
      for (int64_t t = 0; t < count; ++t)
        a0 = _mm512_fmadd_ps(
            _mm512_set1_ps(w[t]),
            _mm512_maskz_loadu_ps(m, values + t * valueStride + e), a0);
      _mm512_mask_storeu_ps(a + e, m, a0);
    }
  }
}

} // namespace

const TileKernels &avx512TileKernels() {
  static const TileKernels kernels{widenBf16, widenFp8, score, expSum, mix};
  return kernels;
}

} // namespace moe::host
