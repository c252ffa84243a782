//===- MoEDialect.cpp - the moe dialect -----------------------------------===//

#include "dialects/MoE/MoEDialect.h"
#include "dialects/MoE/MoEOps.h"

#include "runtime/costmodel/Lengths.h"
#include "runtime/model/KvFormat.h"
#include "runtime/model/WeightFormat.h"

#include "llvm/ADT/TypeSwitch.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace mlir::moe;

#include "dialects/MoE/MoEDialect.cpp.inc"
#include "dialects/MoE/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/MoE/MoEAttrs.cpp.inc"

namespace {
/// Prints every model's one RoPE configuration once, as `#rope`.
struct MoEOpAsmInterface : public OpAsmDialectInterface {
  using OpAsmDialectInterface::OpAsmDialectInterface;
  AliasResult getAlias(Attribute attr, raw_ostream &os) const override {
    if (isa<RopeAttr>(attr)) {
      os << "rope";
      return AliasResult::OverridableAlias;
    }
    if (isa<ModelAttr>(attr)) {
      os << "model";
      return AliasResult::FinalAlias;
    }
    if (isa<BatchingAttr>(attr)) {
      os << "batching";
      return AliasResult::FinalAlias;
    }
    return AliasResult::NoAlias;
  }
};
} // namespace

void MoEDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/MoE/MoEOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialects/MoE/MoEAttrs.cpp.inc"
      >();
  addInterfaces<MoEOpAsmInterface>();
}

LogicalResult RopeAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               RopeStyle, APFloat thetaValue, int64_t rotaryDim,
                               RopeScaling scaling, APFloat factorValue,
                               int64_t originalMaxPosition,
                               APFloat betaFastValue, APFloat betaSlowValue,
                               bool, APFloat attentionFactorValue) {
  double theta = thetaValue.convertToDouble();
  double factor = factorValue.convertToDouble();
  double betaFast = betaFastValue.convertToDouble();
  double betaSlow = betaSlowValue.convertToDouble();
  double attentionFactor = attentionFactorValue.convertToDouble();
  if (!(theta > 1.0))
    return emitError() << "rope theta must be > 1, got " << theta;
  if (rotaryDim <= 0 || rotaryDim % 2 != 0)
    return emitError() << "rope rotary_dim must be positive and even, got "
                       << rotaryDim;
  if (!(attentionFactor > 0.0))
    return emitError() << "rope attention_factor must be > 0";
  if (scaling == RopeScaling::yarn) {
    if (!(factor >= 1.0))
      return emitError() << "yarn factor must be >= 1, got " << factor;
    if (originalMaxPosition <= 0)
      return emitError() << "yarn needs original_max_position > 0";
    if (!(betaFast > betaSlow))
      return emitError() << "yarn beta_fast (" << betaFast
                         << ") must exceed beta_slow (" << betaSlow << ")";
  }
  return success();
}

LogicalResult ModelAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                StringRef, StringRef, int64_t, int64_t, int64_t,
                                int64_t, int64_t, StringRef expertWeightDtype,
                                ArrayRef<int64_t>) {
  if (!::moe::model::parseWeightDtype(expertWeightDtype))
    return emitError() << "expert_weight_dtype must be bf16, fp8 or mxfp4, "
                          "not '"
                       << expertWeightDtype << "'";
  return success();
}

