//===- CostModelBridge.cpp - moe IR → the plain-C++ cost model ------------===//

#include "moe/Analysis/CostModelBridge.h"

#include "dialects/MoE/MoEOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/SymbolTable.h"

using namespace mlir;
using namespace mlir::moe;
namespace cm = ::moe::costmodel;

SmallVector<ParamOp>
mlir::moe::referencedParams(Operation *op, SymbolTableCollection &symbols) {
  SmallVector<ParamOp> params;
  for (NamedAttribute attr : op->getAttrs())
    if (auto ref = dyn_cast<FlatSymbolRefAttr>(attr.getValue()))
      if (auto param = symbols.lookupNearestSymbolFrom<ParamOp>(op, ref))
        params.push_back(param);
  return params;
}

/// GEMMs one token goes through: every matrix the module multiplies by (per
/// expert for stacked expert weights). Vectors (norms, biases) are not GEMMs.
static std::vector<cm::GemmShape> gemmsOf(Operation *op,
                                          ArrayRef<ParamOp> params) {
  std::vector<cm::GemmShape> gemms;
  if (isa<EmbeddingOp>(op))
    return gemms; // a row lookup
  auto experts = dyn_cast<ExpertsOp>(op);
  bool transposed = experts && experts.getExpertLayout() ==
                                   ExpertLayout::fused_interleaved_transposed;
  for (ParamOp param : params) {
    ArrayRef<int64_t> shape = param.getTensorType().getShape();
    if (shape.size() == 2 && shape[0] > 1)
      gemms.push_back({shape[0], shape[1]});
    else if (shape.size() == 3) // [E, out, in], or [E, in, out] transposed
      gemms.push_back(transposed ? cm::GemmShape{shape[2], shape[1]}
                                 : cm::GemmShape{shape[1], shape[2]});
  }
  return gemms;
}

int64_t mlir::moe::expertsWeightBytes(ArrayRef<ParamOp> params,
                                      ::moe::model::WeightDtype dtype) {
  int64_t bytes = 0;
  for (ParamOp param : params) {
    ArrayRef<int64_t> shape = param.getTensorType().getShape();
    // The bytes of a matrix and of its transpose are the same.
    bytes += shape.size() == 3 ? shape[0] * ::moe::model::expertMatrixBytes(
                                                dtype, shape[1], shape[2])
                               : 2 * param.getTensorType().getNumElements();
  }
  return bytes;
}

/// Routed experts held quantized: widened to bf16 each pass of the
/// per-expert GEMMs, one matrix of all experts at a time (the CUDA
/// backend's gate|up rows together, then down), unless they are fp8 and the
/// profile has FP8 GEMM times (then multiplied as codes).
static void priceQuantizedExperts(ExpertsOp experts, ArrayRef<ParamOp> params,
                                  ::moe::model::WeightDtype dtype,
                                  cm::ModuleCosts &costs) {
  int64_t n = experts.getNumExperts(), w = experts.getIntermediateSize();
  int64_t h =
      cast<RankedTensorType>(experts.getInput().getType()).getDimSize(1);
  costs.weightBytes = expertsWeightBytes(params, dtype);
  costs.widenBytes = 0;
  for (ParamOp param : params) {
    ArrayRef<int64_t> shape = param.getTensorType().getShape();
    if (shape.size() == 3) // codes and scales read, bf16 written
      costs.widenBytes +=
          shape[0] *
          (::moe::model::expertMatrixBytes(dtype, shape[1], shape[2]) +
           2 * shape[1] * shape[2]);
  }
  costs.widenScratchBytes = n * 2 * w * h * 2;
  costs.fp8Experts = dtype == ::moe::model::WeightDtype::fp8;
}

