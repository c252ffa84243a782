// MXFP4 (OCP Microscaling: E2M1 elements, one E8M0 scale per 32 of them)
// to and from fp32 on the host: GPT-OSS's expert weights as shipped, and
// bf16 experts quantized at load.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace moe {

/// The largest E2M1 magnitude.
inline constexpr float kFp4Max = 6.0f;

/// An E2M1 code's value: sign (bit 3) and magnitude 0, 0.5, 1, 1.5, 2, 3,
/// 4, 6 (bits 0-2), transformers' FP4_VALUES.
inline float floatFromFp4(uint8_t code) {
  constexpr float kMagnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f,
                                    2.0f, 3.0f, 4.0f, 6.0f};
  float magnitude = kMagnitudes[code & 7];
  return code & 8 ? -magnitude : magnitude;
}

/// E2M1 from fp32: round to nearest, ties to the even code, saturating to
/// ±6 (NaN becomes 0: a weight has none).
inline uint8_t fp4FromFloat(float x) {
  uint8_t sign = (std::bit_cast<uint32_t>(x) >> 28) & 8;
  float a = std::fabs(x);
  uint8_t magnitude = a <= 0.25f      ? 0
                      : a < 0.75f     ? 1
                      : a <= 1.25f    ? 2
                      : a < 1.75f     ? 3
                      : a <= 2.5f     ? 4
                      : a < 3.5f      ? 5
                      : a <= 5.0f     ? 6
                      : std::isnan(a) ? 0
                                      : 7;
  return sign | magnitude;
}

/// An E8M0 scale's value, 2^(code − 127) (code 255, NaN in the OCP format,
/// is never written here).
inline float floatFromE8m0(uint8_t code) {
  return std::ldexp(1.0f, int(code) - 127);
}

/// The E8M0 scale of a block whose largest magnitude is `amax`: the
/// smallest power of two at least amax / 6, so no element saturates (the
/// rule of triton_kernels' downcast_to_mxfp, with which GPT-OSS was
/// quantized). A block of zeros gets code 0.
inline uint8_t e8m0ScaleFor(float amax) {
  uint32_t bits = std::bit_cast<uint32_t>(amax / kFp4Max);
  return static_cast<uint8_t>(((bits + 0x007FFFFFu) & 0x7F800000u) >> 23);
}

} // namespace moe
