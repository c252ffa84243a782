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

/// `config` with what transformers' config class of `modelType` holds for
/// each key it leaves out: a config that omits a key at its class's default
/// (as a hand-written or trimmed config.json does) imports to the model
/// transformers builds from it. A key transformers reads under another name
/// (the class's attribute_map, e.g. num_experts for num_local_experts) is
/// copied to the name the readers read. Unchanged for types without a
/// transformers class (the legacy MiniMax types, yi_lightning).
json::Object withClassDefaults(const json::Object &config, StringRef modelType);

/// Fills `spec` from `config` for the model type `spec.modelType` (one of
/// supportedModelTypes()); a problem is reported through `config`.
void readModelSpec(ConfigReader &config, ModelSpec &spec, MLIRContext *context);

} // namespace mlir::moe::hf
