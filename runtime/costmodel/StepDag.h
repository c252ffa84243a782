// DAGs of one decode step and one prefill pass of module-based batching,
// priced with a hardware profile, plus the traffic they move and the roofline
// bound that traffic implies.
#pragma once

#include <string_view>

#include "runtime/costmodel/CriticalPath.h"
#include "runtime/costmodel/HardwareProfile.h"
#include "runtime/costmodel/ModelCosts.h"
#include "runtime/costmodel/Plan.h"

namespace moe::costmodel {

// Prefill parks hidden states in host memory between layers; this many
// device buffers let one chunk's load overlap the previous chunk's compute.
inline constexpr int64_t kPrefillHiddenBuffers = 2;

// What a step moves and computes, for "bytes per link" reports and the
// roofline.
struct StepTraffic {
  double weightBytesToGpu = 0;
  double kvBytesToGpu = 0;
  double hiddenBytesToGpu = 0;
  double bytesToHost = 0;
  double flops = 0;
  double kvBytesRead = 0;     // KV read by attention from GPU memory.
  // Weights read from GPU memory, each once a step; of routed experts only
  // those the step's tokens are expected to pick, of the embedding only
  // their rows.
  double weightBytesRead = 0;
  double hostKvBytesRead = 0; // KV the host's cores attend over.

  double bytesToGpu() const {
    return weightBytesToGpu + kvBytesToGpu + hiddenBytesToGpu;
  }
};

struct StepDag {
  Dag dag;
  StepTraffic traffic;
};

// One decode step: for each layer, its streamed weights on the H2D stream
// (at most `prefetchDepth` streaming layers ahead of compute), attention over
// micro-batches of b_a sequences (GPU-KV micro-batches first, then host-KV
// ones whose KV is staged H2D through `kvStagingBuffers` buffers and whose
// new token is stored D2H), router, routed experts over the expected tokens of
// each active expert in GEMMs of at most b_e tokens, shared experts. Context
// is the plan's mean decode context.
Result<StepDag> buildDecodeStepDag(const ModelCosts &model, const Plan &plan,
                                   const HardwareProfile &profile);

// One layer-major prefill pass over `prompts` new prompts (all B slots'
// when absent; a refill's share GPU-KV and host-KV slots as the batch
// does): each layer's weights cross once; the prompts go through in chunks
// of what the plan's activation memory holds, their hidden states parked
// in host memory between layers; host-KV chunks store their KV.
Result<StepDag> buildPrefillDag(const ModelCosts &model, const Plan &plan,
                                const HardwareProfile &profile,
                                std::optional<int64_t> prompts = {});

enum class RooflineBound { PcieBytes, GemmFlops, HbmBytes, HostKvBandwidth };
std::string_view rooflineBoundName(RooflineBound bound);

// max(PCIe bytes / H2D bandwidth, FLOPs / peak GEMM rate, (KV + weight)
// bytes read from GPU memory / HBM bandwidth, host KV bytes / the host's
// read bandwidth) for one step, and which term is the max.
struct Roofline {
  double pcieSeconds = 0;
  double computeSeconds = 0;
  double hbmSeconds = 0;
  double hostKvSeconds = 0;
  RooflineBound bound = RooflineBound::PcieBytes;

  double seconds() const;
};

Roofline rooflineOf(const StepTraffic &traffic, const HardwareProfile &profile);

} // namespace moe::costmodel
