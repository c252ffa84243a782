//===- CostModelBridge.h - moe IR → the plain-C++ cost model ----*- C++ -*-===//
#pragma once

#include "dialects/MoE/MoEOps.h"
#include "runtime/costmodel/Lengths.h"
#include "runtime/costmodel/ModelCosts.h"
#include "runtime/model/WeightFormat.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/SymbolTable.h"

#include <optional>
#include <vector>

namespace mlir::moe {

/// The cost model's view of a module, and which op each of its modules is:
/// `ops[l][m]` is the op behind `costs.layers[l].modules[m]`. Layer 0 holds
/// the embedding, the last layer the final norm and LM head; decoder layer
/// i is layer i + 1.
struct CostModelView {
  ::moe::costmodel::ModelCosts costs;
  std::vector<std::vector<Operation *>> ops;
};

/// Element sizes the plan is made for: weights as streamed (nullopt: as
/// declared by each moe.param), routed experts' format (fp8 and mxfp4
/// override weightElementBytes for their matrices) and the KV cache /
/// recurrent state.
struct PlanDtypes {
  std::optional<int64_t> weightElementBytes;
  ::moe::model::WeightDtype experts = ::moe::model::WeightDtype::bf16;
  CacheDtypes cache;
};

FailureOr<CostModelView> buildCostModelView(ModuleOp module,
                                            const PlanDtypes &dtypes);

/// The dtypes a recorded batching decision was made for.
PlanDtypes planDtypesOf(BatchingAttr batching);

/// The lengths a recorded batching decision was planned for: the
/// distributions where it records them, else prompts of prompt_tokens and
/// generations spread evenly from min_generated_tokens (or all
/// generated_tokens long).
::moe::costmodel::GenerationLengths lengthsOf(BatchingAttr batching);

/// A distribution as a batching decision records it.
DenseF64ArrayAttr
lengthsAttr(MLIRContext *context,
            const ::moe::costmodel::LengthDistribution &lengths);

/// Bytes of a routed experts op's params held as `dtype`
/// (runtime/model/WeightFormat.h): each stacked matrix as codes and
/// scales, biases in bf16.
int64_t expertsWeightBytes(ArrayRef<ParamOp> params,
                           ::moe::model::WeightDtype dtype);

/// The weights an op references, in attribute order.
SmallVector<ParamOp> referencedParams(Operation *op,
                                      SymbolTableCollection &symbols);

} // namespace mlir::moe
