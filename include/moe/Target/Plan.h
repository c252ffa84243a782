//===- Plan.h - moe module → FlatBuffers plan -------------------*- C++ -*-===//
#pragma once

#include "mlir/IR/BuiltinOps.h"

#include <cstdint>
#include <vector>

namespace mlir::moe {

/// Serializes an imported (and planned) model into the plan format the
/// runtime reads (runtime/schemas/plan.fbs). Fails with a diagnostic on IR
/// the plan cannot express.
FailureOr<std::vector<uint8_t>> exportPlan(ModuleOp module);

} // namespace mlir::moe
