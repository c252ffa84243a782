// AVX-512 (F, BW, VL) tiles: 16 fp32 lanes, a masked half vector for widths
// that are an odd multiple of 8; with AVX-512-BF16, scores over bf16 keys by
// bf16 dot products, or by AMX tiles for 16 heads × 16 keys at a time.
#include "runtime/host/AttentionTiles.h"

#include <immintrin.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <cmath>
#include <cstring>

#define MOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define MOE_AVX512_BF16                                                        \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))
// Helpers inline into their callers, so their vector arrays stay in registers.
#define MOE_AVX512_INLINE MOE_AVX512 inline __attribute__((always_inline))
#define MOE_AVX512_BF16_INLINE                                                 \
  MOE_AVX512_BF16 inline __attribute__((always_inline))
#define MOE_AMX                                                                \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,"       \
                        "amx-tile,amx-bf16")))

namespace moe::host {
namespace {

// Lanes of the 16-wide step at element e of width (8 or 16).
MOE_AVX512_INLINE __mmask16 lanes(int64_t e, int64_t width) {
  return e + 16 <= width ? __mmask16(0xFFFF) : __mmask16(0x00FF);
}

MOE_AVX512_INLINE __m512 bf16x16(const uint8_t *p, __mmask16 mask) {
  __m256i raw = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// E4M3 codes as fp32 bits (sign to bit 31, exponent and mantissa to bits
// 20-26): the value times 2^-120, subnormal codes included. Sign-extended,
// a code's bits 7-31 are all its sign, so one mask keeps bit 31.
MOE_AVX512_INLINE __m512 fp8x16(const uint8_t *p, __mmask16 mask) {
  __m512i x = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, p));
  return _mm512_castsi512_ps(_mm512_and_si512(
      _mm512_slli_epi32(x, 20), _mm512_set1_epi32(int(0x87F00000u))));
}

// exp(x) for x ≤ 88: Cody-Waite reduction by ln 2 and Cephes' degree-6
// polynomial, within 2 ulp; x below −87.3 gives 2^-126·e^r (≈ 0).
MOE_AVX512_INLINE __m512 exp16(__m512 x) {
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

MOE_AVX512 void widenFp8(const uint8_t *codes, const uint8_t *scales,
                         int64_t rowBytes, int64_t count, int64_t width,
                         int64_t group, float *out) {
  const __m512 unbias = _mm512_set1_ps(0x1p120f);
  for (int64_t t = 0; t < count; ++t) {
    const uint8_t *row = codes + t * rowBytes;
    const uint8_t *rowScales = scales + t * rowBytes;
    float *to = out + t * width;
    for (int64_t first = 0; first < width; first += group) {
      float groupScale;
      std::memcpy(&groupScale, rowScales, sizeof groupScale);
      rowScales += sizeof groupScale;
      __m512 scale = _mm512_set1_ps(groupScale);
      for (int64_t e = first; e < first + group; e += 16) {
        __mmask16 m = lanes(e - first, group);
        __m512 value = _mm512_mul_ps(fp8x16(row + e, m), unbias);
        _mm512_mask_storeu_ps(to + e, m, _mm512_mul_ps(value, scale));
      }
    }
  }
}

// Row sources: load(t, e, lanes) gives elements [e, e + 16) of row t.
struct Fp32Rows {
  const uint8_t *base;
  int64_t stride;
  MOE_AVX512_INLINE __m512 load(int64_t t, int64_t e, __mmask16 m) const {
    return _mm512_maskz_loadu_ps(
        m, reinterpret_cast<const float *>(base + t * stride) + e);
  }
};
struct Bf16Rows {
  const uint8_t *base;
  int64_t stride;
  MOE_AVX512_INLINE __m512 load(int64_t t, int64_t e, __mmask16 m) const {
    return bf16x16(base + t * stride + 2 * e, m);
  }
};
struct Fp8Rows {
  const uint8_t *base;
  int64_t stride;
  MOE_AVX512_INLINE __m512 load(int64_t t, int64_t e, __mmask16 m) const {
    return _mm512_mul_ps(fp8x16(base + t * stride + e, m),
                         _mm512_set1_ps(0x1p120f));
  }
};

// The sums of 16 vectors' lanes, 4 per 128-bit lane: lane k holds those of
// a[4k], ..., a[4k + 3].
MOE_AVX512_INLINE __m512 sum16(const __m512 (&a)[16]) {
  __m512 u[8], w[4];
  for (int i = 0; i < 8; ++i)
    u[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    w[i] = _mm512_add_ps(
        _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
        _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  __m512 x01 =
      _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)),
                    _mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
  __m512 x23 =
      _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(2, 0, 2, 0)),
                    _mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(x01, x23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(x01, x23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// Rows of sum16's lanes: scores[h·scoreStride + j] = lane 4h + j.
MOE_AVX512_INLINE void store4x4(__m512 sums, float *scores,
                                int64_t scoreStride) {
  _mm_storeu_ps(scores, _mm512_extractf32x4_ps(sums, 0));
  _mm_storeu_ps(scores + scoreStride, _mm512_extractf32x4_ps(sums, 1));
  _mm_storeu_ps(scores + 2 * scoreStride, _mm512_extractf32x4_ps(sums, 2));
  _mm_storeu_ps(scores + 3 * scoreStride, _mm512_extractf32x4_ps(sums, 3));
}

// Scores of 4 heads × tokens [t, t + 4): each key vector converted once for
// 4 heads, the 16 dot products reduced together.
template <typename Rows>
MOE_AVX512_INLINE void score4x4(const float *q, const Rows &keys, int64_t t,
                                int64_t width, float *scores,
                                int64_t scoreStride) {
  __m512 a[16];
  for (__m512 &v : a)
    v = _mm512_setzero_ps();
  for (int64_t e = 0; e < width; e += 16) {
    __mmask16 m = lanes(e, width);
    __m512 k[4], qv[4];
    for (int i = 0; i < 4; ++i) {
      k[i] = keys.load(t + i, e, m);
      qv[i] = _mm512_maskz_loadu_ps(m, q + i * width + e);
    }
    for (int h = 0; h < 4; ++h)
      for (int j = 0; j < 4; ++j)
        a[4 * h + j] = _mm512_fmadd_ps(qv[h], k[j], a[4 * h + j]);
  }
  store4x4(sum16(a), scores + t, scoreStride);
}

template <typename Rows>
MOE_AVX512_INLINE float scoreOne(const float *q, const Rows &keys, int64_t t,
                                 int64_t width) {
  __m512 a = _mm512_setzero_ps();
  for (int64_t e = 0; e < width; e += 16) {
    __mmask16 m = lanes(e, width);
    a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + e), keys.load(t, e, m), a);
  }
  return _mm512_reduce_add_ps(a);
}

template <typename Rows>
MOE_AVX512_INLINE void scoreRows(const float *q, int64_t heads,
                                 const Rows &keys, int64_t count, int64_t width,
                                 float *scores, int64_t scoreStride) {
  int64_t h = 0, blocked = count / 4 * 4;
  for (; h + 4 <= heads; h += 4) {
    for (int64_t t = 0; t < blocked; t += 4)
      score4x4(q + h * width, keys, t, width, scores + h * scoreStride,
               scoreStride);
    for (int64_t i = h; i < h + 4; ++i)
      for (int64_t t = blocked; t < count; ++t)
        scores[i * scoreStride + t] = scoreOne(q + i * width, keys, t, width);
  }
  for (; h < heads; ++h)
    for (int64_t t = 0; t < count; ++t)
      scores[h * scoreStride + t] = scoreOne(q + h * width, keys, t, width);
}

MOE_AVX512 void score(const float *q, int64_t heads, TileRows keys,
                      int64_t count, int64_t width, float *scores,
                      int64_t scoreStride) {
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

// Scores of 4 heads × tokens [t, t + 4) from bf16 q and keys, 32 elements
// (16 pairs) per dot-product instruction.
MOE_AVX512_BF16_INLINE void scoreBf16x4x4(const uint16_t *q,
                                          const uint8_t *keys, int64_t stride,
                                          int64_t width, float *scores,
                                          int64_t scoreStride) {
  __m512 a[16];
  for (__m512 &v : a)
    v = _mm512_setzero_ps();
  for (int64_t e = 0; e < width; e += 32) {
    __mmask32 m =
        width - e >= 32 ? ~__mmask32(0) : (__mmask32(1) << (width - e)) - 1;
    __m512bh k[4], qv[4];
    for (int i = 0; i < 4; ++i) {
      k[i] = (__m512bh)_mm512_maskz_loadu_epi16(m, keys + i * stride + 2 * e);
      qv[i] = (__m512bh)_mm512_maskz_loadu_epi16(m, q + i * width + e);
    }
    for (int h = 0; h < 4; ++h)
      for (int j = 0; j < 4; ++j)
        a[4 * h + j] = _mm512_dpbf16_ps(a[4 * h + j], qv[h], k[j]);
  }
  store4x4(sum16(a), scores, scoreStride);
}

MOE_AVX512_BF16_INLINE float scoreBf16One(const uint16_t *q, const uint8_t *key,
                                          int64_t width) {
  __m512 a = _mm512_setzero_ps();
  for (int64_t e = 0; e < width; e += 32) {
    __mmask32 m =
        width - e >= 32 ? ~__mmask32(0) : (__mmask32(1) << (width - e)) - 1;
    a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_maskz_loadu_epi16(m, q + e),
                         (__m512bh)_mm512_maskz_loadu_epi16(m, key + 2 * e));
  }
  return _mm512_reduce_add_ps(a);
}

// AMX tiles: Linux grants a process their state (8 KiB a thread) on request.
bool amxGranted() {
  static const bool granted =
      cpuFeatures().amxBf16 &&
      syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
              18 /* XFEATURE_XTILEDATA */) == 0;
  return granted;
}

// Tiles 0-2 of 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, startRow = 0, reserved[14] = {};
  uint16_t rowBytes[16] = {64, 64, 64};
  uint8_t rows[16] = {16, 16, 16};
};

