//===- MoEOps.cpp - verifiers of the moe ops ------------------------------===//
//
// Two layers of checks: `verify` checks an op's own attributes; the
// SymbolUserOpInterface hook `verifySymbolUses` checks every referenced
// parameter's shape against the module's dimensions, so an inconsistent
// config or a hand-edited IR is caught with the parameter and the expected
// shape named.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OpImplementation.h"

#include <string>

using namespace mlir;
using namespace mlir::moe;

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

static std::string formatShape(ArrayRef<int64_t> shape) {
  std::string text = "[";
  for (auto [i, dim] : llvm::enumerate(shape)) {
    if (i)
      text += ", ";
    text += std::to_string(dim);
  }
  return text + "]";
}

static int64_t hiddenSizeOf(Value activations) {
  return cast<RankedTensorType>(activations.getType()).getDimSize(1);
}

namespace {
/// Checks the parameters one op references against their expected shapes.
class ParamChecker {
public:
  ParamChecker(Operation *op, SymbolTableCollection &symbols)
      : op(op), symbols(symbols) {}

  /// `ref` may be null for an absent optional parameter.
  ParamChecker &check(StringRef role, FlatSymbolRefAttr ref,
                      ArrayRef<int64_t> expected) {
    if (failed(result) || !ref)
      return *this;
    auto param = symbols.lookupNearestSymbolFrom<ParamOp>(op, ref);
    if (!param) {
      result = op->emitOpError()
               << "'" << role << "' references " << ref
               << ", which is not a moe.param";
      return *this;
    }
    ArrayRef<int64_t> shape = param.getTensorType().getShape();
    if (shape != expected)
      result = op->emitOpError()
               << "'" << role << "' parameter " << ref << " has shape "
               << formatShape(shape) << ", expected " << formatShape(expected);
    return *this;
  }

  LogicalResult done() const { return result; }

private:
  Operation *op;
  SymbolTableCollection &symbols;
  LogicalResult result = success();
};
} // namespace

//===----------------------------------------------------------------------===//
// ParamOp
//===----------------------------------------------------------------------===//

LogicalResult ParamOp::verify() {
  if (getTensorType().getNumElements() == 0)
    return emitOpError() << "parameter " << getSymName() << " is empty";
  if (std::optional<StringRef> name = getHfName();
      name && name->contains("{e}") && getTensorType().getRank() < 2)
    return emitOpError() << "a stacked expert parameter ('{e}' in hf_name) "
                            "needs the expert index as its leading dimension";
  if (std::optional<uint64_t> experts = getGpuExperts()) {
    if (getTensorType().getRank() < 2 ||
        static_cast<int64_t>(*experts) > getTensorType().getDimSize(0))
      return emitOpError() << "gpu_experts (" << *experts
                           << ") needs a stacked expert weight with at least "
                              "that many experts";
    if (getPlacement() != Placement::host_streamed)
      return emitOpError() << "gpu_experts only applies to a host_streamed "
                              "weight";
  }
  return success();
}

int64_t ParamOp::getNumBytes() {
  unsigned bits = getTensorType().getElementTypeBitWidth();
  return (getNumElements() * bits + 7) / 8;
}

//===----------------------------------------------------------------------===//
// Embedding, norms, head
//===----------------------------------------------------------------------===//

LogicalResult
EmbeddingOp::verifySymbolUses(SymbolTableCollection &symbols) {
  auto table = symbols.lookupNearestSymbolFrom<ParamOp>(*this, getTableAttr());
  if (!table || table.getTensorType().getRank() != 2)
    return emitOpError() << "'table' must reference a 2-D moe.param";
  int64_t vocab = table.getTensorType().getDimSize(0);
  return ParamChecker(*this, symbols)
      .check("table", getTableAttr(), {vocab, hiddenSizeOf(getResult())})
      .done();
}

LogicalResult RMSNormOp::verifySymbolUses(SymbolTableCollection &symbols) {
  return ParamChecker(*this, symbols)
      .check("weight", getWeightAttr(), {hiddenSizeOf(getInput())})
      .done();
}

LogicalResult LMHeadOp::verifySymbolUses(SymbolTableCollection &symbols) {
  int64_t vocab = cast<RankedTensorType>(getLogits().getType()).getDimSize(1);
  return ParamChecker(*this, symbols)
      .check("weight", getWeightAttr(), {vocab, hiddenSizeOf(getInput())})
      .done();
}

