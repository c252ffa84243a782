#include "runtime/host/CpuFeatures.h"

#include <cpuid.h>
#include <cstdint>

#include <sys/syscall.h>
#include <unistd.h>

namespace moe::host {
namespace {

struct Registers {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Registers cpuid(unsigned leaf, unsigned subleaf) {
  Registers r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx))
    return {};
  return r;
}

bool bit(unsigned value, int index) { return (value >> index) & 1u; }

// Linux grants a process the AMX tile state (8 KiB a thread) on request.
bool requestTileData() {
  return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                 18 /* XFEATURE_XTILEDATA */) == 0;
}

// XCR0: the register states the OS saves. xgetbv exists when OSXSAVE is set.
uint64_t savedStates(const Registers &leaf1) {
  if (!bit(leaf1.ecx, 27))
    return 0;
  unsigned low = 0, high = 0;
  __asm__("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
  return (uint64_t(high) << 32) | low;
}

CpuFeatures readFeatures() {
  CpuFeatures f;
  Registers leaf1 = cpuid(1, 0);
  Registers leaf7 = cpuid(7, 0);
  Registers leaf7s1 = cpuid(7, 1);
  uint64_t xcr0 = savedStates(leaf1);
  bool ymm = (xcr0 & 0x6) == 0x6;           // SSE and AVX state
  bool zmm = ymm && (xcr0 & 0xE0) == 0xE0;  // opmask, ZMM0-15 high, ZMM16-31
  bool tiles = (xcr0 & 0x60000) == 0x60000; // XTILECFG and XTILEDATA
  f.avx2 = ymm && bit(leaf7.ebx, 5) && bit(leaf1.ecx, 12) && bit(leaf1.ecx, 29);
  f.avx512f = zmm && bit(leaf7.ebx, 16);
  f.avx512bw = f.avx512f && bit(leaf7.ebx, 30);
  f.avx512vl = f.avx512f && bit(leaf7.ebx, 31);
  f.avx512bf16 = f.avx512f && bit(leaf7s1.eax, 5);
  f.avx512fp16 = f.avx512f && bit(leaf7.edx, 23);
  f.amxBf16 =
      tiles && bit(leaf7.edx, 24) && bit(leaf7.edx, 22) && requestTileData();
  return f;
}

} // namespace

const CpuFeatures &cpuFeatures() {
  static const CpuFeatures features = readFeatures();
  return features;
}

bool supports(const CpuFeatures &features, VectorIsa isa) {
  bool avx512 = features.avx512f && features.avx512bw && features.avx512vl &&
                features.avx2;
  switch (isa) {
  case VectorIsa::avx2:
    return features.avx2;
  case VectorIsa::avx512:
    return avx512;
  case VectorIsa::avx512amx:
    return avx512 && features.amxBf16;
  }
  return false;
}

std::optional<VectorIsa> bestVectorIsa() {
  for (VectorIsa isa :
       {VectorIsa::avx512amx, VectorIsa::avx512, VectorIsa::avx2})
    if (supports(cpuFeatures(), isa))
      return isa;
  return std::nullopt;
}

} // namespace moe::host
