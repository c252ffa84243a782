//===- MoECost.cpp - what each module costs per token ---------------------===//
//
// FLOPs count a multiply-add as two: a projection costs 2 × its weights per
// token. Attention adds a part per attended context token; lightning
// attention adds a fixed recurrent part instead and keeps an O(1) state.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"

#include "runtime/model/ActivationBytes.h"

using namespace mlir;
using namespace mlir::moe;
namespace model = ::moe::model;

#include "dialects/MoE/MoEInterfaces.cpp.inc"

/// Per row of the module's input or output.
static int64_t widthOf(Value activations) {
  return cast<RankedTensorType>(activations.getType()).getDimSize(1);
}

/// Sums the parameters an op references; all of them are active, and the
/// FLOPs are those of multiplying a token by each weight once.
static ModuleCost costOfParams(Operation *op, SymbolTableCollection &symbols,
                               ArrayRef<FlatSymbolRefAttr> refs) {
  ModuleCost cost;
  for (FlatSymbolRefAttr ref : refs) {
    if (!ref)
      continue;
    auto param = symbols.lookupNearestSymbolFrom<ParamOp>(op, ref);
    if (!param)
      continue; // the verifier reports it
    cost.params += param.getNumElements();
    cost.weightBytes += param.getNumBytes();
  }
  cost.activeParams = cost.params;
  cost.flopsPerToken = 2.0 * static_cast<double>(cost.params);
  return cost;
}

ModuleKind EmbeddingOp::getModuleKind() { return ModuleKind::Embedding; }
ModuleCost EmbeddingOp::getModuleCost(SymbolTableCollection &symbols,
                                      const CacheDtypes &) {
  ModuleCost cost = costOfParams(*this, symbols, {getTableAttr()});
  cost.flopsPerToken = 0; // a row lookup
  cost.activationRowBytes = model::rowOfWidthBytes(widthOf(getResult()));
  return cost;
}

ModuleKind RMSNormOp::getModuleKind() { return ModuleKind::Norm; }
ModuleCost RMSNormOp::getModuleCost(SymbolTableCollection &symbols,
                                    const CacheDtypes &) {
  ModuleCost cost = costOfParams(*this, symbols, {getWeightAttr()});
  cost.flopsPerToken = 4.0 * static_cast<double>(cost.params);
  cost.activationRowBytes = model::rowOfWidthBytes(widthOf(getInput()));
  return cost;
}

ModuleKind AttentionOp::getModuleKind() { return ModuleKind::Attention; }
ModuleCost AttentionOp::getModuleCost(SymbolTableCollection &symbols,
                                      const CacheDtypes &dtypes) {
  ModuleCost cost = costOfParams(
      *this, symbols,
      {getQAttr(), getKAttr(), getVAttr(), getOAttr(), getQBiasAttr(),
       getKBiasAttr(), getVBiasAttr(), getOBiasAttr(), getQNormAttr(),
       getKNormAttr(), getSinksAttr()});
  double heads = getNumHeads(), headDim = getHeadDim();
  cost.flopsPerContextToken = 4.0 * heads * headDim; // q·k and p·v
  if (!sharesKv()) {
    cost.kvBytesPerToken =
        2 * ::moe::model::kvRowBytes(dtypes.kv, getNumKvHeads(), getHeadDim());
    if (std::optional<uint64_t> window = getSlidingWindow()) {
      cost.kvWindowTokens = static_cast<int64_t>(*window);
      cost.stateBytesPerSequence = cost.kvWindowTokens * cost.kvBytesPerToken;
      cost.kvBytesPerToken = 0;
    }
  }
  cost.activationRowBytes =
      model::attentionRowBytes(widthOf(getInput()), getNumHeads(),
                               getNumKvHeads(), getHeadDim(), dtypes.kv);
  return cost;
}

