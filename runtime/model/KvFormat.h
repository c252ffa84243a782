// How a softmax-attention KV cache stores a token: the row format every
// backend and the cost model agree on, and the FP8 (E4M3) encoding the CPU
// backend computes as the reference the GPU kernels are checked against.
//
// A cached token of one layer is a row of `vectors` K (or V) heads of
// `width` elements each:
//  * bf16: the vectors' elements, 2 bytes each;
//  * fp8:  the vectors' E4M3 codes (one byte each), then from the next
//    16-byte boundary one fp32 scale per vector, the row padded to 16 bytes
//    (kernels copy rows in 16-byte pieces).
//    A vector's scale is amax / 448 (E4M3's largest finite value), so its
//    largest element encodes to ±448: one scale per token and head follows
//    the magnitude of each key and value as it is written, needs no
//    calibration, and costs 4 bytes per 128-element head (3%).
// Header-only: the compiler's cost model prices cache bytes with it.
#pragma once

#include "runtime/support/Align.h"
#include "runtime/support/Float8.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace moe::model {

enum class KvDtype : uint8_t { bf16 = 0, fp8 = 1 };

/// Tokens of a page of the CUDA backend's host KV pool, which the planner
/// sizes in whole pages. A page is the unit of every copy of cached rows to
/// the GPU, so it must be long enough for one copy to run at the link's
/// rate; a sequence wastes at most a page less one token on its last. Jobs
/// of shorter contexts hold a context a page.
inline constexpr int64_t kHostKvPageTokens = 256;
inline constexpr int64_t hostKvPageTokens(int64_t maxContext) {
  return maxContext < kHostKvPageTokens ? maxContext : kHostKvPageTokens;
}

inline constexpr std::string_view kvDtypeName(KvDtype dtype) {
  return dtype == KvDtype::fp8 ? "fp8" : "bf16";
}

inline std::optional<KvDtype> parseKvDtype(std::string_view name) {
  if (name == "bf16")
    return KvDtype::bf16;
  if (name == "fp8")
    return KvDtype::fp8;
  return std::nullopt;
}

/// Where an fp8 row's scales start.
inline constexpr int64_t fp8ScalesOffset(int64_t vectors, int64_t width) {
  return alignTo16(vectors * width);
}

/// Bytes of one cached token of `vectors` vectors of `width` elements.
inline constexpr int64_t kvRowBytes(KvDtype dtype, int64_t vectors,
                                    int64_t width) {
  if (dtype == KvDtype::bf16)
    return vectors * width * 2;
  return alignTo16(fp8ScalesOffset(vectors, width) + vectors * 4);
}

/// Bytes of one token of an MLA latent cache: the latent and k_pe, in fp8
/// scaled per group of ropeDim elements (k_pe one group, the latent the
/// others: a multiple of ropeDim wide, which ResolvedModel checks).
inline constexpr int64_t latentRowBytes(KvDtype dtype, int64_t latentDim,
                                        int64_t ropeDim) {
  if (dtype == KvDtype::bf16 || ropeDim <= 0)
    return (latentDim + ropeDim) * 2;
  return kvRowBytes(dtype, (latentDim + ropeDim) / ropeDim, ropeDim);
}

/// One vector's scale (amax / 448) and the factor its values are encoded
/// with (448 / amax; 0 for a vector of zeros).
struct Fp8Scaling {
  float scale, inverse;
};
inline Fp8Scaling fp8Scaling(const float *v, int64_t width) {
  float amax = 0.0f;
  for (int64_t i = 0; i < width; ++i)
    amax = std::fmax(amax, std::fabs(v[i]));
  return {amax / kFp8Max, amax > 0.0f ? kFp8Max / amax : 0.0f};
}

/// Encodes `vectors` vectors of `width` values into one fp8 row
/// (kvRowBytes(KvDtype::fp8, vectors, width) bytes).
inline void encodeFp8Row(const float *x, int64_t vectors, int64_t width,
                         uint8_t *row) {
  uint8_t *scales = row + fp8ScalesOffset(vectors, width);
  for (int64_t h = 0; h < vectors; ++h) {
    const float *v = x + h * width;
    Fp8Scaling s = fp8Scaling(v, width);
    for (int64_t i = 0; i < width; ++i)
      row[h * width + i] = fp8FromFloat(v[i] * s.inverse);
    std::memcpy(scales + h * 4, &s.scale, sizeof s.scale);
  }
}

/// The values an fp8 row stands for.
inline void decodeFp8Row(const uint8_t *row, int64_t vectors, int64_t width,
                         float *x) {
  const uint8_t *scales = row + fp8ScalesOffset(vectors, width);
  for (int64_t h = 0; h < vectors; ++h) {
    float scale;
    std::memcpy(&scale, scales + h * 4, sizeof scale);
    for (int64_t i = 0; i < width; ++i)
      x[h * width + i] = floatFromFp8(row[h * width + i]) * scale;
  }
}

/// x replaced by the values its fp8 row stands for: the CPU backend caches
/// these, so that it computes what the fp8 cache holds.
/// Each value goes through the same codes and scale as in encodeFp8Row,
/// without a row in between.
inline void roundTripFp8(float *x, int64_t vectors, int64_t width) {
  for (int64_t h = 0; h < vectors; ++h) {
    float *v = x + h * width;
    Fp8Scaling s = fp8Scaling(v, width);
    for (int64_t i = 0; i < width; ++i)
      v[i] = floatFromFp8(fp8FromFloat(v[i] * s.inverse)) * s.scale;
  }
}

} // namespace moe::model
