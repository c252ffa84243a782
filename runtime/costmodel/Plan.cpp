#include "runtime/costmodel/Plan.h"

#include "runtime/model/ActivationBytes.h"
#include "runtime/model/KvFormat.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace moe::costmodel {
namespace {

// Residual stream, normalised input, module output and the staging copy of
// the hidden states: the activations each resident token keeps on the GPU.
constexpr int64_t kHiddenBuffersPerToken = 4;

bool isDense(ModuleKind kind) {
  return kind != ModuleKind::RoutedExperts && kind != ModuleKind::Embedding;
}

// Largest intermediate of any module: all GEMM outputs of one chunk alive.
int64_t peakIntermediateBytes(const ModelCosts &model, int64_t attentionTokens,
                              int64_t ffnTokens) {
  int64_t peak = 0;
  for (const LayerCosts &layer : model.layers)
    for (const ModuleCosts &module : layer.modules) {
      int64_t outputs = 0;
      for (const GemmShape &gemm : module.gemms)
        outputs += gemm.n;
      int64_t tokens =
          module.kind == ModuleKind::Attention ? attentionTokens : ffnTokens;
      peak = std::max(peak, tokens * outputs * model.activationElementBytes);
    }
  return peak;
}

int64_t activationBytes(const ModelCosts &model, int64_t residentTokens,
                        int64_t attentionTokens, int64_t ffnTokens) {
  return residentTokens * model.hiddenSize * model.activationElementBytes *
             kHiddenBuffersPerToken +
         peakIntermediateBytes(model, attentionTokens, ffnTokens);
}

int64_t maxLayerKvBytesPerSequence(const ModelCosts &model, int64_t context) {
  int64_t peak = 0;
  for (const LayerCosts &layer : model.layers) {
    int64_t bytes = 0;
    for (const ModuleCosts &module : layer.modules)
      bytes += heldKvBytes(module, context);
    peak = std::max(peak, bytes);
  }
  return peak;
}

} // namespace

// What one row of a decode step holds on the GPU while the backend runs a
// module over all of the step's rows at once (it splits a step only where
// memory runs out, and a split step parks its hidden states in host memory
// between layers and restarts the KV pipeline: 0.2 s of a 0.6 s
// DeepSeek-V2-Lite step). Per module: its own buffers, counted as the
// backend counts them (activationRowBytes), beside the values alive across
// it, bounded by kHiddenBuffersPerToken hidden rows in both forms. The LM
// head makes its logits a block of rows at a time: not a per-row cost.
int64_t decodeRowBytes(const ModelCosts &model) {
  int64_t rowBytes = 0;
  for (const LayerCosts &layer : model.layers)
    for (const ModuleCosts &module : layer.modules)
      if (module.kind != ModuleKind::LmHead)
        rowBytes = std::max(rowBytes, module.activationRowBytes);
  return rowBytes + kHiddenBuffersPerToken * ::moe::model::kBothFormsBytes *
                        model.hiddenSize;
}

int64_t Plan::gpuKvSequences() const {
  return std::llround(kvGpuFraction * double(residentBatch));
}

int64_t Plan::hostKvPoolTokens() const {
  const int64_t page = ::moe::model::hostKvPageTokens(lengths.maxContext());
  auto wholePages = [&](double tokens) {
    return int64_t(std::ceil(tokens / double(page))) * page;
  };
  int64_t sequences = hostKvSequences();
  if (sequences <= 0)
    return 0;
  int64_t whole = wholePages(double(lengths.maxContext()));
  if (wholeContextPool)
    return sequences * whole;
  // The sum of many refilled sequences' contexts stays within a few percent
  // of its mean; what it exceeds the pool by, the engine pauses.
  constexpr double kSpreadRoom = 1.1;
  double steady = double(sequences) *
                  double(lengths.meanDecodeContext() + page / 2) * kSpreadRoom;
  return std::clamp(wholePages(steady), whole, sequences * whole);
}

int64_t Plan::cpuAttentionSequences() const {
  return std::llround(cpuAttentionShare * double(residentBatch));
}

bool hostCanAttend(const ModelCosts &model) {
  for (const LayerCosts &layer : model.layers)
    for (const ModuleCosts &module : layer.modules)
      if (module.kind == ModuleKind::Attention &&
          (!module.attentionHeads || module.stateBytesPerSequence > 0))
        return false;
  return true;
}

