//===- ModelSummary.h - totals of a model's module costs --------*- C++ -*-===//
#pragma once

#include "dialects/MoE/MoEInterfaces.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <map>
#include <string>

namespace mlir::moe {

/// What the whole model stores, reads per token, and keeps per sequence,
/// added up from every module's ModuleCostInterface.
struct ModelSummary {
  std::string modelType, architecture;
  int64_t numLayers = 0, hiddenSize = 0, vocabSize = 0;
  int64_t totalParams = 0;   // every moe.param once (tied weights once)
  int64_t activeParams = 0;  // what one token reads: k of E experts
  int64_t embeddingParams = 0; // embedding table and LM head, once each
  int64_t weightBytes = 0;   // at the declared dtypes
  // As plans with weight-dtype=fp8 or mxfp4 run them: routed experts in
  // that format, the rest in bf16.
  int64_t fp8ExpertsWeightBytes = 0;
  int64_t mxfp4ExpertsWeightBytes = 0;
  // As the checkpoint stores them (what weight-dtype=declared runs): its
  // routed experts' format, the rest as declared.
  std::string storedExpertDtype;
  int64_t storedWeightBytes = 0;
  double flopsPerToken = 0;  // without attention over the context
  double flopsPerContextToken = 0; // attention, per attended token
  int64_t kvBytesPerToken = 0;       // over all layers, in kvDtype
  ::moe::model::KvDtype kvDtype = ::moe::model::KvDtype::bf16;
  int64_t stateBytesPerSequence = 0; // lightning state and sliding windows
  std::map<ModuleKind, ModuleCost> byKind;
};

/// Adds up the module costs of `module`. Fails (with a diagnostic) if the
/// module has no #moe.model attribute.
FailureOr<ModelSummary> summarizeModel(ModuleOp module,
                                       const CacheDtypes &cacheDtypes);

void printModelSummary(llvm::raw_ostream &os, const ModelSummary &summary);
llvm::json::Value modelSummaryToJSON(const ModelSummary &summary);

} // namespace mlir::moe
