#include "runtime/costmodel/StepDag.h"

#include <algorithm>
#include <cmath>
#include <optional>

namespace moe::costmodel {
namespace {

double gemmFlopsPerToken(const ModuleCosts &module) {
  double flops = 0;
  for (const GemmShape &gemm : module.gemms)
    flops += 2.0 * double(gemm.n) * double(gemm.k);
  if (module.kind == ModuleKind::RoutedExperts)
    flops *= double(module.topK);
  return flops;
}

// GEMMs over `tokens` tokens, split into calls of at most `chunk` tokens.
// `gemms` over `tokens` rows in chunks of `chunk`, each GEMM of m rows
// priced by price(m, n, k).
template <typename Price>
double chunkedGemmSeconds(const std::vector<GemmShape> &gemms, int64_t tokens,
                          int64_t chunk, Price &&price) {
  if (tokens <= 0)
    return 0;
  int64_t fullChunks = tokens / chunk;
  int64_t rest = tokens % chunk;
  double seconds = 0;
  for (const GemmShape &gemm : gemms) {
    if (fullChunks > 0)
      seconds += double(fullChunks) * price(chunk, gemm.n, gemm.k);
    if (rest > 0)
      seconds += price(rest, gemm.n, gemm.k);
  }
  return seconds;
}

double gemmSeconds(const HardwareProfile &profile,
                   const std::vector<GemmShape> &gemms, int64_t tokens,
                   int64_t chunk) {
  return chunkedGemmSeconds(gemms, tokens, chunk,
                            [&](int64_t m, int64_t n, int64_t k) {
                              return profile.gemmSeconds(m, n, k);
                            });
}

// Work outside the GEMMs (activations, norms, softmax, residual adds): its
// FLOPs at the peak rate, or the bytes it moves: one read and one write of
// the hidden states, and for routed experts every buffer of their step
// memory once (the gather writes the picks' inputs, the activation reads
// gate|up and writes its output, the combine reads the picks' outputs and
// writes the sum).
double elementwiseSeconds(const HardwareProfile &profile,
                          const ModelCosts &model, const ModuleCosts &module,
                          int64_t tokens) {
  double otherFlops =
      std::max(0.0, module.flopsPerToken - gemmFlopsPerToken(module)) *
      double(tokens);
  double rowBytes = module.kind == ModuleKind::RoutedExperts
                        ? double(module.activationRowBytes)
                        : 2.0 * double(model.hiddenSize) *
                              double(model.activationElementBytes);
  return std::max(profile.peakComputeSeconds(otherFlops),
                  profile.hbmSeconds(double(tokens) * rowBytes));
}

// Under uniform routing, `tokens` tokens each picking top-k of E experts
// leave an expert unused with probability (1 - k/E)^tokens.
struct ExpertLoad {
  double activeExperts = 0;
  int64_t tokensPerActiveExpert = 0;
};

ExpertLoad expectedExpertLoad(const ModuleCosts &module, int64_t tokens) {
  double experts = double(module.numExperts);
  double unused = std::pow(1.0 - double(module.topK) / experts, double(tokens));
  ExpertLoad load;
  load.activeExperts = experts * (1.0 - unused);
  if (load.activeExperts > 0)
    load.tokensPerActiveExpert = int64_t(
        std::ceil(double(tokens) * double(module.topK) / load.activeExperts));
  return load;
}

// The bytes of a module's weights `tokens` tokens read from GPU memory.
double weightBytesRead(const ModelCosts &model, const ModuleCosts &module,
                       int64_t tokens) {
  switch (module.kind) {
  case ModuleKind::RoutedExperts:
    return expectedExpertLoad(module, tokens).activeExperts *
           double(module.expertWeightBytes);
  case ModuleKind::Embedding:
    return std::min(double(module.weightBytes),
                    double(tokens) * double(model.hiddenSize) *
                        double(model.activationElementBytes));
  default:
    return double(module.weightBytes);
  }
}

// Below this mean of rows per expert the CUDA backend runs an expert layer
// as one grouped launch per GEMM, from it as one GEMM per expert
// (CudaBackendOptions::perExpertGemmRows).
constexpr int64_t kGroupedGemmRowsPerExpert = 128;

bool runsGrouped(const ModuleCosts &module, int64_t tokens) {
  return tokens * module.topK < kGroupedGemmRowsPerExpert * module.numExperts;
}

// The experts' GEMMs as the backend runs them: grouped where the profile
// measured the grouped kernel and groups are small, else one per expert.
// Quantized experts are priced as bf16 ones (the grouped kernel reads their
// codes at a half or a quarter of the bytes: an overestimate where reading
// the weights binds), and per-expert GEMMs first widen them to bf16 —
// except fp8 experts where the profile measured the block-scaled FP8 GEMM:
// their per-expert GEMMs run on the codes, the inputs quantized first (a
// read of bf16 and a write of a byte an element).
double expertGemmSeconds(const HardwareProfile &profile,
                         const ModuleCosts &module, const ExpertLoad &load,
                         int64_t tokens, int64_t expertMicroBatch) {
  if (runsGrouped(module, tokens)) {
    double grouped = 0;
    bool measured = true;
    for (const GemmShape &gemm : module.gemms) {
      std::optional<double> seconds = profile.groupedGemmSeconds(
          load.tokensPerActiveExpert, load.activeExperts, gemm.n, gemm.k);
      measured = measured && seconds.has_value();
      grouped += seconds.value_or(0);
    }
    if (measured)
      return grouped;
  }
  if (module.fp8Experts && !runsGrouped(module, tokens) &&
      profile.fp8GemmSeconds(1, 1, 1)) {
    double quantize = 0;
    for (const GemmShape &gemm : module.gemms)
      quantize += profile.hbmSeconds(3.0 * double(tokens) *
                                     double(module.topK) * double(gemm.k));
    return quantize +
           load.activeExperts *
               chunkedGemmSeconds(module.gemms, load.tokensPerActiveExpert,
                                  expertMicroBatch,
                                  [&](int64_t m, int64_t n, int64_t k) {
                                    return *profile.fp8GemmSeconds(m, n, k);
                                  });
  }
  double widen = runsGrouped(module, tokens)
                     ? 0
                     : profile.hbmSeconds(double(module.widenBytes));
  return widen + load.activeExperts * gemmSeconds(profile, module.gemms,
                                                  load.tokensPerActiveExpert,
                                                  expertMicroBatch);
}

// Routed experts over `tokens` tokens; `share` of the experts is priced.
double routedExpertSeconds(const HardwareProfile &profile,
                           const ModelCosts &model, const ModuleCosts &module,
                           int64_t tokens, int64_t expertMicroBatch,
                           double share) {
  ExpertLoad load = expectedExpertLoad(module, tokens);
  return share *
         (expertGemmSeconds(profile, module, load, tokens, expertMicroBatch) +
          elementwiseSeconds(profile, model, module, tokens));
}

double denseModuleSeconds(const HardwareProfile &profile,
                          const ModelCosts &model, const ModuleCosts &module,
                          int64_t tokens, int64_t chunk) {
  return gemmSeconds(profile, module.gemms, tokens, chunk) +
         elementwiseSeconds(profile, model, module, tokens);
}

Stage stageOf(ModuleKind kind) {
  switch (kind) {
  case ModuleKind::Attention:
    return Stage::Attention;
  case ModuleKind::Router:
    return Stage::Router;
  case ModuleKind::RoutedExperts:
    return Stage::Experts;
  case ModuleKind::SharedExperts:
    return Stage::SharedExperts;
  case ModuleKind::DenseMlp:
    return Stage::DenseMlp;
  case ModuleKind::Norm:
    return Stage::Norm;
  case ModuleKind::Embedding:
    return Stage::Embedding;
  case ModuleKind::LmHead:
    return Stage::LmHead;
  }
  return Stage::Norm;
}

std::vector<JobId> depsOf(std::initializer_list<std::optional<JobId>> jobs) {
  std::vector<JobId> deps;
  for (const std::optional<JobId> &job : jobs)
    if (job)
      deps.push_back(*job);
  return deps;
}

// Builds the parts both DAGs share: each layer's weight copies behind the
// ring, and compute jobs for modules that are not attention.
class StepBuilder {
public:
  StepBuilder(const ModelCosts &model, const Plan &plan,
              const HardwareProfile &profile)
      : model_(model), plan_(plan), profile_(profile) {}

