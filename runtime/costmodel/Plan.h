// The variables of module-based batching that the planner chooses, and the
// memory a choice needs in each pool.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/costmodel/HardwareProfile.h"
#include "runtime/costmodel/Lengths.h"
#include "runtime/costmodel/ModelCosts.h"
#include "runtime/support/Result.h"

namespace moe::costmodel {

// Which weights stay on the GPU: units[layer][module] counts the resident
// units of that module, a unit being one expert of a routed-experts module
// and the whole module otherwise. Empty means nothing is resident.
struct ResidentSet {
  std::vector<std::vector<int64_t>> units;
};

struct Plan {
  int64_t residentBatch = 1;              // B: sequences kept resident.
  int64_t attentionMicroBatchPrefill = 1; // b_a in prefill, sequences.
  int64_t attentionMicroBatchDecode = 1;  // b_a in decode, sequences.
  int64_t expertMicroBatch = 1;           // b_e: tokens per expert GEMM.
  int64_t prefetchDepth = 2;              // Weight-ring slots, one layer each.
  int64_t kvStagingBuffers = 2;           // Host-KV micro-batches in flight.
  // ω: share of the B sequences whose decode attention runs on the host's
  // cores, over their KV in host memory (so at most the host-KV share): the
  // last host-KV sequences. Only softmax attention (GQA/MHA) runs there.
  double cpuAttentionShare = 0;
  // Share of the B sequences whose KV lives on the GPU; the rest is on the
  // host and staged per attention micro-batch.
  double kvGpuFraction = 0;
  ResidentSet resident;
  GenerationLengths lengths;
  // The host KV pool holds every host-KV sequence's whole context: nothing
  // is ever paused (a job's tail, whose few sequences are its longest).
  bool wholeContextPool = false;

  int64_t gpuKvSequences() const;
  int64_t hostKvSequences() const { return residentBatch - gpuKvSequences(); }
  // Tokens of the host KV pool, in whole pages (model::hostKvPageTokens):
  // the host-KV sequences' steady-state mean context with room for each
  // one's last page and for the spread of the sum around its mean, at
  // least one whole context (a sequence alone always finishes), at most
  // every host-KV sequence's whole context (all of them with
  // wholeContextPool). Sequences take pages as they grow; the engine pauses
  // one when the pool runs short.
  int64_t hostKvPoolTokens() const;
  // Sequences attended on the host in decode, the last host-KV ones.
  int64_t cpuAttentionSequences() const;
};

// Checks the plan's ranges and that its resident set matches the model.
Status validatePlan(const ModelCosts &model, const Plan &plan);

// Whether the host's cores can attend this model's decode: every layer's
// attention is softmax attention (no MLA, no recurrent state).
bool hostCanAttend(const ModelCosts &model);

// Units of a module that can be resident: experts, or 1.
int64_t residencyUnits(const ModuleCosts &module);
int64_t residentUnits(const Plan &plan, size_t layer, size_t module);
int64_t residentWeightBytes(const ModuleCosts &module, int64_t units);
// Weight bytes copied to the GPU each time the layer runs. Embedding rows are
// gathered on the host, so only the rows of `tokens` tokens cross.
int64_t copiedWeightBytes(const ModelCosts &model, const ModuleCosts &module,
                          int64_t units, int64_t tokens);

// Residency by the greedy benefit-per-byte order: every streamed byte costs
// the same PCIe time, so dense modules (used by every token, gating each
// layer's first compute) come first in layer order, then routed experts layer
// by layer, and the embedding (whose rows alone cross per step) last. The
// prefix of `count` units of that order is resident.
struct ResidencyStep {
  size_t layer;
  size_t module;
};
std::vector<ResidencyStep> residencyOrder(const ModelCosts &model);
ResidentSet residentPrefix(const ModelCosts &model, int64_t count);

struct MemoryUse {
  // GPU pool.
  int64_t residentWeightBytes = 0;
  int64_t weightRingBytes = 0;
  int64_t gpuKvBytes = 0;
  int64_t kvStagingBytes = 0;
  int64_t activationBytes = 0;
  int64_t widenScratchBytes = 0; // quantized experts widened for GEMMs
  // Host pool (pinned).
  int64_t hostWeightBytes = 0;
  int64_t hostKvBytes = 0;       // The host KV pool.
  int64_t hostKvPromptBytes = 0; // After prefill, while states are parked.
  int64_t parkedHiddenBytes = 0; // Prefill hidden states of all B prompts.

  int64_t gpuBytes() const {
    return residentWeightBytes + weightRingBytes + gpuKvBytes + kvStagingBytes +
           activationBytes + widenScratchBytes;
  }
  // Paged KV grows with the context, so prefill's parked hidden states and
  // the full-length KV are never needed at once.
  int64_t hostBytes() const {
    return hostWeightBytes +
           std::max(hostKvBytes, hostKvPromptBytes + parkedHiddenBytes);
  }
};

MemoryUse accountMemory(const ModelCosts &model, const Plan &plan);

// Step memory one row of a decode step takes on the GPU at most: the
// largest module's own buffers beside the hidden rows alive across it.
int64_t decodeRowBytes(const ModelCosts &model);

// The most rows one forward pass of the CUDA backend runs; each pass
// streams the weights once.
inline constexpr int64_t kPassRows = 65536;

// Prompt rows one chunk of a prefill pass holds: the CUDA backend runs a pass
// that its step memory (the plan's activations) cannot hold in chunks, layer
// by layer, each row needing what a decode row does plus its parked and
// restored fp32 hidden state, rounded up by 1/16. At least 1.
int64_t prefillChunkRows(const ModelCosts &model, const Plan &plan);

// Fails naming each pool that does not fit, e.g. "host memory: plan needs
// 131.2 GiB, budget 116.0 GiB (short by 15.2 GiB)".
Status checkMemory(const MemoryUse &use, const HardwareProfile &profile);

// `bytes` in the binary unit (GiB, MiB, KiB, B) that suits `scale`.
std::string formatBytes(double bytes, double scale);

} // namespace moe::costmodel
