// The host's NUMA nodes as Linux lists them in /sys/devices/system/node:
// each node's CPUs (its cpulist) and memory (MemTotal of its meminfo). A
// host whose kernel lists no nodes has none here.
#pragma once

#include "runtime/costmodel/HardwareProfile.h"
#include "runtime/support/Result.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moe::host {

/// The CPUs of a cpulist such as "0-3,8,10-11", in order.
Result<std::vector<int64_t>> parseCpuList(std::string_view text);

/// The nodes under `root` (node0, node1, ...), by node number.
Result<std::vector<costmodel::NumaNode>>
readNumaNodes(const std::string &root = "/sys/devices/system/node");

} // namespace moe::host
