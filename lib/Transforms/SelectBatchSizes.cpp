//===- SelectBatchSizes.cpp - the moe-select-batch-sizes pass -------------===//
//
// The search itself is the plain-C++ cost model (runtime/costmodel), shared
// with the runtime; this pass feeds it the IR's module costs and records the
// decision and the evidence for it on the module.
//
//===----------------------------------------------------------------------===//

#include "moe/Analysis/CostModelBridge.h"
#include "moe/Transforms/Passes.h"

#include "dialects/MoE/MoEOps.h"
#include "runtime/costmodel/Phases.h"

#include "mlir/IR/Builders.h"
#include "llvm/Support/Path.h"

namespace mlir::moe {
#define GEN_PASS_DEF_SELECTBATCHSIZES
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;
namespace cm = ::moe::costmodel;

namespace {

/// Element bytes of the weights other than quantized experts: fp8 and
/// mxfp4 plans run them bf16, as the backends do.
std::optional<int64_t> weightElementBytes(StringRef dtype) {
  return llvm::StringSwitch<std::optional<int64_t>>(dtype)
      .Case("f32", 4)
      .Cases({"bf16", "f16", "fp8", "mxfp4"}, 2)
      .Default(std::nullopt);
}

int64_t gibToBytes(double gib) {
  return static_cast<int64_t>(gib * 1024.0 * 1024.0 * 1024.0);
}

/// Builds the report dictionary with a fluent interface.
class Report {
public:
  explicit Report(MLIRContext *context) : builder(context) {}
  Report &add(StringRef key, double value) {
    attrs.append(key, builder.getF64FloatAttr(value));
    return *this;
  }
  Report &add(StringRef key, int64_t value) {
    attrs.append(key, builder.getI64IntegerAttr(value));
    return *this;
  }
  Report &add(StringRef key, StringRef value) {
    attrs.append(key, builder.getStringAttr(value));
    return *this;
  }
  Report &add(StringRef key, Attribute value) {
    attrs.append(key, value);
    return *this;
  }
  DictionaryAttr get() { return builder.getDictionaryAttr(attrs); }

private:
  Builder builder;
  NamedAttrList attrs;
};

int64_t residentUnitCount(const cm::ResidentSet &set) {
  int64_t count = 0;
  for (const std::vector<int64_t> &layer : set.units)
    for (int64_t units : layer)
      count += units;
  return count;
}

DictionaryAttr planSummary(MLIRContext *context, const cm::Plan &plan) {
  return Report(context)
      .add("resident_batch", plan.residentBatch)
      .add("attention_micro_batch_decode", plan.attentionMicroBatchDecode)
      .add("expert_micro_batch", plan.expertMicroBatch)
      .add("prefetch_depth", plan.prefetchDepth)
      .add("kv_gpu_fraction", plan.kvGpuFraction)
      .add("cpu_attention_share", plan.cpuAttentionShare)
      .add("resident_units", residentUnitCount(plan.resident))
      .get();
}

struct SelectBatchSizesPass
    : public mlir::moe::impl::SelectBatchSizesBase<SelectBatchSizesPass> {
  using SelectBatchSizesBase::SelectBatchSizesBase;

  void runOnOperation() override;
  FailureOr<cm::HardwareProfile> loadProfile();
  FailureOr<cm::GenerationLengths> jobLengths();
  // `refills`: the job's plan, which takes in new prompts as slots free
  // (a tail plan runs after the last admission); `drain`: how the job's
  // plan steps as its batch drains.
  DictionaryAttr report(const cm::PlanChoice &choice,
                        const cm::HardwareProfile &profile, bool refills,
                        const cm::DrainCurve *drain = nullptr);
  DictionaryAttr refillReport(const cm::Candidate &best);
  DictionaryAttr tailReport(const cm::TailChoice &tail, BatchingAttr batching,
                            const cm::HardwareProfile &profile);
};

FailureOr<cm::HardwareProfile> SelectBatchSizesPass::loadProfile() {
  ModuleOp module = getOperation();
  if (profile.empty())
    return module.emitError()
           << "moe-select-batch-sizes needs a hardware profile: "
              "profile=models/hardware/h100-sxm-80gb.json";
  ::moe::Result<cm::HardwareProfile> loaded =
      cm::HardwareProfile::load(profile);
  if (!loaded.ok())
    return module.emitError()
           << "hardware profile: " << loaded.error().message();
  if (gpuMemGiB < 0 || hostMemGiB < 0)
    return module.emitError() << "gpu-mem and host-mem must be >= 0 GiB";
  ::moe::Result<cm::HardwareProfile> budgeted = loaded->withBudgets(
      gpuMemGiB > 0 ? std::optional(gibToBytes(gpuMemGiB)) : std::nullopt,
      hostMemGiB > 0 ? std::optional(gibToBytes(hostMemGiB)) : std::nullopt);
  if (!budgeted.ok())
    return module.emitError() << budgeted.error().message();
  return std::move(budgeted).value();
}

/// The lengths to plan for: the job's distributions from `lengths`, cut at
/// prompt-len and gen-len where given, or prompts of prompt-len and
/// generations of gen-len (spread evenly from gen-len-min).
FailureOr<cm::GenerationLengths> SelectBatchSizesPass::jobLengths() {
  ModuleOp module = getOperation();
  constexpr int64_t kDefaultPrompt = 512, kDefaultGenerated = 256;
  if (lengths.empty()) {
    int64_t longest = generatedTokens ? generatedTokens : kDefaultGenerated;
    if (minGeneratedTokens < 0 || minGeneratedTokens > longest)
      return module.emitError() << "gen-len-min must be in [0, gen-len]";
    return cm::GenerationLengths::spread(promptTokens ? promptTokens
                                                      : kDefaultPrompt,
                                         longest, minGeneratedTokens);
  }
  if (minGeneratedTokens != 0)
    return module.emitError() << "gen-len-min spreads gen-len's "
                                 "generations: the lengths file already "
                                 "gives their distribution";
  ::moe::Result<cm::GenerationLengths> loaded = cm::loadJobLengths(lengths);
  if (!loaded.ok())
    return module.emitError() << "lengths: " << loaded.error().message();
  if (promptTokens > 0)
    loaded->prompts = loaded->prompts.cappedAt(promptTokens);
  if (generatedTokens > 0)
    loaded->generated = loaded->generated.cappedAt(generatedTokens);
  return std::move(loaded).value();
}

DictionaryAttr curveAttr(MLIRContext *context, const cm::LiveStepCurve &curve) {
  Builder builder(context);
  return Report(context)
      .add("live", builder.getDenseI64ArrayAttr(curve.live))
      .add("seconds", builder.getDenseF64ArrayAttr(curve.seconds))
      .get();
}

DictionaryAttr SelectBatchSizesPass::report(const cm::PlanChoice &choice,
                                            const cm::HardwareProfile &profile,
                                            bool refills,
                                            const cm::DrainCurve *drain) {
  MLIRContext *context = &getContext();
  Builder builder(context);
  const cm::Candidate &best = choice.best;

  auto stagesOf = [&](const cm::Evaluation &evaluation) {
    Report stages(context);
    for (size_t stage = 0; stage < cm::kNumStages; ++stage)
      if (double seconds = evaluation.stageSeconds[stage]; seconds > 0)
        stages.add(cm::stageName(static_cast<cm::Stage>(stage)), seconds);
    return stages.get();
  };
  Report streams(context);
  for (size_t stream = 0; stream < cm::kNumStreams; ++stream)
    streams.add(cm::streamName(static_cast<cm::Stream>(stream)),
                choice.decode.busySeconds[stream]);

  const cm::StepTraffic &traffic = best.decodeTraffic;
  DictionaryAttr bytes = Report(context)
                             .add("h2d_weights", traffic.weightBytesToGpu)
                             .add("h2d_kv", traffic.kvBytesToGpu)
                             .add("h2d_hidden", traffic.hiddenBytesToGpu)
                             .add("d2h", traffic.bytesToHost)
                             .add("hbm_kv_read", traffic.kvBytesRead)
                             .add("host_kv_read", traffic.hostKvBytesRead)
                             .add("flops", traffic.flops)
                             .get();

  const cm::MemoryUse &memory = best.memory;
  Report gpuPools(context);
  gpuPools.add("resident_weights", memory.residentWeightBytes)
      .add("weight_ring", memory.weightRingBytes)
      .add("kv", memory.gpuKvBytes)
      .add("kv_staging", memory.kvStagingBytes)
      .add("activations", memory.activationBytes);
  if (memory.widenScratchBytes > 0)
    gpuPools.add("widened_experts", memory.widenScratchBytes);
  DictionaryAttr gpu = gpuPools.add("total", memory.gpuBytes())
                           .add("budget", profile.gpuBudgetBytes())
                           .get();
  DictionaryAttr host = Report(context)
                            .add("streamed_weights", memory.hostWeightBytes)
                            .add("kv", memory.hostKvBytes)
                            .add("parked_hidden", memory.parkedHiddenBytes)
                            .add("total", memory.hostBytes())
                            .add("budget", profile.hostBudgetBytes())
                            .get();

  const cm::Roofline &roofline = best.decodeRoofline;
  DictionaryAttr bound =
      Report(context)
          .add("bound", cm::rooflineBoundName(roofline.bound))
          .add("pcie_seconds", roofline.pcieSeconds)
          .add("compute_seconds", roofline.computeSeconds)
          .add("hbm_seconds", roofline.hbmSeconds)
          .add("host_kv_seconds", roofline.hostKvSeconds)
          .add("seconds", roofline.seconds())
          .add("fraction_of_step", roofline.seconds() / best.decodeStepSeconds)
          .get();

  SmallVector<Attribute> runnerUps;
  for (const cm::RunnerUp &runnerUp : choice.runnerUps) {
    Report entry(context);
    entry.add("plan", planSummary(context, runnerUp.plan))
        .add("why_lost", runnerUp.whyLost);
    if (runnerUp.decodeTokensPerSecond)
      entry.add("decode_tokens_per_second", *runnerUp.decodeTokensPerSecond);
    if (runnerUp.jobTokensPerSecond)
      entry.add("job_tokens_per_second", *runnerUp.jobTokensPerSecond);
    runnerUps.push_back(entry.get());
  }

  // What the predictions were priced on (a card's numbers apply to that
  // card): the profile's device and file name, not its path, so that a plan
  // is the same wherever it is made.
  DictionaryAttr priced =
      Report(context)
          .add("device", profile.device().name)
          .add("file", llvm::sys::path::filename(this->profile.getValue()))
          .get();

  Report result(context);
  result.add("profile", priced)
      .add("decode_tokens_per_second", best.decodeTokensPerSecond)
      .add("decode_step_seconds", best.decodeStepSeconds)
      .add("prefill_tokens_per_second", choice.prefillTokensPerSecond)
      .add("prefill_seconds", choice.prefillSeconds)
      .add("decode_stage_seconds", stagesOf(choice.decode))
      .add("prefill_stage_seconds", stagesOf(choice.prefill))
      .add("decode_stream_busy_seconds", streams.get())
      .add("decode_bytes_per_step", bytes)
      .add("gpu_memory", gpu)
      .add("host_memory", host)
      .add("roofline", bound)
      .add("candidates_evaluated",
           static_cast<int64_t>(choice.candidatesEvaluated))
      .add("runner_ups", builder.getArrayAttr(runnerUps));
  if (refills)
    result.add("job_tokens_per_second", choice.best.jobTokensPerSecond)
        .add("refill", refillReport(choice.best));
  if (drain)
    result.add("drain_context_tokens", drain->lengths.meanDecodeContext())
        .add("drain_steps", curveAttr(context, drain->steps));
  return result.get();
}

// How the runtime refills the job's batch (moe-run derives the same slots
// from the plan) and what a cycle of it costs.
DictionaryAttr SelectBatchSizesPass::refillReport(const cm::Candidate &best) {
  return Report(&getContext())
      .add("slots", best.refillSlots)
      .add("prompts", best.refill.prompts)
      .add("steps_between", best.refill.steps)
      .add("idle_slots", best.refill.idleSlots)
      .add("weight_seconds", best.decodeWeightCopySeconds)
      .add("pass_seconds", best.refillPassSeconds)
      .get();
}

DictionaryAttr
SelectBatchSizesPass::tailReport(const cm::TailChoice &tail,
                                 BatchingAttr batching,
                                 const cm::HardwareProfile &profile) {
  MLIRContext *context = &getContext();
  return Report(context)
      .add("batching", batching)
      .add("report", report(tail.plan, profile, /*refills=*/false))
      .add("context_tokens", tail.plan.best.plan.lengths.meanDecodeContext())
      .add("tail_steps", curveAttr(context, tail.tailSteps))
      .add("tail_step_count", tail.tailStepCount)
      .add("main_tail_seconds", tail.mainTailSeconds)
      .add("recompute_seconds", tail.recomputeSeconds)
      .add("saved_seconds", tail.savedSeconds)
      .get();
}

void SelectBatchSizesPass::runOnOperation() {
  ModuleOp module = getOperation();
  std::optional<::moe::model::KvDtype> kv = ::moe::model::parseKvDtype(kvDtype);
  std::optional<int64_t> weightBytes = weightElementBytes(weightDtype);
  if (!kv || (!weightBytes && weightDtype != "declared")) {
    module.emitError() << "unknown dtype: weight-dtype must be declared, "
                          "bf16, f16, f32, fp8 or mxfp4; kv-dtype bf16 or "
                          "fp8";
    return signalPassFailure();
  }
  if (promptTokens < 0 || generatedTokens < 0 || maxBatch <= 0 || batch < 0 ||
      runnerUps < 0) {
    module.emitError() << "prompt-len, gen-len and batch must not be "
                          "negative, max-batch must be positive";
    return signalPassFailure();
  }
  FailureOr<cm::GenerationLengths> toPlan = jobLengths();
  if (failed(toPlan))
    return signalPassFailure();
  FailureOr<cm::HardwareProfile> hardware = loadProfile();
  if (failed(hardware))
    return signalPassFailure();
  PlanDtypes dtypes;
  dtypes.weightElementBytes = weightBytes;
  // declared: the routed experts as the checkpoint stores them.
  auto model = module->getAttrOfType<ModelAttr>(MoEDialect::kModelAttrName);
  dtypes.experts =
      ::moe::model::parseWeightDtype(weightDtype == "declared" && model
                                         ? model.getExpertWeightDtype()
                                         : StringRef(weightDtype))
          .value_or(::moe::model::WeightDtype::bf16);
  dtypes.cache.kv = *kv;
  FailureOr<CostModelView> view = buildCostModelView(module, dtypes);
  if (failed(view))
    return signalPassFailure();

  cm::SearchOptions options;
  options.maxResidentBatch = maxBatch;
  if (batch > 0)
    options.residentBatches = {batch};
  options.maxRunnerUps = static_cast<size_t>(runnerUps);
  if (hostAttention != "auto") {
    double share = 0;
    if (StringRef(hostAttention).getAsDouble(share) || !(share >= 0) ||
        !(share <= 1)) {
      module.emitError() << "host-attention must be auto or a share in "
                            "[0, 1], not '"
                         << hostAttention << "'";
      return signalPassFailure();
    }
    options.hostAttentionShare = share;
  }
  ::moe::Result<cm::PlanChoice> choice =
      cm::selectPlan(view->costs, *hardware, *toPlan, options);
  if (!choice.ok()) {
    module.emitError() << "planning: " << choice.error().message();
    return signalPassFailure();
  }
  auto batchingOf = [&](const cm::Plan &plan) {
    const cm::GenerationLengths &planned = plan.lengths;
    int64_t shortest = planned.generated.shortest();
    // A job's own lengths are recorded whole; the spread options are what
    // prompt, generated and min_generated tokens say.
    auto recorded = [&](const cm::LengthDistribution &distribution) {
      return lengths.empty() ? DenseF64ArrayAttr()
                             : lengthsAttr(&getContext(), distribution);
    };
    return BatchingAttr::get(
        &getContext(), plan.residentBatch, plan.attentionMicroBatchPrefill,
        plan.attentionMicroBatchDecode, plan.expertMicroBatch,
        plan.prefetchDepth, plan.kvStagingBuffers,
        APFloat(plan.cpuAttentionShare), APFloat(plan.kvGpuFraction),
        residentUnitCount(plan.resident), planned.prompts.longest(),
        planned.longestGeneration(), hardware->gpuBudgetBytes(),
        hardware->hostBudgetBytes(), ::moe::model::kvDtypeName(*kv),
        ::moe::model::weightDtypeName(dtypes.experts),
        shortest < planned.longestGeneration() ? shortest : 0,
        plan.hostKvPoolTokens(), recorded(planned.prompts),
        recorded(planned.generated));
  };
  module->setAttr(MoEDialect::kBatchingAttrName, batchingOf(choice->best.plan));
  // A job that generates drains once its last prompt is admitted.
  std::optional<cm::DrainCurve> drain;
  if (toPlan->generated.mean() > 0) {
    ::moe::Result<cm::DrainCurve> priced =
        cm::drainCurve(view->costs, *hardware, choice->best.plan);
    if (!priced.ok()) {
      module.emitError() << "pricing the job's drain: "
                         << priced.error().message();
      return signalPassFailure();
    }
    drain = std::move(priced).value();
  }
  module->setAttr(
      MoEDialect::kPlanReportAttrName,
      report(*choice, *hardware, /*refills=*/true, drain ? &*drain : nullptr));
  if (!tail || !drain)
    return;
  ::moe::Result<std::optional<cm::TailChoice>> tailChoice = cm::selectTailPlan(
      view->costs, *hardware, choice->best.plan, *drain, options);
  if (!tailChoice.ok()) {
    module.emitError() << "planning the tail: " << tailChoice.error().message();
    return signalPassFailure();
  }
  if (*tailChoice)
    module->setAttr(MoEDialect::kTailAttrName,
                    tailReport(**tailChoice,
                               batchingOf((*tailChoice)->plan.best.plan),
                               *hardware));
}

} // namespace