  StepDag finish() { return std::move(step_); }
  StepTraffic &traffic() { return step_.traffic; }

  // Adds the H2D copies of layer `l`'s streamed weights; a copy into the ring
  // waits until the layer `prefetchDepth` streaming layers back has finished.
  void addWeightCopies(size_t l, int64_t tokens) {
    const auto &modules = model_.layers[l].modules;
    copyOf_.assign(modules.size(), std::nullopt);
    layerStreams_ = false;
    std::optional<JobId> slotFree;
    size_t depth = size_t(plan_.prefetchDepth);
    if (streamingLayerEnds_.size() >= depth)
      slotFree = streamingLayerEnds_[streamingLayerEnds_.size() - depth];
    for (size_t m = 0; m < modules.size(); ++m) {
      const ModuleCosts &module = modules[m];
      int64_t bytes =
          copiedWeightBytes(model_, module, residentUnits(plan_, l, m), tokens);
      if (bytes <= 0)
        continue;
      bool usesRing = module.kind != ModuleKind::Embedding;
      layerStreams_ = layerStreams_ || usesRing;
      JobTarget target{.layer = int64_t(l), .module = int64_t(m)};
      target.bytes = double(bytes);
      // The ring holds one streaming layer per slot, in turn.
      if (usesRing)
        target.buffer = int64_t(streamingLayerEnds_.size() % depth);
      copyOf_[m] = add(
          Stream::HostToDevice, Stage::WeightCopy,
          profile_.copySeconds(double(bytes),
                               CopyDirection::HostToDevicePinned),
          usesRing ? depsOf({slotFree}) : std::vector<JobId>{},
          fmt::format("layer {} {} weights", l, moduleKindName(module.kind)),
          target);
      step_.traffic.weightBytesToGpu += double(bytes);
    }
  }

