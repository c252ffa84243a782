// Measures the host for the hardware profile's host_cpu section, without a
// GPU: the vector ISA (cpuid), the NUMA nodes (sysfs), DRAM read bandwidth
// at 1, 2, 4, ... threads and all cores, and the host decode attention
// kernels (DecodeAttention.h) over host KV at growing sizes, on all cores.
// Reading while the GPU copies host memory needs the GPU: the GPU profiler
// measures that part; here it stays empty.
#pragma once

#include "runtime/costmodel/HardwareProfile.h"
#include "runtime/support/Result.h"

#include <functional>
#include <string_view>

namespace moe::host {

struct HostProfileOptions {
  bool quick = false; // small buffers and few points, for smoke tests
  // Receives one line of the progress table at a time (no newline).
  std::function<void(std::string_view)> log;
};

/// Fails without AVX2 (the kernels' least instruction set).
Result<costmodel::HostCpuProfile>
profileHost(const HostProfileOptions &options);

} // namespace moe::host
