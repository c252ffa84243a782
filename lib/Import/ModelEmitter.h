//===- ModelEmitter.h - ModelSpec to moe dialect IR -----------------------===//
//
// Part of the config importer: one emitter for every family.
//
//===----------------------------------------------------------------------===//

#pragma once

#include "ModelSpec.h"

#include "mlir/IR/BuiltinOps.h"

namespace mlir::moe::hf {

/// Builds the model of `spec` into `module`.
void emitModel(const ModelSpec &spec, ModuleOp module);

} // namespace mlir::moe::hf