// rows[i] = the i-th dwords of the 16 rows: a 16 × 16 transpose.
MOE_AMX inline __attribute__((always_inline)) void
transpose16(__m512i (&r)[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  // r[4i + c], 128-bit lane l: dword 4l + c of rows 4i, ..., 4i + 3.
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    __m512i a = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88);
    __m512i b = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xDD);
    __m512i d = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88);
    __m512i f = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xDD);
    t[c] = _mm512_shuffle_i32x4(a, d, 0x88);
    t[8 + c] = _mm512_shuffle_i32x4(a, d, 0xDD);
    t[4 + c] = _mm512_shuffle_i32x4(b, f, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(b, f, 0xDD);
  }
  for (int i = 0; i < 16; ++i)
    r[i] = t[i];
}

// Scores of 16 heads × 16 bf16 keys by AMX: per 32 elements, A = the heads'
// q (16 rows of 16 pairs) and B = the keys' pairs transposed (row i: pair i
// of each key).
MOE_AMX void scoreAmx(const uint16_t *q, int64_t heads, const uint8_t *keys,
                      int64_t stride, int64_t count, int64_t width,
                      float *scores, int64_t scoreStride) {
  static const TileConfig config;
  alignas(64) __m512i pairs[16];
  _tile_loadconfig(&config);
  for (int64_t t = 0; t < count; t += 16)
    for (int64_t h = 0; h < heads; h += 16) {
      _tile_zero(0);
      for (int64_t e = 0; e < width; e += 32) {
        __m512i r[16];
        for (int i = 0; i < 16; ++i)
          r[i] = _mm512_loadu_si512(keys + (t + i) * stride + 2 * e);
        transpose16(r);
        for (int i = 0; i < 16; ++i)
          _mm512_store_si512(pairs + i, r[i]);
        _tile_loadd(1, q + h * width + e, 2 * width);
        _tile_loadd(2, pairs, 64);
        _tile_dpbf16ps(0, 1, 2);
      }
      _tile_stored(0, scores + h * scoreStride + t, 4 * scoreStride);
    }
  _tile_release();
}

