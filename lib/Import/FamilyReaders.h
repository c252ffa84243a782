//===- FamilyReaders.h - config.json to ModelSpec, per family -------------===//
//
// Part of the config importer. Adding a family means writing its reader in
// FamilyReaders.cpp and naming its model_type in supportedModelTypes().
//
//===----------------------------------------------------------------------===//

#pragma once

#include "ConfigReader.h"
#include "ModelSpec.h"

namespace mlir::moe::hf {

/// Fills `spec` from `config` for the model type `spec.modelType` (one of
/// supportedModelTypes()); a problem is reported through `config`.
void readModelSpec(ConfigReader &config, ModelSpec &spec, MLIRContext *context);

} // namespace mlir::moe::hf