Status validatePlan(const ModelCosts &model, const Plan &plan) {
  auto positive = [](int64_t value, std::string_view name) -> Status {
    if (value <= 0)
      return makeError("plan: {} must be positive, got {}", name, value);
    return Status::success();
  };
  MOE_RETURN_IF_ERROR(positive(plan.residentBatch, "resident batch B"));
  MOE_RETURN_IF_ERROR(positive(plan.attentionMicroBatchPrefill,
                               "prefill attention micro-batch"));
  MOE_RETURN_IF_ERROR(
      positive(plan.attentionMicroBatchDecode, "decode attention micro-batch"));
  MOE_RETURN_IF_ERROR(positive(plan.expertMicroBatch, "expert micro-batch"));
  MOE_RETURN_IF_ERROR(positive(plan.prefetchDepth, "prefetch depth"));
  MOE_RETURN_IF_ERROR(positive(plan.kvStagingBuffers, "KV staging buffers"));
  MOE_RETURN_IF_ERROR(
      positive(plan.lengths.prompts.shortest(), "shortest prompt length"));
  if (plan.lengths.generated.shortest() < 0)
    return makeError("plan: generation lengths must not be negative");
  if (!(plan.kvGpuFraction >= 0 && plan.kvGpuFraction <= 1))
    return makeError("plan: KV GPU fraction must be in [0, 1], got {}",
                     plan.kvGpuFraction);
  if (!(plan.cpuAttentionShare >= 0 && plan.cpuAttentionShare <= 1))
    return makeError("plan: CPU attention share must be in [0, 1], got {}",
                     plan.cpuAttentionShare);
  if (plan.cpuAttentionSequences() > plan.hostKvSequences())
    return makeError("plan: CPU attention share {} attends {} sequences, but "
                     "only {} keep their KV in host memory",
                     plan.cpuAttentionShare, plan.cpuAttentionSequences(),
                     plan.hostKvSequences());
  if (plan.cpuAttentionSequences() > 0 && !hostCanAttend(model))
    return makeError("plan: CPU attention share {} needs softmax attention in "
                     "every layer; the host does not run MLA or linear "
                     "attention",
                     plan.cpuAttentionShare);
  const auto &units = plan.resident.units;
  if (units.empty())
    return Status::success();
  if (units.size() != model.layers.size())
    return makeError("plan: resident set has {} layers, model has {}",
                     units.size(), model.layers.size());
  for (size_t l = 0; l < units.size(); ++l) {
    const auto &modules = model.layers[l].modules;
    if (units[l].size() != modules.size())
      return makeError("plan: resident set layer {} has {} modules, model has "
                       "{}",
                       l, units[l].size(), modules.size());
    for (size_t m = 0; m < modules.size(); ++m)
      if (units[l][m] < 0 || units[l][m] > residencyUnits(modules[m]))
        return makeError("plan: resident set layer {} module {} ({}): {} "
                         "units out of range [0, {}]",
                         l, m, moduleKindName(modules[m].kind), units[l][m],
                         residencyUnits(modules[m]));
  }
  return Status::success();
}

int64_t residencyUnits(const ModuleCosts &module) {
  return module.kind == ModuleKind::RoutedExperts ? module.numExperts : 1;
}

int64_t residentUnits(const Plan &plan, size_t layer, size_t module) {
  if (plan.resident.units.empty())
    return 0;
  return plan.resident.units[layer][module];
}

int64_t residentWeightBytes(const ModuleCosts &module, int64_t units) {
  if (module.kind == ModuleKind::RoutedExperts) {
    // Bytes beyond the experts (none in practice) stay with the last unit.
    if (units == module.numExperts)
      return module.weightBytes;
    return units * module.expertWeightBytes;
  }
  return units > 0 ? module.weightBytes : 0;
}

int64_t copiedWeightBytes(const ModelCosts &model, const ModuleCosts &module,
                          int64_t units, int64_t tokens) {
  int64_t streamed = module.weightBytes - residentWeightBytes(module, units);
  if (module.kind == ModuleKind::Embedding && streamed > 0)
    return std::min(streamed,
                    tokens * model.hiddenSize * model.activationElementBytes);
  return streamed;
}

std::vector<ResidencyStep> residencyOrder(const ModelCosts &model) {
  std::vector<ResidencyStep> order;
  for (size_t l = 0; l < model.layers.size(); ++l)
    for (size_t m = 0; m < model.layers[l].modules.size(); ++m)
      if (isDense(model.layers[l].modules[m].kind))
        order.push_back({l, m});
  for (size_t l = 0; l < model.layers.size(); ++l)
    for (size_t m = 0; m < model.layers[l].modules.size(); ++m) {
      const ModuleCosts &module = model.layers[l].modules[m];
      if (module.kind == ModuleKind::RoutedExperts)
        for (int64_t e = 0; e < module.numExperts; ++e)
          order.push_back({l, m});
    }
  for (size_t l = 0; l < model.layers.size(); ++l)
    for (size_t m = 0; m < model.layers[l].modules.size(); ++m)
      if (model.layers[l].modules[m].kind == ModuleKind::Embedding)
        order.push_back({l, m});
  return order;
}

ResidentSet residentPrefix(const ModelCosts &model, int64_t count) {
  ResidentSet set;
  for (const LayerCosts &layer : model.layers)
    set.units.emplace_back(layer.modules.size(), 0);
  std::vector<ResidencyStep> order = residencyOrder(model);
  for (int64_t i = 0; i < count && i < int64_t(order.size()); ++i)
    ++set.units[order[i].layer][order[i].module];
  return set;
}