//===----------------------------------------------------------------------===//
// AttentionOp
//===----------------------------------------------------------------------===//

LogicalResult AttentionOp::verify() {
  int64_t heads = getNumHeads(), kvHeads = getNumKvHeads();
  if (heads % kvHeads != 0)
    return emitOpError() << "num_kv_heads (" << kvHeads
                         << ") must divide num_heads (" << heads << ")";
  if (getRope().getRotaryDim() > static_cast<int64_t>(getHeadDim()))
    return emitOpError() << "rope rotary_dim (" << getRope().getRotaryDim()
                         << ") exceeds head_dim (" << getHeadDim() << ")";
  if (!(getScale().convertToDouble() > 0.0))
    return emitOpError() << "scale must be positive";
  if (sharesKv()) {
    if (getKvLayer() > static_cast<int64_t>(getLayer()))
      return emitOpError() << "kv_source_layer " << getKvLayer()
                           << " is not an earlier layer than " << getLayer();
    if (getK() || getV() || getKBias() || getVBias() || getKNorm())
      return emitOpError() << "layer " << getLayer() << " reads layer "
                           << getKvLayer()
                           << "'s K/V and must not have k/v weights";
  } else if (!getK() || !getV()) {
    return emitOpError() << "layer " << getLayer()
                         << " computes its own K/V and needs 'k' and 'v'";
  }
  bool wantsNorm = getQkNorm() != QKNorm::none;
  if (wantsNorm != static_cast<bool>(getQNorm()) ||
      (wantsNorm && !sharesKv() && !getKNorm()))
    return emitOpError() << "qk_norm = " << stringifyQKNorm(getQkNorm())
                         << " requires exactly the q_norm/k_norm weights";
  if (wantsNorm && !getQkNormEps())
    return emitOpError() << "qk_norm needs qk_norm_eps";
  return success();
}

/// A sharing layer reads the cache of an earlier layer, so that layer must
/// exist, compute its own K/V, and store it with the same shape and window.
static LogicalResult verifyKvSource(AttentionOp op) {
  auto module = op->getParentOfType<ModuleOp>();
  if (!module)
    return success();
  AttentionOp source;
  module.walk([&](AttentionOp other) {
    if (static_cast<int64_t>(other.getLayer()) == op.getKvLayer())
      source = other;
  });
  int64_t layer = op.getKvLayer();
  if (!source)
    return op.emitOpError() << "kv_source_layer " << layer
                            << " has no softmax attention op";
  if (source.sharesKv())
    return op.emitOpError() << "kv_source_layer " << layer
                            << " itself reads layer " << source.getKvLayer()
                            << "; it must compute its own K/V";
  if (source.getNumKvHeads() != op.getNumKvHeads() ||
      source.getHeadDim() != op.getHeadDim())
    return op.emitOpError() << "kv_source_layer " << layer
                            << " stores K/V of a different shape";
  if (source.getSlidingWindow() != op.getSlidingWindow())
    return op.emitOpError() << "kv_source_layer " << layer
                            << " has a different sliding window";
  return success();
}

LogicalResult
AttentionOp::verifySymbolUses(SymbolTableCollection &symbols) {
  int64_t hidden = hiddenSizeOf(getInput());
  int64_t qWidth = getNumHeads() * getHeadDim();
  int64_t kvWidth = getNumKvHeads() * getHeadDim();
  bool perHead = getQkNorm() == QKNorm::per_head;
  if (failed(ParamChecker(*this, symbols)
                 .check("q", getQAttr(), {qWidth, hidden})
                 .check("k", getKAttr(), {kvWidth, hidden})
                 .check("v", getVAttr(), {kvWidth, hidden})
                 .check("o", getOAttr(), {hidden, qWidth})
                 .check("q_bias", getQBiasAttr(), {qWidth})
                 .check("k_bias", getKBiasAttr(), {kvWidth})
                 .check("v_bias", getVBiasAttr(), {kvWidth})
                 .check("o_bias", getOBiasAttr(), {hidden})
                 .check("q_norm", getQNormAttr(),
                        {perHead ? int64_t(getHeadDim()) : qWidth})
                 .check("k_norm", getKNormAttr(),
                        {perHead ? int64_t(getHeadDim()) : kvWidth})
                 .check("sinks", getSinksAttr(), {int64_t(getNumHeads())})
                 .done()))
    return failure();
  return sharesKv() ? verifyKvSource(*this) : success();
}