ModuleKind MLAttentionOp::getModuleKind() { return ModuleKind::Attention; }
ModuleCost MLAttentionOp::getModuleCost(SymbolTableCollection &symbols,
                                        const CacheDtypes &dtypes) {
  ModuleCost cost = costOfParams(
      *this, symbols,
      {getQAttr(), getQAAttr(), getQANormAttr(), getQBAttr(), getKvAAttr(),
       getKvANormAttr(), getKvBAttr(), getOAttr()});
  // Absorbed decode: scores over [latent | k_pe], outputs over the latent.
  double heads = getNumHeads(), latent = getKvLoraRank();
  cost.flopsPerContextToken =
      2.0 * heads * (latent + static_cast<double>(getQkRopeHeadDim())) +
      2.0 * heads * latent;
  cost.kvBytesPerToken = ::moe::model::latentRowBytes(
      dtypes.kv, getKvLoraRank(), getQkRopeHeadDim());
  cost.activationRowBytes = model::latentAttentionRowBytes(
      widthOf(getInput()), getNumHeads(), getQLoraRank(), getKvLoraRank(),
      getQkNopeHeadDim(), getQkRopeHeadDim(), getVHeadDim(), dtypes.kv);
  return cost;
}

ModuleKind LightningAttentionOp::getModuleKind() {
  return ModuleKind::Attention;
}
ModuleCost LightningAttentionOp::getModuleCost(SymbolTableCollection &symbols,
                                               const CacheDtypes &dtypes) {
  ModuleCost cost = costOfParams(
      *this, symbols, {getQkvAttr(), getGateAttr(), getNormAttr(), getOutAttr()});
  int64_t heads = getNumHeads(), headDim = getHeadDim();
  // Per token: S += kᵀv and o = q S, each heads × d × d multiply-adds.
  cost.flopsPerToken += 4.0 * static_cast<double>(heads * headDim * headDim);
  cost.stateBytesPerSequence =
      heads * headDim * headDim * dtypes.stateElementBytes;
  cost.activationRowBytes =
      model::lightningRowBytes(widthOf(getInput()), heads, headDim);
  return cost;
}

ModuleKind RouterOp::getModuleKind() { return ModuleKind::Router; }
ModuleCost RouterOp::getModuleCost(SymbolTableCollection &symbols,
                                   const CacheDtypes &) {
  ModuleCost cost =
      costOfParams(*this, symbols,
                   {getWeightAttr(), getBiasAttr(), getCorrectionBiasAttr()});
  cost.activationRowBytes = model::routerRowBytes(getNumExperts(), getTopK());
  return cost;
}

ModuleKind ExpertsOp::getModuleKind() { return ModuleKind::RoutedExperts; }
ModuleCost ExpertsOp::getModuleCost(SymbolTableCollection &symbols,
                                    const CacheDtypes &) {
  ModuleCost cost = costOfParams(
      *this, symbols,
      {getGateAttr(), getUpAttr(), getGateUpAttr(), getDownAttr(),
       getGateUpBiasAttr(), getDownBiasAttr()});
  // Every expert has the same shape, so a token reads top_k / E of them.
  int64_t topK = cast<RankedTensorType>(getWeights().getType()).getDimSize(1);
  cost.activeParams = cost.params / getNumExperts() * topK;
  cost.flopsPerToken = 2.0 * static_cast<double>(cost.activeParams);
  cost.activationRowBytes = model::routedExpertsRowBytes(
      widthOf(getInput()), getIntermediateSize(), topK);
  return cost;
}

ModuleKind MLPOp::getModuleKind() {
  return getSharedExperts() ? ModuleKind::SharedExperts : ModuleKind::DenseMlp;
}
ModuleCost MLPOp::getModuleCost(SymbolTableCollection &symbols,
                                const CacheDtypes &) {
  ModuleCost cost = costOfParams(
      *this, symbols,
      {getGateAttr(), getUpAttr(), getDownAttr(), getOutputGateAttr()});
  cost.activationRowBytes =
      model::mlpRowBytes(widthOf(getInput()), getIntermediateSize());
  return cost;
}

ModuleKind LMHeadOp::getModuleKind() { return ModuleKind::LmHead; }
ModuleCost LMHeadOp::getModuleCost(SymbolTableCollection &symbols,
                                   const CacheDtypes &) {
  ModuleCost cost = costOfParams(*this, symbols, {getWeightAttr()});
  cost.activationRowBytes = model::rowOfWidthBytes(widthOf(getInput()));
  return cost;
}
