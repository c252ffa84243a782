//===- ExportPlan.cpp - moe module → FlatBuffers plan ---------------------===//
//
// Parameters keep their module order; ops keep program order, and SSA values
// become integers (0 = token ids). Weights are referenced by param index.
//
//===----------------------------------------------------------------------===//

#include "moe/Target/Plan.h"

#include "dialects/MoE/MoEOps.h"
#include "dialects/Sched/SchedOps.h"
#include "runtime/model/WeightFormat.h"
#include "runtime/schemas/PlanVersion.h"
#include "runtime/schemas/plan_generated.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::moe;
namespace fb = flatbuffers;
namespace pl = ::moe::plan;

namespace {

pl::JobKind jobKindOf(sched::CopyKind kind) {
  switch (kind) {
  case sched::CopyKind::weights:
    return pl::JobKind::copy_weights;
  case sched::CopyKind::kv_load:
    return pl::JobKind::kv_load;
  case sched::CopyKind::kv_store:
    return pl::JobKind::kv_store;
  case sched::CopyKind::hidden_load:
    return pl::JobKind::hidden_load;
  case sched::CopyKind::hidden_store:
    return pl::JobKind::hidden_store;
  }
  llvm_unreachable("unknown copy kind");
}

pl::StreamKind streamKindOf(sched::StreamKind kind) {
  switch (kind) {
  case sched::StreamKind::compute:
    return pl::StreamKind::compute;
  case sched::StreamKind::h2d:
    return pl::StreamKind::h2d;
  case sched::StreamKind::d2h:
    return pl::StreamKind::d2h;
  case sched::StreamKind::host:
    return pl::StreamKind::host;
  }
  llvm_unreachable("unknown stream kind");
}

pl::PoolKind poolKindOf(sched::PoolKind kind) {
  switch (kind) {
  case sched::PoolKind::weight_ring:
    return pl::PoolKind::weight_ring;
  case sched::PoolKind::kv_staging:
    return pl::PoolKind::kv_staging;
  case sched::PoolKind::hidden:
    return pl::PoolKind::hidden;
  }
  llvm_unreachable("unknown pool kind");
}

pl::ExpertShare expertShareOf(sched::ExpertShare share) {
  switch (share) {
  case sched::ExpertShare::all:
    return pl::ExpertShare::all;
  case sched::ExpertShare::resident:
    return pl::ExpertShare::resident;
  case sched::ExpertShare::streamed:
    return pl::ExpertShare::streamed;
  }
  llvm_unreachable("unknown expert share");
}

class PlanWriter {
public:
  explicit PlanWriter(ModuleOp module) : module(module) {}

  FailureOr<std::vector<uint8_t>> write();

private:
  int param(FlatSymbolRefAttr ref) const {
    return ref ? paramIndex.lookup(ref.getValue()) : -1;
  }
  int param(std::optional<FlatSymbolRefAttr> ref) const {
    return ref ? param(*ref) : -1;
  }
  fb::Offset<pl::Rope> rope(RopeAttr attr) {
    return pl::CreateRope(
        builder, static_cast<pl::RopeStyle>(attr.getStyle()),
        attr.getTheta().convertToDouble(), attr.getRotaryDim(),
        static_cast<pl::RopeScaling>(attr.getScaling()),
        attr.getFactor().convertToDouble(), attr.getOriginalMaxPosition(),
        attr.getBetaFast().convertToDouble(),
        attr.getBetaSlow().convertToDouble(), attr.getTruncate(),
        attr.getAttentionFactor().convertToDouble());
  }
  static double f64(FloatAttr attr) {
    return attr ? attr.getValueAsDouble() : 0.0;
  }

  FailureOr<fb::Offset<pl::Param>> writeParam(ParamOp op);
  fb::Offset<pl::Batching> writeBatching(BatchingAttr batching);
  fb::Offset<pl::Prediction> writePrediction(DictionaryAttr report);
  FailureOr<fb::Offset<pl::Schedule>> writeSchedule();
  // The compiled plans of the job's phases (moe.tail's "plan").
  FailureOr<fb::Offset<fb::Vector<fb::Offset<pl::Phase>>>> writePhases();
  FailureOr<fb::Offset<pl::StepSchedule>>
  writeStep(sched::StepOp step, const llvm::StringMap<int> &pools);
  FailureOr<std::pair<pl::Module, fb::Offset<void>>> writeModule(Operation *op);