//===----------------------------------------------------------------------===//
// MLAttentionOp
//===----------------------------------------------------------------------===//

LogicalResult MLAttentionOp::verify() {
  bool lowRankQ = getQLoraRank() > 0;
  if (lowRankQ && (!getQA() || !getQANorm() || !getQB() || getQ()))
    return emitOpError() << "q_lora_rank " << getQLoraRank()
                         << " needs q_a, q_a_norm and q_b (and no q)";
  if (!lowRankQ && (!getQ() || getQA() || getQANorm() || getQB()))
    return emitOpError() << "q_lora_rank 0 needs a plain 'q' projection";
  if (getRope().getRotaryDim() != static_cast<int64_t>(getQkRopeHeadDim()))
    return emitOpError() << "rope rotary_dim (" << getRope().getRotaryDim()
                         << ") must equal qk_rope_head_dim ("
                         << getQkRopeHeadDim() << ")";
  if (!(getScale().convertToDouble() > 0.0))
    return emitOpError() << "scale must be positive";
  return success();
}

LogicalResult
MLAttentionOp::verifySymbolUses(SymbolTableCollection &symbols) {
  int64_t hidden = hiddenSizeOf(getInput());
  int64_t heads = getNumHeads();
  int64_t qkDim = getQkNopeHeadDim() + getQkRopeHeadDim();
  int64_t qRank = getQLoraRank(), kvRank = getKvLoraRank();
  return ParamChecker(*this, symbols)
      .check("q", getQAttr(), {heads * qkDim, hidden})
      .check("q_a", getQAAttr(), {qRank, hidden})
      .check("q_a_norm", getQANormAttr(), {qRank})
      .check("q_b", getQBAttr(), {heads * qkDim, qRank})
      .check("kv_a", getKvAAttr(),
             {kvRank + int64_t(getQkRopeHeadDim()), hidden})
      .check("kv_a_norm", getKvANormAttr(), {kvRank})
      .check("kv_b", getKvBAttr(),
             {heads * int64_t(getQkNopeHeadDim() + getVHeadDim()), kvRank})
      .check("o", getOAttr(), {hidden, heads * int64_t(getVHeadDim())})
      .done();
}

//===----------------------------------------------------------------------===//
// LightningAttentionOp
//===----------------------------------------------------------------------===//

LogicalResult LightningAttentionOp::verify() {
  double decay = getDecayScale().convertToDouble();
  if (!(decay >= 0.0))
    return emitOpError() << "decay_scale must be >= 0, got " << decay;
  return success();
}

LogicalResult
LightningAttentionOp::verifySymbolUses(SymbolTableCollection &symbols) {
  int64_t hidden = hiddenSizeOf(getInput());
  int64_t width = getNumHeads() * getHeadDim();
  return ParamChecker(*this, symbols)
      .check("qkv", getQkvAttr(), {3 * width, hidden})
      .check("gate", getGateAttr(), {width, hidden})
      .check("norm", getNormAttr(), {width})
      .check("out", getOutAttr(), {hidden, width})
      .done();
}

//===----------------------------------------------------------------------===//
// RouterOp
//===----------------------------------------------------------------------===//

LogicalResult RouterOp::verify() {
  int64_t experts = getNumExperts(), topK = getTopK();
  if (topK > experts)
    return emitOpError() << "top_k (" << topK << ") exceeds num_experts ("
                         << experts << ")";
  int64_t groups = getNGroup(), keptGroups = getTopkGroup();
  if (experts % groups != 0)
    return emitOpError() << "n_group (" << groups
                         << ") must divide num_experts (" << experts << ")";
  if (keptGroups > groups)
    return emitOpError() << "topk_group (" << keptGroups
                         << ") exceeds n_group (" << groups << ")";
  if (getSelection() != RouterSelection::greedy &&
      topK > keptGroups * (experts / groups))
    return emitOpError() << "top_k (" << topK << ") exceeds the "
                         << keptGroups * (experts / groups)
                         << " experts in the topk_group kept groups";
  if (getSelection() == RouterSelection::noaux_tc) {
    if (!getCorrectionBias())
      return emitOpError() << "noaux_tc selection needs a correction_bias";
    if (experts / groups < 2)
      return emitOpError() << "noaux_tc ranks groups by their two best "
                              "experts; groups need at least 2 experts";
  } else if (getCorrectionBias()) {
    return emitOpError() << "correction_bias is only used by noaux_tc";
  }
  for (Value result : getResults()) {
    int64_t width = cast<RankedTensorType>(result.getType()).getDimSize(1);
    if (width != topK)
      return emitOpError() << "results must have top_k (" << topK
                           << ") columns, got " << width;
  }
  return success();
}

