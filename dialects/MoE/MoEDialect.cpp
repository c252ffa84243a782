//===- MoEDialect.cpp - the moe dialect -----------------------------------===//

#include "dialects/MoE/MoEDialect.h"
#include "dialects/MoE/MoEOps.h"

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

LogicalResult MoEDialect::verifyOperationAttribute(Operation *op,
                                                   NamedAttribute attr) {
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
