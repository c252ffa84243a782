//===- SchedOps.h - ops of the sched dialect --------------------*- C++ -*-===//
#pragma once

#include "dialects/Sched/SchedDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"

#define GET_OP_CLASSES
#include "dialects/Sched/SchedOps.h.inc"

namespace mlir::sched {
/// The stage of the compute jobs that run on a host stream: decode
/// attention on the host's cores (the cost model's name for that stage).
inline constexpr llvm::StringLiteral kHostAttentionStage = "host attention";
} // namespace mlir::sched