LogicalResult RouterOp::verifySymbolUses(SymbolTableCollection &symbols) {
  int64_t experts = getNumExperts();
  return ParamChecker(*this, symbols)
      .check("weight", getWeightAttr(), {experts, hiddenSizeOf(getInput())})
      .check("bias", getBiasAttr(), {experts})
      .check("correction_bias", getCorrectionBiasAttr(), {experts})
      .done();
}

//===----------------------------------------------------------------------===//
// ExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult ExpertsOp::verify() {
  auto weightsType = cast<RankedTensorType>(getWeights().getType());
  auto indicesType = cast<RankedTensorType>(getIndices().getType());
  if (weightsType.getShape() != indicesType.getShape())
    return emitOpError() << "routing weights and indices must have one shape";
  if (weightsType.getDimSize(1) > static_cast<int64_t>(getNumExperts()))
    return emitOpError() << "more experts per token ("
                         << weightsType.getDimSize(1) << ") than experts ("
                         << getNumExperts() << ")";
  if (auto router = getIndices().getDefiningOp<RouterOp>();
      router && router.getNumExperts() != getNumExperts())
    return emitOpError() << "num_experts (" << getNumExperts()
                         << ") differs from its router's ("
                         << router.getNumExperts() << ")";
  bool separate = getExpertLayout() == ExpertLayout::separate;
  if (separate && (!getGate() || !getUp() || getGateUp()))
    return emitOpError() << "the separate layout needs 'gate' and 'up'";
  if (!separate && (!getGateUp() || getGate() || getUp()))
    return emitOpError() << "a fused layout needs 'gate_up' only";
  bool clamped = getActivation() == ExpertActivation::swiglu_clamped;
  if (clamped != (getSwigluLimit() && getSwigluAlpha()))
    return emitOpError() << "swiglu_limit and swiglu_alpha go with the "
                            "swiglu_clamped activation, and only with it";
  return success();
}

LogicalResult ExpertsOp::verifySymbolUses(SymbolTableCollection &symbols) {
  int64_t experts = getNumExperts(), width = getIntermediateSize();
  int64_t hidden = hiddenSizeOf(getInput());
  if (getExpertLayout() == ExpertLayout::separate)
    return ParamChecker(*this, symbols)
        .check("gate", getGateAttr(), {experts, width, hidden})
        .check("up", getUpAttr(), {experts, width, hidden})
        .check("down", getDownAttr(), {experts, hidden, width})
        .check("gate_up_bias", getGateUpBiasAttr(), {experts, 2 * width})
        .check("down_bias", getDownBiasAttr(), {experts, hidden})
        .done();
  return ParamChecker(*this, symbols)
      .check("gate_up", getGateUpAttr(), {experts, hidden, 2 * width})
      .check("down", getDownAttr(), {experts, width, hidden})
      .check("gate_up_bias", getGateUpBiasAttr(), {experts, 2 * width})
      .check("down_bias", getDownBiasAttr(), {experts, hidden})
      .done();
}

//===----------------------------------------------------------------------===//
// MLPOp
//===----------------------------------------------------------------------===//

LogicalResult MLPOp::verifySymbolUses(SymbolTableCollection &symbols) {
  int64_t hidden = hiddenSizeOf(getInput()), width = getIntermediateSize();
  return ParamChecker(*this, symbols)
      .check("gate", getGateAttr(), {width, hidden})
      .check("up", getUpAttr(), {width, hidden})
      .check("down", getDownAttr(), {hidden, width})
      .check("output_gate", getOutputGateAttr(), {1, hidden})
      .done();
}

#define GET_OP_CLASSES
#include "dialects/MoE/MoEOps.cpp.inc"