MemoryUse accountMemory(const ModelCosts &model, const Plan &plan) {
  MemoryUse use;
  const GenerationLengths &lengths = plan.lengths;
  int64_t batch = plan.residentBatch;
  int64_t prefillTokens = batch * lengths.promptTokens();

  int64_t maxLayerCopied = 0;
  for (size_t l = 0; l < model.layers.size(); ++l) {
    int64_t layerCopied = 0;
    for (size_t m = 0; m < model.layers[l].modules.size(); ++m) {
      const ModuleCosts &module = model.layers[l].modules[m];
      int64_t units = residentUnits(plan, l, m);
      int64_t resident = residentWeightBytes(module, units);
      use.residentWeightBytes += resident;
      use.widenScratchBytes =
          std::max(use.widenScratchBytes, module.widenScratchBytes);
      use.hostWeightBytes += module.weightBytes - resident;
      // Embedding rows travel through the hidden-state buffers, not the ring.
      if (module.kind != ModuleKind::Embedding)
        layerCopied += module.weightBytes - resident;
    }
    maxLayerCopied = std::max(maxLayerCopied, layerCopied);
  }
  use.weightRingBytes = plan.prefetchDepth * maxLayerCopied;

  int64_t gpuSequences = plan.gpuKvSequences();
  int64_t hostSequences = plan.hostKvSequences();
  use.gpuKvBytes =
      gpuSequences * kvBytesPerSequence(model, lengths.maxContext());
  // The pool holds pages of tokens; per-sequence states (none where host
  // KV is allowed) come beside it, one per host sequence.
  int64_t stateBytes = kvBytesPerSequence(model, 0);
  use.hostKvBytes = kvBytesPerSequence(model, plan.hostKvPoolTokens()) -
                    stateBytes + hostSequences * stateBytes;
  use.hostKvPromptBytes = std::min(
      use.hostKvBytes,
      hostSequences * kvBytesPerSequence(model, lengths.promptTokens()));
  use.parkedHiddenBytes =
      prefillTokens * model.hiddenSize * model.activationElementBytes;
  if (hostSequences > 0)
    use.kvStagingBytes =
        plan.kvStagingBuffers *
        std::min(plan.attentionMicroBatchDecode, hostSequences) *
        maxLayerKvBytesPerSequence(model, lengths.maxContext());

  int64_t decodeAttention = std::min(plan.attentionMicroBatchDecode, batch);
  // The backend rounds step buffers up by as much as 1/16.
  int64_t decodeActivations =
      std::max(activationBytes(model, batch, decodeAttention,
                               std::min(plan.expertMicroBatch, batch)),
               batch * decodeRowBytes(model) * 17 / 16);
  int64_t prefillChunkTokens =
      std::min(plan.attentionMicroBatchPrefill, batch) * lengths.promptTokens();
  int64_t prefillActivations =
      activationBytes(model, prefillChunkTokens, prefillChunkTokens,
                      std::min(plan.expertMicroBatch, prefillChunkTokens));
  use.activationBytes = std::max(decodeActivations, prefillActivations);
  return use;
}

int64_t prefillChunkRows(const ModelCosts &model, const Plan &plan) {
  // The parked value in fp32 and bf16, the next chunk's restored one in
  // fp32 (CudaBackend's parkRowBytes and restoreRowBytes).
  int64_t perRow = decodeRowBytes(model) + 10 * model.hiddenSize;
  perRow += perRow / 16;
  return std::max<int64_t>(1,
                           accountMemory(model, plan).activationBytes / perRow);
}

std::string formatBytes(double bytes, double scale) {
  static constexpr std::pair<double, std::string_view> kUnits[] = {
      {double(int64_t(1) << 30), "GiB"},
      {double(int64_t(1) << 20), "MiB"},
      {double(int64_t(1) << 10), "KiB"}};
  for (auto [unit, name] : kUnits)
    if (scale >= unit)
      return fmt::format("{:.1f} {}", bytes / unit, name);
  return fmt::format("{:.0f} B", bytes);
}

Status checkMemory(const MemoryUse &use, const HardwareProfile &profile) {
  std::string failures;
  auto check = [&](std::string_view pool, int64_t needed, int64_t budget) {
    if (needed <= budget)
      return;
    if (!failures.empty())
      failures += "; ";
    // One unit per message, the one that suits the larger figure.
    double scale = double(needed);
    failures += fmt::format("{}: plan needs {}, budget {} (short by {})", pool,
                            formatBytes(double(needed), scale),
                            formatBytes(double(budget), scale),
                            // A small shortfall in its own unit, not "0.0 GiB".
                            formatBytes(double(needed - budget),
                                        double(needed - budget)));
  };
  check("GPU memory", use.gpuBytes(), profile.gpuBudgetBytes());
  check("host memory", use.hostBytes(), profile.hostBudgetBytes());
  if (failures.empty())
    return Status::success();
  return Error(failures);
}

} // namespace moe::costmodel