  void endLayer() {
    if (layerStreams_ && lastCompute_)
      streamingLayerEnds_.push_back(*lastCompute_);
  }

  // Compute of a non-attention module over `tokens` tokens.
  void addModuleCompute(size_t l, size_t m, int64_t tokens,
                        std::vector<JobId> extraDeps, JobTarget target = {}) {
    const ModuleCosts &module = model_.layers[l].modules[m];
    target.layer = int64_t(l);
    target.module = int64_t(m);
    std::string label =
        fmt::format("layer {} {}", l, moduleKindName(module.kind));
    step_.traffic.flops += module.flopsPerToken * double(tokens);
    if (module.kind != ModuleKind::RoutedExperts) {
      std::vector<JobId> deps = std::move(extraDeps);
      if (copyOf_[m])
        deps.push_back(*copyOf_[m]);
      addCompute(stageOf(module.kind),
                 denseModuleSeconds(profile_, model_, module, tokens,
                                    plan_.expertMicroBatch),
                 std::move(deps), label, target);
      return;
    }
    // Resident experts start at once; streamed ones wait for their copy.
    int64_t resident = residentUnits(plan_, l, m);
    double residentShare = double(resident) / double(module.numExperts);
    bool split = resident > 0 && resident < module.numExperts;
    if (resident > 0) {
      target.experts = split ? ExpertShare::Resident : ExpertShare::All;
      addCompute(Stage::Experts,
                 routedExpertSeconds(profile_, model_, module, tokens,
                                     plan_.expertMicroBatch, residentShare),
                 extraDeps, label + " (resident)", target);
    }
    if (resident < module.numExperts) {
      std::vector<JobId> deps = std::move(extraDeps);
      if (copyOf_[m])
        deps.push_back(*copyOf_[m]);
      target.experts = split ? ExpertShare::Streamed : ExpertShare::All;
      addCompute(Stage::Experts,
                 routedExpertSeconds(profile_, model_, module, tokens,
                                     plan_.expertMicroBatch, 1 - residentShare),
                 std::move(deps), label + " (streamed)", target);
    }
  }