FailureOr<CostModelView>
mlir::moe::buildCostModelView(ModuleOp module, const PlanDtypes &dtypes) {
  auto model = module->getAttrOfType<ModelAttr>(MoEDialect::kModelAttrName);
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!model || !forward)
    return module.emitError()
           << "planning needs an imported model ('"
           << MoEDialect::kModelAttrName << "' and func.func @forward)";
  CostModelView view;
  int64_t numLayers = model.getNumLayers();
  view.costs.vocabSize = model.getVocabSize();
  view.costs.hiddenSize = model.getHiddenSize();
  view.costs.kvDtype = dtypes.cache.kv;
  view.costs.layers.resize(numLayers + 2);
  view.ops.resize(numLayers + 2);

  SymbolTableCollection symbols;
  cm::ModuleNumbering numbering(numLayers);
  for (Operation &op : forward.getBody().front()) {
    auto module = dyn_cast<ModuleCostInterface>(&op);
    if (!module)
      continue;
    auto layer = op.getAttrOfType<IntegerAttr>("layer");
    ::moe::Result<cm::ModuleRef> slot =
        numbering.next(layer ? layer.getInt() : -1);
    if (!slot)
      return op.emitOpError() << slot.error().message();
    ModuleCost cost = module.getModuleCost(symbols, dtypes.cache);
    SmallVector<ParamOp> params = referencedParams(&op, symbols);
    cm::ModuleCosts costs;
    costs.kind = module.getModuleKind();
    costs.weightBytes = dtypes.weightElementBytes
                            ? cost.params * *dtypes.weightElementBytes
                            : cost.weightBytes;
    // The CUDA backend keeps router weights in fp32: top-k picks hinge on
    // near-ties that bf16 rounding would flip.
    if (isa<RouterOp>(&op))
      costs.weightBytes = cost.params * int64_t(sizeof(float));
    costs.flopsPerToken = cost.flopsPerToken;
    costs.flopsPerContextToken = cost.flopsPerContextToken;
    costs.kvBytesPerToken =
        cost.kvWindowTokens ? cost.stateBytesPerSequence / cost.kvWindowTokens
                            : cost.kvBytesPerToken;
    costs.kvWindowTokens = cost.kvWindowTokens;
    costs.stateBytesPerSequence =
        cost.kvWindowTokens ? 0 : cost.stateBytesPerSequence;
    costs.activationRowBytes = cost.activationRowBytes;
    costs.gemms = gemmsOf(&op, params);
    if (auto experts = dyn_cast<ExpertsOp>(&op)) {
      if (dtypes.experts != ::moe::model::WeightDtype::bf16)
        priceQuantizedExperts(experts, params, dtypes.experts, costs);
      costs.numExperts = experts.getNumExperts();
      costs.topK =
          cast<RankedTensorType>(experts.getWeights().getType()).getDimSize(1);
      costs.expertWeightBytes = costs.weightBytes / costs.numExperts;
    }
    if (auto attention = dyn_cast<AttentionOp>(&op))
      costs.attentionHeads =
          cm::AttentionHeads{static_cast<int64_t>(attention.getNumHeads()),
                             static_cast<int64_t>(attention.getNumKvHeads()),
                             static_cast<int64_t>(attention.getHeadDim())};
    if (auto mla = dyn_cast<MLAttentionOp>(&op))
      costs.mlaHeads =
          cm::MlaHeads{static_cast<int64_t>(mla.getNumHeads()),
                       static_cast<int64_t>(mla.getKvLoraRank()),
                       static_cast<int64_t>(mla.getQkRopeHeadDim())};
    view.costs.layers[slot->layer].modules.push_back(std::move(costs));
    view.ops[slot->layer].push_back(&op);
  }
  if (::moe::Status status = cm::validateModelCosts(view.costs); !status.ok())
    return module.emitError() << "cost model: " << status.error().message();
  return view;
}

::moe::costmodel::GenerationLengths
mlir::moe::lengthsOf(BatchingAttr batching) {
  auto bins = [](DenseF64ArrayAttr flat) {
    return flat ? std::span(flat.asArrayRef().data(), flat.size())
                : std::span<const double>();
  };
  // The verifier accepted the recorded distributions.
  return ::moe::costmodel::GenerationLengths::recorded(
             batching.getPromptTokens(), batching.getGeneratedTokens(),
             batching.getMinGeneratedTokens(),
             bins(batching.getPromptLengths()),
             bins(batching.getGeneratedLengths()))
      .value();
}

DenseF64ArrayAttr
mlir::moe::lengthsAttr(MLIRContext *context,
                       const ::moe::costmodel::LengthDistribution &lengths) {
  return DenseF64ArrayAttr::get(context, lengths.flatBins());
}

PlanDtypes mlir::moe::planDtypesOf(BatchingAttr batching) {
  PlanDtypes dtypes;
  if (std::optional<::moe::model::KvDtype> kv =
          ::moe::model::parseKvDtype(batching.getKvDtype()))
    dtypes.cache.kv = *kv;
  if (std::optional<::moe::model::WeightDtype> experts =
          ::moe::model::parseWeightDtype(batching.getWeightDtype()))
    dtypes.experts = *experts;
  return dtypes;
}