LogicalResult BatchingAttr::verify(
    function_ref<InFlightDiagnostic()> emitError, int64_t residentBatch,
    int64_t microBatchPrefill, int64_t microBatchDecode,
    int64_t expertMicroBatch, int64_t prefetchDepth, int64_t kvStagingBuffers,
    APFloat cpuShare, APFloat kvGpuFraction, int64_t residentUnits,
    int64_t promptTokens, int64_t generatedTokens, int64_t gpuBudget,
    int64_t hostBudget, StringRef kvDtype, StringRef weightDtype,
    int64_t minGeneratedTokens, int64_t hostKvPoolTokens,
    DenseF64ArrayAttr promptLengths, DenseF64ArrayAttr generatedLengths) {
  if (residentBatch <= 0 || microBatchPrefill <= 0 || microBatchDecode <= 0 ||
      expertMicroBatch <= 0)
    return emitError() << "batch sizes must be positive";
  if (microBatchPrefill > residentBatch || microBatchDecode > residentBatch)
    return emitError() << "an attention micro-batch exceeds the resident "
                          "batch (" << residentBatch << ")";
  if (prefetchDepth <= 0 || kvStagingBuffers <= 0)
    return emitError() << "prefetch_depth and kv_staging_buffers must be "
                          "positive";
  double share = cpuShare.convertToDouble();
  double fraction = kvGpuFraction.convertToDouble();
  if (!(share >= 0.0 && share <= 1.0) || !(fraction >= 0.0 && fraction <= 1.0))
    return emitError() << "cpu_attention_share and kv_gpu_fraction must be "
                          "in [0, 1]";
  if (residentUnits < 0 || promptTokens <= 0 || generatedTokens <= 0 ||
      gpuBudget <= 0 || hostBudget <= 0)
    return emitError() << "resident_units must be >= 0; lengths and budgets "
                          "must be positive";
  if (minGeneratedTokens < 0 || minGeneratedTokens > generatedTokens)
    return emitError() << "min_generated_tokens must be in [0, "
                       << generatedTokens << "]";
  auto bins = [](DenseF64ArrayAttr flat) {
    return flat ? std::span(flat.asArrayRef().data(), flat.size())
                : std::span<const double>();
  };
  ::moe::Result<::moe::costmodel::GenerationLengths> lengths =
      ::moe::costmodel::GenerationLengths::recorded(
          promptTokens, generatedTokens, minGeneratedTokens,
          bins(promptLengths), bins(generatedLengths));
  if (!lengths.ok())
    return emitError() << lengths.error().message();
  for (auto [name, field, longest, recorded] :
       {std::tuple{"prompt_lengths", "prompt_tokens",
                   lengths->prompts.longest(), promptTokens},
        std::tuple{"generated_lengths", "generated_tokens",
                   lengths->generated.longest(), generatedTokens}})
    if (longest != recorded)
      return emitError() << name << " reach " << longest << " tokens, not the "
                         << field << " of " << recorded;
  int64_t page = ::moe::model::hostKvPageTokens(promptTokens + generatedTokens);
  if (hostKvPoolTokens < 0 || hostKvPoolTokens % page != 0)
    return emitError() << "host_kv_pool_tokens must be a non-negative "
                          "multiple of the page ("
                       << page << " tokens)";
  if (!::moe::model::parseKvDtype(kvDtype))
    return emitError() << "kv_dtype must be bf16 or fp8, not '" << kvDtype
                       << "'";
  if (!::moe::model::parseWeightDtype(weightDtype))
    return emitError() << "weight_dtype must be bf16, fp8 or mxfp4, not '"
                       << weightDtype << "'";
  return success();
}

LogicalResult MoEDialect::verifyOperationAttribute(Operation *op,
                                                   NamedAttribute attr) {
  if (attr.getName() == kBatchingAttrName) {
    if (!isa<ModuleOp>(op) || !isa<BatchingAttr>(attr.getValue()))
      return op->emitError() << "'" << kBatchingAttrName
                             << "' must be a #moe.batching on a module";
    return success();
  }
  if (attr.getName() == kPlanReportAttrName ||
      attr.getName() == kTailAttrName) {
    if (!isa<ModuleOp>(op) || !isa<DictionaryAttr>(attr.getValue()))
      return op->emitError()
             << "'" << attr.getName() << "' must be a dictionary on a module";
    return success();
  }
  if (attr.getName() != kModelAttrName)
    return op->emitError() << "unknown moe attribute '" << attr.getName()
                           << "'";
  auto module = dyn_cast<ModuleOp>(op);
  if (!module)
    return op->emitError() << "'" << kModelAttrName
                           << "' belongs on a builtin.module";
  auto model = dyn_cast<ModelAttr>(attr.getValue());
  if (!model)
    return op->emitError() << "'" << kModelAttrName
                           << "' must be a #moe.model attribute";
  if (model.getVocabSize() <= 0 || model.getHiddenSize() <= 0 ||
      model.getNumLayers() <= 0)
    return op->emitError() << "#moe.model needs positive vocab_size, "
                              "hidden_size and num_layers";
  return success();
}