MOE_AVX512_BF16 void scoreBf16(const uint16_t *q, int64_t heads, TileRows keys,
                               int64_t count, int64_t width, float *scores,
                               int64_t scoreStride) {
  const uint8_t *base = keys.base;
  int64_t stride = keys.strideBytes;
  if (heads % 16 == 0 && count % 16 == 0 && width % 32 == 0 && amxGranted())
    return scoreAmx(q, heads, base, stride, count, width, scores, scoreStride);
  int64_t h = 0, blocked = count / 4 * 4;
  for (; h + 4 <= heads; h += 4) {
    for (int64_t t = 0; t < blocked; t += 4)
      scoreBf16x4x4(q + h * width, base + t * stride, stride, width,
                    scores + h * scoreStride + t, scoreStride);
    for (int64_t i = h; i < h + 4; ++i)
      for (int64_t t = blocked; t < count; ++t)
        scores[i * scoreStride + t] =
            scoreBf16One(q + i * width, base + t * stride, width);
  }
  for (; h < heads; ++h)
    for (int64_t t = 0; t < count; ++t)
      scores[h * scoreStride + t] =
          scoreBf16One(q + h * width, base + t * stride, width);
}

// Lanes of the step at i of n.
MOE_AVX512_INLINE __mmask16 tail(int64_t i, int64_t n) {
  return n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
}

