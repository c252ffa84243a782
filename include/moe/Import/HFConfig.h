//===- HFConfig.h - HuggingFace config.json → moe dialect -------*- C++ -*-===//
#pragma once

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringRef.h"

namespace mlir::moe {

/// Model types the importer reads (HF `model_type`, plus the legacy MiniMax
/// keys and this project's `yi_lightning` definition).
llvm::ArrayRef<llvm::StringLiteral> supportedModelTypes();

/// Imports a model definition from a checkpoint directory (its config.json)
/// or a config.json file. On failure emits one error naming the file and the
/// offending field and returns null.
OwningOpRef<ModuleOp> importHFConfig(MLIRContext *context,
                                     llvm::StringRef path);

/// As above, from config text already in memory; `fileName` names it in
/// diagnostics.
OwningOpRef<ModuleOp> importHFConfigText(MLIRContext *context,
                                         llvm::StringRef text,
                                         llvm::StringRef fileName);

/// True if `path` is a directory or a .json file, i.e. something to import
/// rather than parse as MLIR.
bool isHFConfigPath(llvm::StringRef path);

} // namespace mlir::moe
