// AVX-512 (F, BW, VL) tiles: 16 fp32 lanes, a masked half vector for widths
// that are an odd multiple of 8; with AMX, scores over bf16 keys for 16
// heads × 16 keys at a time. Products are fp32 FMAs on rows widened in
// registers: AVX-512-BF16's dot products retire at half the FMAs' rate of
// multiply-adds on the cores measured, so they are not used.
#include "runtime/host/AttentionTiles.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>

#define MOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
// Helpers inline into their callers, so their vector arrays stay in registers.
#define MOE_AVX512_INLINE MOE_AVX512 inline __attribute__((always_inline))
#define MOE_AMX                                                                \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,"       \
                        "amx-tile,amx-bf16")))

namespace moe::host {
namespace {

// Steps along a vector are whole (16 lanes) or, at the end of a width
// that is an odd multiple of 8, half: whole ones load without masks, so
// their loads fold into the FMAs that use them.
template <bool Whole> MOE_AVX512_INLINE __m512 loadPs(const float *p) {
  if constexpr (Whole)
    return _mm512_loadu_ps(p);
  else
    return _mm512_maskz_loadu_ps(0x00FF, p);
}

template <bool Whole> MOE_AVX512_INLINE void storePs(float *p, __m512 v) {
  if constexpr (Whole)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, 0x00FF, v);
}

template <bool Whole> MOE_AVX512_INLINE __m512 bf16x16(const uint8_t *p) {
  __m256i raw;
  if constexpr (Whole)
    raw = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
  else
    raw = _mm256_maskz_loadu_epi16(0x00FF, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// E4M3 codes as fp32 bits (sign to bit 31, exponent and mantissa to bits
// 20-26): the value times 2^-120, subnormal codes included. Sign-extended,
// a code's bits 7-31 are all its sign, so one mask keeps bit 31.
template <bool Whole> MOE_AVX512_INLINE __m512 fp8x16(const uint8_t *p) {
  __m128i codes;
  if constexpr (Whole)
    codes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
  else
    codes = _mm_maskz_loadu_epi8(0x00FF, p);
  __m512i x = _mm512_cvtepi8_epi32(codes);
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
      int64_t e = first;
      for (; e + 16 <= first + group; e += 16)
        storePs<true>(
            to + e,
            _mm512_mul_ps(_mm512_mul_ps(fp8x16<true>(row + e), unbias), scale));
      if (e < first + group)
        storePs<false>(
            to + e, _mm512_mul_ps(_mm512_mul_ps(fp8x16<false>(row + e), unbias),
                                  scale));
    }
  }
}

// Row sources: load<Whole>(t, e) gives elements [e, e + 16) of row t (the
// first 8 of them for a half step).
struct Fp32Rows {
  const uint8_t *base;
  int64_t stride;
  template <bool Whole>
  MOE_AVX512_INLINE __m512 load(int64_t t, int64_t e) const {
    return loadPs<Whole>(reinterpret_cast<const float *>(base + t * stride) +
                         e);
  }
};
struct Bf16Rows {
  const uint8_t *base;
  int64_t stride;
  template <bool Whole>
  MOE_AVX512_INLINE __m512 load(int64_t t, int64_t e) const {
    return bf16x16<Whole>(base + t * stride + 2 * e);
  }
};
struct Fp8Rows {
  const uint8_t *base;
  int64_t stride;
  template <bool Whole>
  MOE_AVX512_INLINE __m512 load(int64_t t, int64_t e) const {
    return _mm512_mul_ps(fp8x16<Whole>(base + t * stride + e),
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

// One step of scoreBlock: a[h·T + j] += q[h][e, e + 16) · key t + j's.
template <int H, int T, bool Whole, typename Rows>
MOE_AVX512_INLINE void scoreStep(const float *q, const Rows &keys, int64_t t,
                                 int64_t e, int64_t width, __m512 (&a)[16]) {
  __m512 k[T];
  for (int j = 0; j < T; ++j)
    k[j] = keys.template load<Whole>(t + j, e);
  for (int h = 0; h < H; ++h) {
    __m512 qv = loadPs<Whole>(q + h * width + e);
    for (int j = 0; j < T; ++j)
      a[T * h + j] = _mm512_fmadd_ps(qv, k[j], a[T * h + j]);
  }
}

// Scores of H heads × T tokens from [t, t + T) (H·T ≤ 16): each key
// vector converted once for the H heads, the dot products reduced
// together; scores[h·scoreStride + j] = lane h·T + j of sum16.
template <int H, int T, typename Rows>
MOE_AVX512_INLINE void scoreBlock(const float *q, const Rows &keys, int64_t t,
                                  int64_t width, float *scores,
                                  int64_t scoreStride) {
  static_assert(H * T <= 16);
  __m512 a[16];
  for (__m512 &v : a)
    v = _mm512_setzero_ps();
  int64_t e = 0;
  for (; e + 16 <= width; e += 16)
    scoreStep<H, T, true>(q, keys, t, e, width, a);
  if (e < width)
    scoreStep<H, T, false>(q, keys, t, e, width, a);
  alignas(64) float sums[16];
  _mm512_store_ps(sums, sum16(a));
  for (int h = 0; h < H; ++h)
    std::memcpy(scores + h * scoreStride + t, sums + T * h, T * sizeof(float));
}

// Heads [h, h + H·⌊(heads − h) / H⌋) by blocks of H heads × 16 / H
// tokens, the tokens past the last whole block by blocks of H × 1; returns
// the first head left.
template <int H, typename Rows>
MOE_AVX512_INLINE int64_t scoreHeads(const float *q, int64_t h, int64_t heads,
                                     const Rows &keys, int64_t count,
                                     int64_t width, float *scores,
                                     int64_t scoreStride) {
  constexpr int T = 16 / H;
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

// Blocks of 4 heads × 4 tokens, then of 2 × 8 and 1 × 16 for the heads
// left. Wider blocks of heads convert each key vector fewer times but load
// more query vectors per product, and measured slower.
template <typename Rows>
MOE_AVX512_INLINE void scoreRows(const float *q, int64_t heads,
                                 const Rows &keys, int64_t count, int64_t width,
                                 float *scores, int64_t scoreStride) {
  int64_t h =
      scoreHeads<4>(q, 0, heads, keys, count, width, scores, scoreStride);
  h = scoreHeads<2>(q, h, heads, keys, count, width, scores, scoreStride);
  scoreHeads<1>(q, h, heads, keys, count, width, scores, scoreStride);
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
MOE_AMX void scoreAmx(const uint16_t *q, int64_t heads, TileRows keyRows,
                      int64_t count, int64_t width, float *scores,
                      int64_t scoreStride) {
  const uint8_t *keys = keyRows.base;
  int64_t stride = keyRows.strideBytes;
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
// heads, H·V accumulators (at most 16) in registers; Whole false: one half
// vector, the last of a row.
template <int H, int V, bool Whole, typename Rows>
MOE_AVX512_INLINE void mixBlock(const float *weights, int64_t weightStride,
                                const Rows &values, int64_t e, int64_t count,
                                int64_t width, float *acc) {
  static_assert(Whole || V == 1);
  __m512 a[H][V];
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < V; ++i)
      a[h][i] = loadPs<Whole>(acc + h * width + e + 16 * i);
  for (int64_t t = 0; t < count; ++t) {
    __m512 v[V];
    for (int i = 0; i < V; ++i)
      v[i] = values.template load<Whole>(t, e + 16 * i);
    for (int h = 0; h < H; ++h) {
      __m512 p = _mm512_set1_ps(weights[h * weightStride + t]);
      for (int i = 0; i < V; ++i)
        a[h][i] = _mm512_fmadd_ps(p, v[i], a[h][i]);
    }
  }
  for (int h = 0; h < H; ++h)
    for (int i = 0; i < V; ++i)
      storePs<Whole>(acc + h * width + e + 16 * i, a[h][i]);
}

// Heads [h, h + H·⌊(heads − h) / H⌋) in blocks of H heads × 16 / H
// vectors (at most 8), the rest of each row a vector at a time; returns
// the first head left.
template <int H, typename Rows>
MOE_AVX512_INLINE int64_t mixHeads(const float *weights, int64_t weightStride,
                                   int64_t h, int64_t heads, const Rows &values,
                                   int64_t count, int64_t width, float *acc) {
  constexpr int V = H >= 2 ? 16 / H : 8;
  int64_t whole = width / 16, blocked = whole / V * V;
  for (; h + H <= heads; h += H) {
    const float *w = weights + h * weightStride;
    float *a = acc + h * width;
    for (int64_t i = 0; i < blocked; i += V)
      mixBlock<H, V, true>(w, weightStride, values, 16 * i, count, width, a);
    for (int64_t i = blocked; i < whole; ++i)
      mixBlock<H, 1, true>(w, weightStride, values, 16 * i, count, width, a);
    if (16 * whole < width)
      mixBlock<H, 1, false>(w, weightStride, values, 16 * whole, count, width,
                            a);
  }
  return h;
}

// The widest block of heads the heads fill, as for the scores.
template <typename Rows>
MOE_AVX512_INLINE void mixRows(const float *weights, int64_t weightStride,
                               int64_t heads, const Rows &values, int64_t count,
                               int64_t width, float *acc) {
  int64_t h =
      mixHeads<16>(weights, weightStride, 0, heads, values, count, width, acc);
  h = mixHeads<8>(weights, weightStride, h, heads, values, count, width, acc);
  h = mixHeads<4>(weights, weightStride, h, heads, values, count, width, acc);
  h = mixHeads<2>(weights, weightStride, h, heads, values, count, width, acc);
  mixHeads<1>(weights, weightStride, h, heads, values, count, width, acc);
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

const TileKernels &avx512AmxTileKernels() {
  static const TileKernels kernels{widenFp8, score,  scoreAmx,
                                   scaleMax, expSum, mix};
  return kernels;
}

} // namespace moe::host
