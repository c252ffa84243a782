//===- MoEInterfaces.h - module cost interface ------------------*- C++ -*-===//
#pragma once

#include <cstdint>

#include "runtime/costmodel/ModelCosts.h"
#include "runtime/model/KvFormat.h"

#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"

namespace mlir::moe {

/// What a module is, for per-kind totals and placement: the cost model's
/// own kinds, so the compiler and the runtime name modules alike.
using ModuleKind = ::moe::costmodel::ModuleKind;

/// Element sizes of what a sequence keeps between steps.
struct CacheDtypes {
  ::moe::model::KvDtype kv = ::moe::model::KvDtype::bf16;
  int64_t stateElementBytes = 4; // fp32 recurrent state (lightning attention)
};

/// Cost of one module for one token. FLOPs count a multiply-add as two.
struct ModuleCost {
  int64_t params = 0;         // parameters the module stores
  int64_t activeParams = 0;   // parameters one token reads
  int64_t weightBytes = 0;    // stored bytes at the declared dtypes
  double flopsPerToken = 0;   // excluding the context-dependent part
  double flopsPerContextToken = 0; // attention: per (query, attended) pair
  int64_t kvBytesPerToken = 0;     // cache growth per token of context
  int64_t kvWindowTokens = 0;      // > 0: the cache holds at most this many
  int64_t stateBytesPerSequence = 0; // fixed-size state per sequence
  // Step memory one batch row takes for the module's own buffers while it
  // runs (runtime/model/ActivationBytes.h, as the CUDA backend counts them).
  int64_t activationRowBytes = 0;
};

} // namespace mlir::moe

#include "dialects/MoE/MoEInterfaces.h.inc"