  ModuleOp module;
  fb::FlatBufferBuilder builder;
  llvm::StringMap<int> paramIndex;
};

FailureOr<fb::Offset<pl::Param>> PlanWriter::writeParam(ParamOp op) {
  Type element = op.getTensorType().getElementType();
  pl::DType dtype;
  if (element.isF32())
    dtype = pl::DType::f32;
  else if (element.isF16())
    dtype = pl::DType::f16;
  else if (element.isBF16())
    dtype = pl::DType::bf16;
  else
    return op.emitOpError() << "element type " << element
                            << " has no plan dtype (f32, f16, bf16)";
  std::vector<int64_t> shape(op.getTensorType().getShape());
  pl::Placement placement =
      op.getPlacement().value_or(Placement::gpu_resident) ==
              Placement::host_streamed
          ? pl::Placement::host_streamed
          : pl::Placement::gpu_resident;
  return pl::CreateParamDirect(
      builder, op.getSymName().str().c_str(),
      op.getHfName() ? op.getHfName()->str().c_str() : nullptr, &shape, dtype,
      placement, op.getGpuExperts().value_or(0));
}

fb::Offset<pl::Batching> PlanWriter::writeBatching(BatchingAttr b) {
  if (!b)
    return 0;
  auto lengths = [&](DenseF64ArrayAttr bins) -> fb::Offset<fb::Vector<double>> {
    if (!bins)
      return 0;
    return builder.CreateVector(bins.asArrayRef().data(), bins.size());
  };
  fb::Offset<fb::Vector<double>> prompts = lengths(b.getPromptLengths());
  fb::Offset<fb::Vector<double>> generated = lengths(b.getGeneratedLengths());
  return pl::CreateBatching(
      builder, b.getResidentBatch(), b.getAttentionMicroBatchPrefill(),
      b.getAttentionMicroBatchDecode(), b.getExpertMicroBatch(),
      static_cast<int>(b.getPrefetchDepth()),
      static_cast<int>(b.getKvStagingBuffers()),
      b.getCpuAttentionShare().convertToDouble(),
      b.getKvGpuFraction().convertToDouble(), b.getPromptTokens(),
      b.getGeneratedTokens(), b.getGpuBudgetBytes(), b.getHostBudgetBytes(),
      b.getKvDtype() == "fp8" ? pl::KvDType::fp8 : pl::KvDType::bf16,
      static_cast<pl::WeightDType>(
          ::moe::model::parseWeightDtype(b.getWeightDtype())
              .value_or(::moe::model::WeightDtype::bf16)),
      b.getHostKvPoolTokens(), b.getMinGeneratedTokens(), prompts, generated);
}

/// The subset of moe.plan_report the runtime compares measurements with.
fb::Offset<pl::Prediction> PlanWriter::writePrediction(DictionaryAttr report) {
  if (!report)
    return 0;
  auto number = [](DictionaryAttr dictionary, StringRef key) {
    auto value = dyn_cast_or_null<FloatAttr>(dictionary.get(key));
    return value ? value.getValueAsDouble() : 0.0;
  };
  std::vector<fb::Offset<pl::StageTime>> stages;
  if (auto seconds = report.getAs<DictionaryAttr>("decode_stage_seconds"))
    for (NamedAttribute stage : seconds)
      stages.push_back(pl::CreateStageTimeDirect(
          builder, stage.getName().str().c_str(),
          cast<FloatAttr>(stage.getValue()).getValueAsDouble()));
  DictionaryAttr bytes = report.getAs<DictionaryAttr>("decode_bytes_per_step");
  DictionaryAttr roofline = report.getAs<DictionaryAttr>("roofline");
  std::string bound;
  if (roofline)
    if (auto name = roofline.getAs<StringAttr>("bound"))
      bound = name.str();
  double h2d = bytes ? number(bytes, "h2d_weights") + number(bytes, "h2d_kv") +
                           number(bytes, "h2d_hidden")
                     : 0.0;
  std::string device, file;
  if (auto priced = report.getAs<DictionaryAttr>("profile")) {
    device = priced.getAs<StringAttr>("device").str();
    file = priced.getAs<StringAttr>("file").str();
  }
  return pl::CreatePredictionDirect(
      builder, number(report, "decode_step_seconds"),
      number(report, "decode_tokens_per_second"),
      number(report, "prefill_seconds"),
      number(report, "prefill_tokens_per_second"), &stages, h2d,
      bytes ? number(bytes, "d2h") : 0.0, bound.c_str(),
      roofline ? number(roofline, "seconds") : 0.0, device.c_str(),
      file.c_str());
}

FailureOr<fb::Offset<pl::StepSchedule>>
PlanWriter::writeStep(sched::StepOp step, const llvm::StringMap<int> &pools) {
  SymbolTableCollection symbols;
  llvm::DenseMap<Value, unsigned> jobIndex;
  std::vector<fb::Offset<pl::Job>> jobs;
  for (Operation &op : step.getBody().front()) {
    auto copy = dyn_cast<sched::CopyOp>(op);
    auto compute = dyn_cast<sched::ComputeOp>(op);
    FlatSymbolRefAttr streamRef =
        copy ? copy.getStreamAttr() : compute.getStreamAttr();
    auto stream = symbols.lookupNearestSymbolFrom<sched::StreamOp>(
        step->getParentOp(), streamRef);
    if (!stream)
      return op.emitOpError() << "stream " << streamRef << " is not declared";
    std::vector<uint32_t> after;
    for (Value event : op.getOperands())
      after.push_back(jobIndex.lookup(event));
    FlatSymbolRefAttr poolRef =
        copy ? copy.getPoolAttr() : compute.getPoolAttr();
    int pool = poolRef ? pools.lookup(poolRef.getValue()) : -1;
    auto stage = compute ? compute.getStage().str() : std::string();
    pl::JobKind kind = copy ? jobKindOf(copy.getKind())
                       : stream.getKind() == sched::StreamKind::host
                           ? pl::JobKind::host_attention
                           : pl::JobKind::compute;
    jobIndex[op.getResult(0)] = static_cast<unsigned>(jobs.size());
    int64_t layer = copy ? copy.getLayer() : compute.getLayer();
    int64_t module = copy ? copy.getModule() : compute.getModule();
    int64_t microBatch = copy ? copy.getMicroBatch() : compute.getMicroBatch();
    int64_t first = copy ? copy.getFirstSequence() : compute.getFirstSequence();
    int64_t sequences = copy ? copy.getSequences() : compute.getSequences();
    int64_t buffer = copy ? copy.getBuffer() : compute.getBuffer();
    double seconds =
        (copy ? copy.getSeconds() : compute.getSeconds()).convertToDouble();
    jobs.push_back(pl::CreateJobDirect(
        builder, kind, streamKindOf(stream.getKind()),
        compute ? stage.c_str() : nullptr, &after, static_cast<int>(layer),
        static_cast<int>(module), static_cast<int>(microBatch), first,
        sequences, pool, static_cast<int>(buffer),
        copy ? copy.getBytes().convertToDouble() : 0.0, seconds,
        compute ? expertShareOf(compute.getExperts()) : pl::ExpertShare::all));
  }
  return pl::CreateStepScheduleDirect(
      builder, step.getPredictedSeconds().convertToDouble(), &jobs);
}

/// The sched ops of the module, if moe-schedule-overlap ran.
FailureOr<fb::Offset<pl::Schedule>> PlanWriter::writeSchedule() {
  sched::StepOp decode, prefill;
  for (sched::StepOp step : module.getOps<sched::StepOp>()) {
    if (step.getSymName() == "decode")
      decode = step;
    else if (step.getSymName() == "prefill")
      prefill = step;
  }
  if (!decode && !prefill)
    return fb::Offset<pl::Schedule>();
  if (!decode || !prefill)
    return module.emitError() << "a schedule needs sched.step @decode and "
                                 "sched.step @prefill";
  llvm::StringMap<int> poolIndex;
  std::vector<fb::Offset<pl::BufferPool>> pools;
  for (sched::BufferPoolOp pool : module.getOps<sched::BufferPoolOp>()) {
    poolIndex[pool.getSymName()] = static_cast<int>(pools.size());
    pools.push_back(pl::CreateBufferPool(builder, poolKindOf(pool.getKind()),
                                         static_cast<int>(pool.getCount()),
                                         pool.getBufferBytes()));
  }
  FailureOr<fb::Offset<pl::StepSchedule>> decodeOffset =
      writeStep(decode, poolIndex);
  FailureOr<fb::Offset<pl::StepSchedule>> prefillOffset =
      writeStep(prefill, poolIndex);
  if (failed(decodeOffset) || failed(prefillOffset))
    return failure();
  return pl::CreateScheduleDirect(builder, &pools, *decodeOffset,
                                  *prefillOffset);
}

FailureOr<std::pair<pl::Module, fb::Offset<void>>>
PlanWriter::writeModule(Operation *op) {
  using Written = std::pair<pl::Module, fb::Offset<void>>;
  return llvm::TypeSwitch<Operation *, FailureOr<Written>>(op)
      .Case([&](EmbeddingOp e) -> FailureOr<Written> {
        return Written{
            pl::Module::Embedding,
            pl::CreateEmbedding(builder, param(e.getTableAttr())).Union()};
      })
      .Case([&](RMSNormOp n) -> FailureOr<Written> {
        return Written{pl::Module::RMSNorm,
                       pl::CreateRMSNorm(builder, param(n.getWeightAttr()),
                                         n.getEps().convertToDouble())
                           .Union()};
      })
      .Case([&](AttentionOp a) -> FailureOr<Written> {
        auto ropeOffset = rope(a.getRope());
        return Written{
            pl::Module::Attention,
            pl::CreateAttention(
                builder, a.getNumHeads(), a.getNumKvHeads(), a.getHeadDim(),
                ropeOffset, a.getScale().convertToDouble(), param(a.getQAttr()),
                param(a.getKAttr()), param(a.getVAttr()), param(a.getOAttr()),
                param(a.getQBiasAttr()), param(a.getKBiasAttr()),
                param(a.getVBiasAttr()), param(a.getOBiasAttr()),
                static_cast<pl::QKNorm>(a.getQkNorm()), param(a.getQNormAttr()),
                param(a.getKNormAttr()), f64(a.getQkNormEpsAttr()),
                static_cast<int64_t>(a.getSlidingWindow().value_or(0)),
                param(a.getSinksAttr()),
                a.sharesKv() ? static_cast<int>(a.getKvLayer()) : -1)
                .Union()};
      })
      .Case([&](MLAttentionOp a) -> FailureOr<Written> {
        auto ropeOffset = rope(a.getRope());
        return Written{pl::Module::MLAttention,
                       pl::CreateMLAttention(
                           builder, a.getNumHeads(), a.getQLoraRank(),
                           a.getKvLoraRank(), a.getQkNopeHeadDim(),
                           a.getQkRopeHeadDim(), a.getVHeadDim(), ropeOffset,
                           a.getScale().convertToDouble(),
                           a.getNormEps().convertToDouble(),
                           param(a.getQAttr()), param(a.getQAAttr()),
                           param(a.getQANormAttr()), param(a.getQBAttr()),
                           param(a.getKvAAttr()), param(a.getKvANormAttr()),
                           param(a.getKvBAttr()), param(a.getOAttr()))
                           .Union()};
      })
      .Case([&](LightningAttentionOp a) -> FailureOr<Written> {
        return Written{pl::Module::LightningAttention,
                       pl::CreateLightningAttention(
                           builder, a.getNumHeads(), a.getHeadDim(),
                           a.getDecayScale().convertToDouble(),
                           a.getBlockSize(), a.getNormEps().convertToDouble(),
                           param(a.getQkvAttr()), param(a.getGateAttr()),
                           param(a.getNormAttr()), param(a.getOutAttr()))
                           .Union()};
      })
      .Case([&](RouterOp r) -> FailureOr<Written> {
        return Written{
            pl::Module::Router,
            pl::CreateRouter(builder, r.getNumExperts(), r.getTopK(),
                             static_cast<pl::RouterScoring>(r.getScoring()),
                             static_cast<pl::RouterSelection>(r.getSelection()),
                             r.getNGroup(), r.getTopkGroup(), r.getNormalize(),
                             r.getScaling().convertToDouble(),
                             param(r.getWeightAttr()), param(r.getBiasAttr()),
                             param(r.getCorrectionBiasAttr()))
                .Union()};
      })
      .Case([&](ExpertsOp e) -> FailureOr<Written> {
        return Written{pl::Module::Experts,
                       pl::CreateExperts(
                           builder, e.getNumExperts(), e.getIntermediateSize(),
                           static_cast<pl::ExpertActivation>(e.getActivation()),
                           static_cast<pl::ExpertLayout>(e.getExpertLayout()),
                           f64(e.getSwigluLimitAttr()),
                           f64(e.getSwigluAlphaAttr()), param(e.getGateAttr()),
                           param(e.getUpAttr()), param(e.getGateUpAttr()),
                           param(e.getDownAttr()), param(e.getGateUpBiasAttr()),
                           param(e.getDownBiasAttr()))
                           .Union()};
      })
      .Case([&](MLPOp m) -> FailureOr<Written> {
        return Written{
            pl::Module::MLP,
            pl::CreateMLP(builder, m.getIntermediateSize(),
                          param(m.getGateAttr()), param(m.getUpAttr()),
                          param(m.getDownAttr()), param(m.getOutputGateAttr()),
                          m.getSharedExperts())
                .Union()};
      })
      .Case([&](ResidualOp r) -> FailureOr<Written> {
        return Written{pl::Module::Residual,
                       pl::CreateResidual(builder,
                                          r.getSkipScale().convertToDouble(),
                                          r.getUpdateScale().convertToDouble())
                           .Union()};
      })
      .Case([&](LMHeadOp h) -> FailureOr<Written> {
        return Written{
            pl::Module::LMHead,
            pl::CreateLMHead(builder, param(h.getWeightAttr())).Union()};
      })
      .Default([&](Operation *other) -> FailureOr<Written> {
        return other->emitOpError() << "cannot be expressed in a plan";
      });
}

FailureOr<fb::Offset<fb::Vector<fb::Offset<pl::Phase>>>>
PlanWriter::writePhases() {
  auto tail = module->getAttrOfType<DictionaryAttr>(MoEDialect::kTailAttrName);
  auto bytes = tail ? tail.getAs<StringAttr>("plan") : StringAttr();
  if (!bytes) // a tail planned but not compiled is left out
    return fb::Offset<fb::Vector<fb::Offset<pl::Phase>>>();
  auto batching = tail.getAs<BatchingAttr>("batching");
  auto context = tail.getAs<IntegerAttr>("context_tokens");
  auto saved = tail.getAs<FloatAttr>("saved_seconds");
  auto report =
      module->getAttrOfType<DictionaryAttr>(MoEDialect::kPlanReportAttrName);
  auto curveOf = [&](DictionaryAttr holder,
                     StringRef key) -> FailureOr<fb::Offset<pl::LiveSteps>> {
    auto curve = holder ? holder.getAs<DictionaryAttr>(key) : nullptr;
    auto live = curve ? curve.getAs<DenseI64ArrayAttr>("live") : nullptr;
    auto seconds = curve ? curve.getAs<DenseF64ArrayAttr>("seconds") : nullptr;
    if (!live || !seconds || live.size() != seconds.size() || live.empty())
      return failure();
    std::vector<int64_t> liveCounts(live.asArrayRef());
    std::vector<double> stepSeconds(seconds.asArrayRef());
    return pl::CreateLiveStepsDirect(builder, &liveCounts, &stepSeconds);
  };
  FailureOr<fb::Offset<pl::LiveSteps>> current = curveOf(report, "drain_steps");
  FailureOr<fb::Offset<pl::LiveSteps>> steps = curveOf(tail, "tail_steps");
  if (!batching || !context || !saved || failed(current) || failed(steps))
    return module.emitError()
           << "'" << MoEDialect::kTailAttrName
           << "' needs batching, context_tokens, saved_seconds and the "
              "tail_steps curve, and the plan report the drain_steps one";
  std::vector<uint8_t> plan(bytes.getValue().begin(), bytes.getValue().end());
  std::vector<fb::Offset<pl::Phase>> phases{pl::CreatePhaseDirect(
      builder, "tail", batching.getResidentBatch(), context.getInt(), *current,
      *steps, saved.getValueAsDouble(), &plan)};
  return builder.CreateVector(phases);
}

FailureOr<std::vector<uint8_t>> PlanWriter::write() {
  auto model = module->getAttrOfType<ModelAttr>(MoEDialect::kModelAttrName);
  if (!model)
    return module.emitError()
           << "module has no '" << MoEDialect::kModelAttrName << "' attribute";
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!forward || forward.getNumArguments() != 1 ||
      forward.getNumResults() != 1)
    return module.emitError()
           << "a plan needs 'func.func @forward(token ids) -> logits'";

