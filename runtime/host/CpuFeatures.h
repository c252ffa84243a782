// The host CPU's vector instruction sets, read once with cpuid and checked
// against what the OS saves on a context switch (xgetbv): a CPU with
// AVX-512 under an OS that does not save its registers cannot use it.
// x86-64 only, like the rest of the host's vector kernels.
#pragma once

#include <optional>
#include <string_view>

namespace moe::host {

struct CpuFeatures {
  bool avx2 = false; // with FMA and F16C, as every AVX2 server CPU has
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512bf16 = false;
  bool avx512fp16 = false;
  // AMX tiles with bf16 products, their state saved by the OS and granted
  // to this process.
  bool amxBf16 = false;
};

/// This CPU's features (read on the first call).
const CpuFeatures &cpuFeatures();

/// The instruction sets the host's kernels are written for; avx512amx is
/// avx512 with AMX tiles for the scores of 16 heads at a time over bf16 keys.
enum class VectorIsa { avx2, avx512, avx512amx };

inline constexpr std::string_view vectorIsaName(VectorIsa isa) {
  switch (isa) {
  case VectorIsa::avx2:
    return "avx2";
  case VectorIsa::avx512:
    return "avx512";
  case VectorIsa::avx512amx:
    return "avx512_amx";
  }
  return "avx2";
}

/// Whether `features` can run the kernels written for `isa` (AVX-512: F, BW
/// and VL).
bool supports(const CpuFeatures &features, VectorIsa isa);

/// The widest of them this CPU runs; none without AVX2.
std::optional<VectorIsa> bestVectorIsa();

} // namespace moe::host
