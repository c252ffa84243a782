//===- ScheduleOverlap.cpp - the moe-schedule-overlap pass ----------------===//
//
// The cost model builds the DAG of one step to price a plan; this pass turns
// that same DAG into sched ops, so what runs is what was priced.
//
//===----------------------------------------------------------------------===//

#include "moe/Analysis/CostModelBridge.h"
#include "moe/Conversion/Passes.h"

#include "dialects/MoE/MoEOps.h"
#include "dialects/Sched/SchedOps.h"
#include "runtime/costmodel/StepDag.h"

#include "mlir/IR/Builders.h"

namespace mlir::moe {
#define GEN_PASS_DEF_SCHEDULEOVERLAP
#include "moe/Conversion/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;
namespace cm = ::moe::costmodel;

namespace {

constexpr StringLiteral kComputeStream = "compute", kH2DStream = "h2d",
                        kD2HStream = "d2h", kHostStream = "host",
                        kWeightRing = "weight_ring", kKvStaging = "kv_staging",
                        kHidden = "hidden";

/// The cost model's plan behind a recorded decision.
cm::Plan planOf(BatchingAttr b, const cm::ModelCosts &costs) {
  cm::Plan plan;
  plan.residentBatch = b.getResidentBatch();
  plan.attentionMicroBatchPrefill = b.getAttentionMicroBatchPrefill();
  plan.attentionMicroBatchDecode = b.getAttentionMicroBatchDecode();
  plan.expertMicroBatch = b.getExpertMicroBatch();
  plan.prefetchDepth = b.getPrefetchDepth();
  plan.kvStagingBuffers = b.getKvStagingBuffers();
  plan.cpuAttentionShare = b.getCpuAttentionShare().convertToDouble();
  plan.kvGpuFraction = b.getKvGpuFraction().convertToDouble();
  plan.resident = cm::residentPrefix(costs, b.getResidentUnits());
  plan.lengths = lengthsOf(b);
  return plan;
}

std::optional<sched::CopyKind> copyKindOf(cm::Stage stage) {
  switch (stage) {
  case cm::Stage::WeightCopy:
    return sched::CopyKind::weights;
  case cm::Stage::KvLoad:
    return sched::CopyKind::kv_load;
  case cm::Stage::KvStore:
    return sched::CopyKind::kv_store;
  case cm::Stage::HiddenLoad:
    return sched::CopyKind::hidden_load;
  case cm::Stage::HiddenStore:
    return sched::CopyKind::hidden_store;
  default:
    return std::nullopt;
  }
}

sched::ExpertShare expertShareOf(cm::ExpertShare share) {
  switch (share) {
  case cm::ExpertShare::All:
    return sched::ExpertShare::all;
  case cm::ExpertShare::Resident:
    return sched::ExpertShare::resident;
  case cm::ExpertShare::Streamed:
    return sched::ExpertShare::streamed;
  }
  llvm_unreachable("unknown expert share");
}

/// The pool a job's buffer index refers to, if any.
FlatSymbolRefAttr poolOf(MLIRContext *context, const cm::Job &job) {
  if (job.target.buffer < 0)
    return {};
  switch (job.stage) {
  case cm::Stage::WeightCopy:
    return FlatSymbolRefAttr::get(context, kWeightRing);
  case cm::Stage::HiddenLoad:
  case cm::Stage::HiddenStore:
    return FlatSymbolRefAttr::get(context, kHidden);
  default:
    return FlatSymbolRefAttr::get(context, kKvStaging); // KV and attention
  }
}

void emitStep(OpBuilder &builder, Location loc, StringRef name,
              const cm::Dag &dag, double predictedSeconds) {
  MLIRContext *context = builder.getContext();
  auto step = sched::StepOp::create(builder, loc, builder.getStringAttr(name),
                                    builder.getF64FloatAttr(predictedSeconds));
  Block *body = new Block();
  step.getBody().push_back(body);
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToEnd(body);
  auto event = sched::EventType::get(context);
  auto i64 = [&](int64_t value) { return builder.getI64IntegerAttr(value); };
  std::vector<Value> done;
  done.reserve(dag.size());
  for (const cm::Job &job : dag.jobs()) {
    SmallVector<Value> after;
    for (cm::JobId dep : job.deps)
      after.push_back(done[dep]);
    const cm::JobTarget &t = job.target;
    StringRef streamName = kComputeStream;
    if (job.stream == cm::Stream::HostToDevice)
      streamName = kH2DStream;
    else if (job.stream == cm::Stream::DeviceToHost)
      streamName = kD2HStream;
    else if (job.stream == cm::Stream::Host)
      streamName = kHostStream;
    auto stream = FlatSymbolRefAttr::get(context, streamName);
    FlatSymbolRefAttr pool = poolOf(context, job);
    Value result;
    if (std::optional<sched::CopyKind> kind = copyKindOf(job.stage))
      result = sched::CopyOp::create(
          builder, loc, event, after, stream,
          sched::CopyKindAttr::get(context, *kind), i64(t.layer),
          i64(t.module), i64(t.microBatch), i64(t.firstSequence),
          i64(t.sequences), pool, i64(t.buffer),
          builder.getF64FloatAttr(t.bytes),
          builder.getF64FloatAttr(job.seconds));
    else
      result = sched::ComputeOp::create(
          builder, loc, event, after, stream,
          builder.getStringAttr(cm::stageName(job.stage)), i64(t.layer),
          i64(t.module), i64(t.microBatch), i64(t.firstSequence),
          i64(t.sequences), pool, i64(t.buffer),
          sched::ExpertShareAttr::get(context, expertShareOf(t.experts)),
          builder.getF64FloatAttr(job.seconds));
    done.push_back(result);
  }
}

struct ScheduleOverlapPass
    : public mlir::moe::impl::ScheduleOverlapBase<ScheduleOverlapPass> {
  using ScheduleOverlapBase::ScheduleOverlapBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto batching =
        module->getAttrOfType<BatchingAttr>(MoEDialect::kBatchingAttrName);
    if (!batching) {
      module.emitError() << "moe-schedule-overlap needs the planner's "
                            "decision: run moe-select-batch-sizes first";
      return signalPassFailure();
    }
    if (!module.getOps<sched::StepOp>().empty()) {
      module.emitError() << "the module already has a schedule";
      return signalPassFailure();
    }
    if (profile.empty()) {
      module.emitError() << "moe-schedule-overlap needs the hardware profile "
                            "the plan was made for: profile=...";
      return signalPassFailure();
    }
    ::moe::Result<cm::HardwareProfile> hardware =
        cm::HardwareProfile::load(profile);
    if (!hardware.ok()) {
      module.emitError() << "hardware profile: " << hardware.error().message();
      return signalPassFailure();
    }
    FailureOr<CostModelView> view =
        buildCostModelView(module, planDtypesOf(batching));
    if (failed(view))
      return signalPassFailure();
    cm::Plan plan = planOf(batching, view->costs);
    ::moe::Result<cm::StepDag> decode =
        cm::buildDecodeStepDag(view->costs, plan, *hardware);
    ::moe::Result<cm::StepDag> prefill =
        cm::buildPrefillDag(view->costs, plan, *hardware);
    if (!decode.ok() || !prefill.ok()) {
      module.emitError() << "schedule: "
                         << (decode.ok() ? prefill : decode).error().message();
      return signalPassFailure();
    }
    ::moe::Result<cm::Evaluation> decodeTime = cm::evaluate(decode->dag);
    ::moe::Result<cm::Evaluation> prefillTime = cm::evaluate(prefill->dag);
    if (!decodeTime.ok() || !prefillTime.ok()) {
      module.emitError() << "schedule: the step DAG does not evaluate";
      return signalPassFailure();
    }

    cm::MemoryUse memory = cm::accountMemory(view->costs, plan);
    OpBuilder builder = OpBuilder::atBlockEnd(module.getBody());
    Location loc = module.getLoc();
    auto stream = [&](StringRef name, sched::StreamKind kind) {
      sched::StreamOp::create(builder, loc, builder.getStringAttr(name),
                              sched::StreamKindAttr::get(&getContext(), kind));
    };
    stream(kComputeStream, sched::StreamKind::compute);
    stream(kH2DStream, sched::StreamKind::h2d);
    stream(kD2HStream, sched::StreamKind::d2h);
    if (plan.cpuAttentionSequences() > 0)
      stream(kHostStream, sched::StreamKind::host);
    auto pool = [&](StringRef name, sched::PoolKind kind, int64_t count,
                    int64_t totalBytes) {
      sched::BufferPoolOp::create(
          builder, loc, builder.getStringAttr(name),
          sched::PoolKindAttr::get(&getContext(), kind),
          builder.getI64IntegerAttr(count),
          builder.getI64IntegerAttr(totalBytes / count));
    };
    pool(kWeightRing, sched::PoolKind::weight_ring, plan.prefetchDepth,
         memory.weightRingBytes);
    pool(kKvStaging, sched::PoolKind::kv_staging, plan.kvStagingBuffers,
         memory.kvStagingBytes);
    int64_t hiddenBytes = plan.attentionMicroBatchPrefill *
                          plan.lengths.promptTokens() * view->costs.hiddenSize *
                          view->costs.activationElementBytes;
    pool(kHidden, sched::PoolKind::hidden, cm::kPrefillHiddenBuffers,
         hiddenBytes * cm::kPrefillHiddenBuffers);
    emitStep(builder, loc, "decode", decode->dag, decodeTime->makespan);
    emitStep(builder, loc, "prefill", prefill->dag, prefillTime->makespan);
  }
};

} // namespace