  std::vector<fb::Offset<pl::Param>> params;
  for (ParamOp op : module.getOps<ParamOp>()) {
    FailureOr<fb::Offset<pl::Param>> written = writeParam(op);
    if (failed(written))
      return failure();
    paramIndex[op.getSymName()] = static_cast<int>(params.size());
    params.push_back(*written);
  }

  llvm::DenseMap<Value, int> valueIds;
  valueIds[forward.getArgument(0)] = 0;
  int logits = -1;
  std::vector<fb::Offset<pl::Op>> ops;
  for (Operation &op : forward.getBody().front()) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      logits = valueIds.lookup(ret.getOperand(0));
      continue;
    }
    FailureOr<std::pair<pl::Module, fb::Offset<void>>> written =
        writeModule(&op);
    if (failed(written))
      return failure();
    std::vector<int> operands, results;
    for (Value operand : op.getOperands())
      operands.push_back(valueIds.lookup(operand));
    for (Value result : op.getResults()) {
      int id = static_cast<int>(valueIds.size());
      valueIds[result] = id;
      results.push_back(id);
    }
    int layer = -1;
    if (auto index = op.getAttrOfType<IntegerAttr>("layer"))
      layer = static_cast<int>(index.getInt());
    ops.push_back(pl::CreateOpDirect(builder, written->first, written->second,
                                     layer, &operands, &results));
  }

  std::vector<int64_t> eos(model.getEosTokenIds());
  auto modelOffset = pl::CreateModelDirect(
      builder, model.getModelType().str().c_str(),
      model.getArchitecture().str().c_str(), model.getVocabSize(),
      model.getHiddenSize(), static_cast<int>(model.getNumLayers()),
      model.getMaxPosition(), model.getBosTokenId(), &eos, &params, &ops,
      static_cast<int>(valueIds.size()), logits);
  auto batching = writeBatching(
      module->getAttrOfType<BatchingAttr>(MoEDialect::kBatchingAttrName));
  auto prediction = writePrediction(
      module->getAttrOfType<DictionaryAttr>(MoEDialect::kPlanReportAttrName));
  FailureOr<fb::Offset<pl::Schedule>> schedule = writeSchedule();
  if (failed(schedule))
    return failure();
  FailureOr<fb::Offset<fb::Vector<fb::Offset<pl::Phase>>>> phases =
      writePhases();
  if (failed(phases))
    return failure();
  // The size prefix lets the runtime tell a truncated file from a corrupt one.
  pl::FinishSizePrefixedPlanBuffer(
      builder, pl::CreatePlan(builder, pl::kSchemaVersion, modelOffset,
                              batching, prediction, *schedule, *phases));
  return std::vector<uint8_t>(builder.GetBufferPointer(),
                              builder.GetBufferPointer() + builder.GetSize());
}

} // namespace

FailureOr<std::vector<uint8_t>> mlir::moe::exportPlan(ModuleOp module) {
  return PlanWriter(module).write();
}