  std::optional<JobId> weightCopy(size_t m) const { return copyOf_[m]; }
  std::optional<JobId> lastCompute() const { return lastCompute_; }

  JobId add(Stream stream, Stage stage, double seconds, std::vector<JobId> deps,
            std::string label, JobTarget target) {
    return step_.dag.add(
        Job{stream, stage, seconds, std::move(deps), std::move(label), target});
  }

  JobId addCompute(Stage stage, double seconds, std::vector<JobId> deps,
                   std::string label, JobTarget target) {
    lastCompute_ = add(Stream::Compute, stage, seconds, std::move(deps),
                       std::move(label), target);
    return *lastCompute_;
  }

private:
  const ModelCosts &model_;
  const Plan &plan_;
  const HardwareProfile &profile_;
  StepDag step_;
  std::vector<std::optional<JobId>> copyOf_;
  std::vector<JobId> streamingLayerEnds_;
  std::optional<JobId> lastCompute_;
  bool layerStreams_ = false;
};

// Sequences in attention micro-batches: GPU-KV ones first (no staging), then
// host-KV ones.
struct MicroBatch {
  int64_t firstSequence;
  int64_t sequences;
  bool hostKv;
};

// `hostAttended`: the last host-KV sequences, which the host's cores attend
// and no micro-batch holds.
std::vector<MicroBatch> microBatches(const Plan &plan, int64_t size,
                                     int64_t hostAttended = 0) {
  std::vector<MicroBatch> batches;
  int64_t first = 0;
  for (auto [count, hostKv] :
       {std::pair{plan.gpuKvSequences(), false},
        std::pair{plan.hostKvSequences() - hostAttended, true}})
    for (int64_t done = 0; done < count; done += size) {
      int64_t sequences = std::min(size, count - done);
      batches.push_back({first, sequences, hostKv});
      first += sequences;
    }
  return batches;
}

double decodeAttentionCoreSeconds(const HardwareProfile &profile,
                                  const ModuleCosts &module, int64_t sequences,
                                  int64_t attended) {
  if (module.attentionHeads)
    return profile.attentionDecodeSeconds(
        sequences, attended, module.attentionHeads->heads,
        module.attentionHeads->kvHeads, module.attentionHeads->headDim);
  if (module.mlaHeads)
    if (auto measured = profile.mlaDecodeSeconds(
            sequences, attended, module.mlaHeads->heads,
            module.mlaHeads->latentDim, module.mlaHeads->ropeDim))
      return *measured;
  double bytes =
      double(sequences) * (double(attended) * double(module.kvBytesPerToken) +
                           double(module.stateBytesPerSequence));
  double flops =
      double(sequences) * double(attended) * module.flopsPerContextToken;
  return std::max(profile.hbmSeconds(bytes), profile.peakComputeSeconds(flops));
}

// A prefill chunk's attention over its prompts' causal pairs: the measured
// prefill curve of the module's shape where the profile has one, else as
// decode rows reading `pairs` cached tokens per sequence.
double prefillAttentionCoreSeconds(const HardwareProfile &profile,
                                   const ModuleCosts &module, int64_t prompts,
                                   double pairs) {
  std::optional<double> measured;
  if (module.attentionHeads)
    measured = profile.attentionPrefillSeconds(
        prompts, pairs, module.attentionHeads->heads,
        module.attentionHeads->kvHeads, module.attentionHeads->headDim);
  else if (module.mlaHeads)
    measured = profile.mlaPrefillSeconds(prompts, pairs, module.mlaHeads->heads,
                                         module.mlaHeads->latentDim,
                                         module.mlaHeads->ropeDim);
  return measured ? *measured
                  : decodeAttentionCoreSeconds(profile, module, prompts,
                                               int64_t(pairs));
}

// Softmax attention's output projection, o[hidden, heads·headDim].
GemmShape outputProjection(const ModelCosts &model, const ModuleCosts &module) {
  return {model.hiddenSize,
          module.attentionHeads->heads * module.attentionHeads->headDim};
}

JobTarget hostRowsTarget(const Plan &plan, size_t l, size_t m) {
  int64_t rows = plan.cpuAttentionSequences();
  return {.layer = int64_t(l),
          .module = int64_t(m),
          .firstSequence = plan.residentBatch - rows,
          .sequences = rows};
}

// The decode rows the host's cores attend (the plan's last host-KV
// sequences), as the CUDA backend runs them: the GPU projects their q, k
// and v with everyone's, copies the queries and the new K/V rows to host
// memory, the host attends over its KV while the GPU attends the other
// rows, and the outputs come back for the output projection (the caller's
// job after the GPU's micro-batches). Returns the host's job.
Result<JobId> addHostAttention(StepBuilder &builder, const ModelCosts &model,
                               const Plan &plan, const HardwareProfile &profile,
                               size_t l, size_t m, int64_t attended) {
  const ModuleCosts &module = model.layers[l].modules[m];
  const AttentionHeads &heads = *module.attentionHeads;
  int64_t rows = plan.cpuAttentionSequences();
  JobTarget target = hostRowsTarget(plan, l, m);
  std::string label = fmt::format("layer {} attention (host rows)", l);
  double projections =
      gemmSeconds(profile, module.gemms, rows, rows) -
      gemmSeconds(profile, {outputProjection(model, module)}, rows, rows) +
      elementwiseSeconds(profile, model, module, rows);
  JobId project = builder.addCompute(
      Stage::Attention, std::max(0.0, projections),
      depsOf({builder.weightCopy(m)}), label + " projections", target);
  double rowBytes = double(heads.heads * heads.headDim) *
                    double(model.activationElementBytes);
  JobTarget toHost = target;
  toHost.bytes = double(rows) * (rowBytes + double(module.kvBytesPerToken));
  JobId store = builder.add(
      Stream::DeviceToHost, Stage::KvStore,
      profile.copySeconds(toHost.bytes, CopyDirection::DeviceToHostPinned),
      {project}, label + " queries and KV store", toHost);
  double kvBytes =
      double(rows) * double(attended) * double(module.kvBytesPerToken);
  std::optional<double> seconds = profile.hostAttentionSeconds(
      kvBytes, model.kvDtype, heads.heads / std::max<int64_t>(1, heads.kvHeads),
      /*whileCopying=*/true);
  if (!seconds)
    return makeError("plan: CPU attention share {} needs the hardware "
                     "profile's host attention measurements for {} KV "
                     "(host_cpu: moe-run --profile-hardware)",
                     plan.cpuAttentionShare, model::kvDtypeName(model.kvDtype));
  JobTarget host = target;
  host.bytes = kvBytes;
  // The outputs' copy back is small beside the attention; the host job
  // includes it rather than queueing behind the H2D stream's loads.
  double outputCopy = profile.copySeconds(double(rows) * rowBytes,
                                          CopyDirection::HostToDevicePinned);
  StepTraffic &traffic = builder.traffic();
  traffic.bytesToHost += toHost.bytes;
  traffic.hostKvBytesRead += kvBytes;
  traffic.hiddenBytesToGpu += double(rows) * rowBytes;
  traffic.flops +=
      double(rows) * double(attended) * module.flopsPerContextToken;
  return builder.add(Stream::Host, Stage::HostAttention, *seconds + outputCopy,
                     {store}, label, host);
}

Status validateInputs(const ModelCosts &model, const Plan &plan) {
  MOE_RETURN_IF_ERROR(validateModelCosts(model));
  return validatePlan(model, plan);
}

} // namespace

Result<StepDag> buildDecodeStepDag(const ModelCosts &model, const Plan &plan,
                                   const HardwareProfile &profile) {
  MOE_RETURN_IF_ERROR(validateInputs(model, plan));
  StepBuilder builder(model, plan, profile);
  StepTraffic &traffic = builder.traffic();
  int64_t batch = plan.residentBatch;
  int64_t context = plan.lengths.meanDecodeContext();
  int64_t hostAttended = plan.cpuAttentionSequences();
  std::vector<MicroBatch> batches =
      microBatches(plan, plan.attentionMicroBatchDecode, hostAttended);
  // The job after which each host-KV micro-batch's staging buffer is free.
  std::vector<JobId> stagingFree;

  for (size_t l = 0; l < model.layers.size(); ++l) {
    builder.addWeightCopies(l, batch);
    const auto &modules = model.layers[l].modules;
    for (size_t m = 0; m < modules.size(); ++m) {
      const ModuleCosts &module = modules[m];
      traffic.weightBytesRead += weightBytesRead(model, module, batch);
      if (module.kind != ModuleKind::Attention) {
        builder.addModuleCompute(l, m, batch, {});
        continue;
      }
      int64_t attended = attendedTokens(module, context);
      double kvPerSequence = double(attended) * double(module.kvBytesPerToken) +
                             double(module.stateBytesPerSequence);
      std::optional<JobId> hostAttention;
      if (hostAttended > 0) {
        MOE_ASSIGN_OR_RETURN(
            hostAttention,
            addHostAttention(builder, model, plan, profile, l, m, attended));
      }
      for (size_t i = 0; i < batches.size(); ++i) {
        const MicroBatch &micro = batches[i];
        std::string label =
            fmt::format("layer {} attention {}/{}", l, i + 1, batches.size());
        JobTarget target{.layer = int64_t(l),
                         .module = int64_t(m),
                         .microBatch = int64_t(i),
                         .firstSequence = micro.firstSequence,
                         .sequences = micro.sequences};
        std::optional<JobId> kvLoad;
        double loadBytes = double(micro.sequences) * kvPerSequence;
        size_t buffers = size_t(plan.kvStagingBuffers);
        JobTarget staged = target;
        staged.buffer = int64_t(stagingFree.size() % buffers);
        if (micro.hostKv && loadBytes > 0) {
          std::optional<JobId> bufferFree;
          if (stagingFree.size() >= buffers)
            bufferFree = stagingFree[stagingFree.size() - buffers];
          staged.bytes = loadBytes;
          kvLoad = builder.add(
              Stream::HostToDevice, Stage::KvLoad,
              profile.copySeconds(loadBytes, CopyDirection::HostToDevicePinned),
              depsOf({bufferFree}), label + " KV load", staged);
          traffic.kvBytesToGpu += loadBytes;
        }
        double seconds =
            gemmSeconds(profile, module.gemms, micro.sequences,
                        micro.sequences) +
            decodeAttentionCoreSeconds(profile, module, micro.sequences,
                                       attended) +
            elementwiseSeconds(profile, model, module, micro.sequences);
        if (kvLoad)
          target.buffer = staged.buffer; // attention reads the staged KV
        JobId compute = builder.addCompute(
            Stage::Attention, seconds, depsOf({kvLoad, builder.weightCopy(m)}),
            label, target);
        traffic.kvBytesRead += double(micro.sequences) * kvPerSequence;
        traffic.flops += double(micro.sequences) *
                         (module.flopsPerToken +
                          double(attended) * module.flopsPerContextToken);
        if (!micro.hostKv || !kvLoad)
          continue;
        // The new token's KV (and a recurrent state) goes back to the host.
        double storeBytes =
            double(micro.sequences) *
            double(module.kvBytesPerToken + module.stateBytesPerSequence);
        staged.bytes = storeBytes;
        JobId store = builder.add(
            Stream::DeviceToHost, Stage::KvStore,
            profile.copySeconds(storeBytes, CopyDirection::DeviceToHostPinned),
            {compute}, label + " KV store", staged);
        traffic.bytesToHost += storeBytes;
        stagingFree.push_back(store);
      }
      if (hostAttention)
        builder.addCompute(
            Stage::Attention,
            gemmSeconds(profile, {outputProjection(model, module)},
                        hostAttended, hostAttended),
            {*hostAttention},
            fmt::format("layer {} attention (host rows) output", l),
            hostRowsTarget(plan, l, m));
    }
    builder.endLayer();
  }
  return builder.finish();
}

Result<StepDag> buildPrefillDag(const ModelCosts &model, const Plan &plan,
                                const HardwareProfile &profile,
                                std::optional<int64_t> prompts) {
  MOE_RETURN_IF_ERROR(validateInputs(model, plan));
  if (prompts && (*prompts <= 0 || *prompts > plan.residentBatch))
    return makeError("a prefill pass takes 1..B ({}) prompts, not {}",
                     plan.residentBatch, *prompts);
  StepBuilder builder(model, plan, profile);
  StepTraffic &traffic = builder.traffic();
  int64_t promptTokens = plan.lengths.promptTokens();
  // The pass's prompts, in the batch's proportion of GPU-KV slots.
  Plan pass = plan;
  pass.residentBatch = prompts.value_or(plan.residentBatch);
  // The backend parks the fp32 residual stream between layers.
  double hiddenBytesPerToken = double(model.hiddenSize) * sizeof(float);
  // Chunks of what the step memory holds (whole prompts here, at least
  // one), not of the attention micro-batch: a pass that one chunk holds
  // parks nothing.
  int64_t chunkRows = prefillChunkRows(model, plan);
  std::vector<MicroBatch> chunks =
      microBatches(pass, std::max<int64_t>(1, chunkRows / promptTokens));
  bool parks =
      chunkRows < std::min(kPassRows, pass.residentBatch * promptTokens);
  // The job after which each chunk's hidden-state buffer is free again.
  std::vector<JobId> hiddenBufferFree;
  size_t lastLayer = model.layers.size() - 1;

  for (size_t l = 0; l < model.layers.size(); ++l) {
    builder.addWeightCopies(l, pass.residentBatch * promptTokens);
    const auto &modules = model.layers[l].modules;
    for (size_t c = 0; c < chunks.size(); ++c) {
      const MicroBatch &chunk = chunks[c];
      int64_t tokens = chunk.sequences * promptTokens;
      std::string label =
          fmt::format("layer {} chunk {}/{}", l, c + 1, chunks.size());
      JobTarget chunkTarget{.layer = int64_t(l),
                            .microBatch = int64_t(c),
                            .firstSequence = chunk.firstSequence,
                            .sequences = chunk.sequences};
      JobTarget hidden = chunkTarget;
      hidden.buffer =
          int64_t(hiddenBufferFree.size() % size_t(kPrefillHiddenBuffers));
      hidden.bytes = double(tokens) * hiddenBytesPerToken;
      // The first layer starts from token ids; later ones from parked states.
      std::optional<JobId> hiddenLoad;
      if (l > 0 && parks) {
        std::optional<JobId> bufferFree;
        if (hiddenBufferFree.size() >= size_t(kPrefillHiddenBuffers))
          bufferFree = hiddenBufferFree[hiddenBufferFree.size() -
                                        size_t(kPrefillHiddenBuffers)];
        double bytes = double(tokens) * hiddenBytesPerToken;
        hiddenLoad = builder.add(
            Stream::HostToDevice, Stage::HiddenLoad,
            profile.copySeconds(bytes, CopyDirection::HostToDevicePinned),
            depsOf({bufferFree}), label + " hidden load", hidden);
        traffic.hiddenBytesToGpu += bytes;
      }
      for (size_t m = 0; m < modules.size(); ++m) {
        const ModuleCosts &module = modules[m];
        if (module.kind == ModuleKind::LmHead) {
          // Only each prompt's last position needs logits.
          builder.addModuleCompute(l, m, chunk.sequences, depsOf({hiddenLoad}),
                                   chunkTarget);
          continue;
        }
        if (module.kind != ModuleKind::Attention) {
          builder.addModuleCompute(l, m, tokens, depsOf({hiddenLoad}),
                                   chunkTarget);
          continue;
        }
        double pairs =
            plan.lengths.prompts.meanCausalPairs(module.kvWindowTokens);
        double contextFlops =
            double(chunk.sequences) * pairs * module.flopsPerContextToken;
        // Every prompt row is stored, windowed cache or not.
        double kvBytes =
            double(chunk.sequences) * double(heldKvBytes(module, promptTokens));
        double seconds = gemmSeconds(profile, module.gemms, tokens, tokens) +
                         prefillAttentionCoreSeconds(profile, module,
                                                     chunk.sequences, pairs) +
                         elementwiseSeconds(profile, model, module, tokens);
        JobTarget attention = chunkTarget;
        attention.module = int64_t(m);
        JobId compute =
            builder.addCompute(Stage::Attention, seconds,
                               depsOf({hiddenLoad, builder.weightCopy(m)}),
                               fmt::format("layer {} attention chunk {}/{}", l,
                                           c + 1, chunks.size()),
                               attention);
        traffic.flops += module.flopsPerToken * double(tokens) + contextFlops;
        if (chunk.hostKv && kvBytes > 0) {
          JobTarget store = attention;
          store.bytes = kvBytes;
          builder.add(
              Stream::DeviceToHost, Stage::KvStore,
              profile.copySeconds(kvBytes, CopyDirection::DeviceToHostPinned),
              {compute}, label + " KV store", store);
          traffic.bytesToHost += kvBytes;
        }
      }
      std::optional<JobId> chunkDone = builder.lastCompute();
      if (l == lastLayer || !chunkDone || !parks) {
        if (chunkDone)
          hiddenBufferFree.push_back(*chunkDone);
        continue;
      }
      double bytes = double(tokens) * hiddenBytesPerToken;
      hiddenBufferFree.push_back(builder.add(
          Stream::DeviceToHost, Stage::HiddenStore,
          profile.copySeconds(bytes, CopyDirection::DeviceToHostPinned),
          {*chunkDone}, label + " hidden store", hidden));
      traffic.bytesToHost += bytes;
    }
    builder.endLayer();
  }
  return builder.finish();
}

std::string_view rooflineBoundName(RooflineBound bound) {
  switch (bound) {
  case RooflineBound::PcieBytes:
    return "PCIe bytes";
  case RooflineBound::GemmFlops:
    return "GEMM FLOPs";
  case RooflineBound::HbmBytes:
    return "HBM bytes";
  case RooflineBound::HostKvBandwidth:
    return "host KV bandwidth";
  }
  return "unknown";
}

double Roofline::seconds() const {
  return std::max({pcieSeconds, computeSeconds, hbmSeconds, hostKvSeconds});
}

Roofline rooflineOf(const StepTraffic &traffic,
                    const HardwareProfile &profile) {
  Roofline roofline;
  roofline.pcieSeconds = profile.copySeconds(traffic.bytesToGpu(),
                                             CopyDirection::HostToDevicePinned);
  roofline.computeSeconds = profile.peakComputeSeconds(traffic.flops);
  roofline.hbmSeconds =
      profile.hbmSeconds(traffic.kvBytesRead + traffic.weightBytesRead);
  if (roofline.computeSeconds > roofline.pcieSeconds)
    roofline.bound = RooflineBound::GemmFlops;
  if (roofline.hbmSeconds >
      std::max(roofline.pcieSeconds, roofline.computeSeconds))
    roofline.bound = RooflineBound::HbmBytes;
  if (std::optional<double> rate =
          profile.hostReadBytesPerSecond(/*whileCopying=*/true);
      rate && traffic.hostKvBytesRead > 0)
    roofline.hostKvSeconds = traffic.hostKvBytesRead / *rate;
  if (roofline.hostKvSeconds >
      std::max(
          {roofline.pcieSeconds, roofline.computeSeconds, roofline.hbmSeconds}))
    roofline.bound = RooflineBound::HostKvBandwidth;
  return roofline;
}

} // namespace moe::costmodel