MOE_AVX512 float scaleMax(float *x, int64_t n, float scale,
                          const float *factors) {
  __m512 top = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail(i, n);
    __m512 v =
        _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_set1_ps(scale));
    if (factors)
      v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, factors + i));
    _mm512_mask_storeu_ps(x + i, m, v);
    top = _mm512_mask_max_ps(top, m, top, v);
  }
  return _mm512_reduce_max_ps(top);
}

MOE_AVX512 float expSum(float *x, int64_t n, float shift,
                        const float *factors) {
  __m512 total = _mm512_setzero_ps();
  __m512 s = _mm512_set1_ps(shift);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 m = tail(i, n);
    __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s));
    total = _mm512_mask_add_ps(total, m, total, e);
    if (factors)
      e = _mm512_mul_ps(e, _mm512_maskz_loadu_ps(m, factors + i));
    _mm512_mask_storeu_ps(x + i, m, e);
  }
  return _mm512_reduce_add_ps(total);
}

// acc[h][e, e + 16·V) for H heads: each value vector converted once for H
// heads.
template <int H, int V, typename Rows>
MOE_AVX512_INLINE void mixBlock(const float *weights, int64_t weightStride,
                                const Rows &values, int64_t e, int64_t count,
                                int64_t width, float *acc) {
  __m512 a[H][V];
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < V; ++i)
      a[h][i] = _mm512_loadu_ps(acc + h * width + e + 16 * i);
  for (int64_t t = 0; t < count; ++t) {
    __m512 v[V];
    for (int i = 0; i < V; ++i)
      v[i] = values.load(t, e + 16 * i, 0xFFFF);
    for (int h = 0; h < H; ++h) {
      __m512 p = _mm512_set1_ps(weights[h * weightStride + t]);
      for (int i = 0; i < V; ++i)
        a[h][i] = _mm512_fmadd_ps(p, v[i], a[h][i]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < V; ++i)
      _mm512_storeu_ps(acc + h * width + e + 16 * i, a[h][i]);
}

// acc[first, width) for one head.
template <typename Rows>
MOE_AVX512_INLINE void mixOne(const float *w, const Rows &values, int64_t count,
                              int64_t first, int64_t width, float *acc) {
  for (int64_t e = first; e < width; e += 16) {
    __mmask16 m = lanes(e, width);
    __m512 sum = _mm512_maskz_loadu_ps(m, acc + e);
    for (int64_t t = 0; t < count; ++t)
      sum = _mm512_fmadd_ps(_mm512_set1_ps(w[t]), values.load(t, e, m), sum);
    _mm512_mask_storeu_ps(acc + e, m, sum);
  }
}

// Heads [h, h + H·⌊(heads − h) / H⌋) in blocks of H × 16·V elements, the
// rest of each row by mixOne; returns the first head left.
template <int H, int V, typename Rows>
MOE_AVX512_INLINE int64_t mixHeads(const float *weights, int64_t weightStride,
                                   int64_t h, int64_t heads, const Rows &values,
                                   int64_t count, int64_t width, float *acc) {
  int64_t blocked = width / (16 * V) * (16 * V);
  for (; h + H <= heads; h += H) {
    for (int64_t e = 0; e < blocked; e += 16 * V)
      mixBlock<H, V>(weights + h * weightStride, weightStride, values, e, count,
                     width, acc + h * width);
    for (int64_t i = h; i < h + H; ++i)
      mixOne(weights + i * weightStride, values, count, blocked, width,
             acc + i * width);
  }
  return h;
}

// MLA's 16 heads share each latent row: 16 heads × 16 elements per block
// convert each vector once for all of them; GQA's groups of 4 heads take
// 4 × 32.
template <typename Rows>
MOE_AVX512_INLINE void mixRows(const float *weights, int64_t weightStride,
                               int64_t heads, const Rows &values, int64_t count,
                               int64_t width, float *acc) {
  int64_t h = mixHeads<16, 1>(weights, weightStride, 0, heads, values, count,
                              width, acc);
  h = mixHeads<4, 2>(weights, weightStride, h, heads, values, count, width,
                     acc);
  for (; h < heads; ++h)
    mixOne(weights + h * weightStride, values, count, 0, width,
           acc + h * width);
}

MOE_AVX512 void mix(const float *weights, int64_t weightStride, int64_t heads,
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

const TileKernels &avx512TileKernels() {
  static const TileKernels kernels{widenFp8, score,  nullptr,
                                   scaleMax, expSum, mix};
  return kernels;
}

const TileKernels &avx512Bf16TileKernels() {
  static const TileKernels kernels{widenFp8, score,  scoreBf16,
                                   scaleMax, expSum, mix};
  return kernels;
}

} // namespace moe::host
