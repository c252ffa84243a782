// Shared pieces of the CUDA runtime tests: the skip-without-a-device guard,
// CUDA errors as exceptions, uploads, bf16 on the host, random data, KV
// cache rows in a cache's format and the relative L2 error.
#pragma once

#include "runtime/model/KvFormat.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace moe::cuda::test {

// Empty when a CUDA device is usable, else why not.
inline std::string missingDeviceReason() {
  int count = 0;
  cudaError_t code = cudaGetDeviceCount(&count);
  if (code != cudaSuccess)
    return cudaGetErrorString(code);
  return count > 0 ? std::string() : std::string("no device found");
}

// Throws on a CUDA error, naming the call: the test fails with that message.
inline void check(cudaError_t code, const char *what) {
  if (code != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " +
                             cudaGetErrorString(code));
}

// A device copy of `host` (cudaFree it); at least one element is allocated.
template <typename T> T *upload(const std::vector<T> &host) {
  void *p = nullptr;
  check(cudaMalloc(&p, std::max<std::size_t>(host.size(), 1) * sizeof(T)),
        "cudaMalloc");
  check(cudaMemcpy(p, host.data(), host.size() * sizeof(T),
                   cudaMemcpyHostToDevice),
        "upload");
  return static_cast<T *>(p);
}

// (sequence, position) of every row of a prompt of `length` for each of
// `sequences` sequences: an attention test's prefill.
inline std::vector<std::pair<std::int32_t, std::int32_t>>
prefillRows(int sequences, int length) {
  std::vector<std::pair<std::int32_t, std::int32_t>> rows;
  for (int s = 0; s < sequences; ++s)
    for (int p = 0; p < length; ++p)
      rows.push_back({s, p});
  return rows;
}

inline std::uint16_t floatToBf16(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u); // round to nearest even
  return static_cast<std::uint16_t>(bits >> 16);
}

inline float bf16ToFloat(std::uint16_t bits) {
  std::uint32_t wide = static_cast<std::uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

// Uniform in [-1, 1), as bf16 bits.
inline std::vector<std::uint16_t> randomBf16(std::size_t count,
                                             std::mt19937 &rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<std::uint16_t> out(count);
  for (auto &v : out)
    v = floatToBf16(dist(rng));
  return out;
}

// A cache of `tokens` rows of `vectors` × `width` values (bf16 bits) in
// the cache's format, and the values the kernel should read from it.
struct CacheRows {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};
inline CacheRows cacheRows(const std::vector<uint16_t> &bits, int64_t tokens,
                           int vectors, int width, bool fp8) {
  using moe::model::KvDtype;
  int64_t elements = int64_t(vectors) * width;
  int64_t rowBytes = moe::model::kvRowBytes(fp8 ? KvDtype::fp8 : KvDtype::bf16,
                                            vectors, width);
  CacheRows rows{std::vector<uint8_t>(size_t(tokens * rowBytes)),
                 std::vector<float>(size_t(tokens * elements))};
  for (size_t i = 0; i < bits.size(); ++i)
    rows.values[i] = bf16ToFloat(bits[i]);
  for (int64_t t = 0; t < tokens; ++t) {
    float *values = rows.values.data() + t * elements;
    uint8_t *row = rows.bytes.data() + t * rowBytes;
    if (fp8) {
      moe::model::encodeFp8Row(values, vectors, width, row);
      moe::model::decodeFp8Row(row, vectors, width, values);
    } else {
      std::memcpy(row, bits.data() + t * elements, size_t(elements) * 2);
    }
  }
  return rows;
}

// ‖got − ref‖ / ‖ref‖; NaN (so every comparison fails) when got has a NaN.
inline double relativeL2(const std::vector<float> &got,
                         const std::vector<double> &ref) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    double d = static_cast<double>(got[i]) - ref[i];
    diff += d * d;
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff) / std::sqrt(norm);
}

} // namespace moe::cuda::test

// First statement of every test that needs a GPU.
#define MOE_REQUIRE_CUDA_DEVICE()                                              \
  do {                                                                         \
    std::string moeWhy_ = ::moe::cuda::test::missingDeviceReason();            \
    if (!moeWhy_.empty())                                                      \
      GTEST_SKIP() << "needs a CUDA device (" << moeWhy_ << ")";               \
  } while (false)
