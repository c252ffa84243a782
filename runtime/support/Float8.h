// E4M3 (OCP FP8: 4 exponent bits with bias 7, 3 mantissa bits, no
// infinities, 0x7F/0xFF NaN, largest finite ±448) to and from fp32 on the
// host: the KV cache's fp8 rows and FP8 checkpoints' weights.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace moe {

inline constexpr float kFp8Max = 448.0f;

/// E4M3 (bias 7, no infinities, 0x7F/0xFF NaN) from fp32: round to nearest
/// even, saturating to ±448 — the conversion CUDA's
/// __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) performs.
inline uint8_t fp8FromFloat(float x) {
  uint8_t sign = (std::bit_cast<uint32_t>(x) >> 24) & 0x80;
  if (std::isnan(x))
    return sign | 0x7F;
  float a = std::fabs(x);
  if (a >= kFp8Max)
    return sign | 0x7E;
  if (a < 0.015625f) // below the smallest normal, 2^-6: steps of 2^-9
    return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
  int exponent = 0;
  float mantissa = std::frexp(a, &exponent); // a = mantissa · 2^exponent
  // a = (1 + m / 8) · 2^(exponent − 1); a carry into the exponent is the
  // next code up, so adding the rounded mantissa to the code handles it.
  int m = static_cast<int>(std::nearbyint((mantissa * 2.0f - 1.0f) * 8.0f));
  return sign | static_cast<uint8_t>(((exponent - 1 + 7) << 3) + m);
}

inline float floatFromFp8(uint8_t code) {
  int exponent = (code >> 3) & 0xF, m = code & 7;
  float sign = code & 0x80 ? -1.0f : 1.0f;
  if (exponent == 0xF && m == 7)
    return NAN;
  if (exponent == 0)
    return sign * std::ldexp(static_cast<float>(m), -9);
  return sign * std::ldexp(1.0f + m / 8.0f, exponent - 7);
}

} // namespace moe
