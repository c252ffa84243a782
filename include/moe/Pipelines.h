//===- Pipelines.h - moe's pass pipelines ------------------------*- C++ -*-===//
#pragma once

#include "mlir/Pass/Pass.h"

#include <memory>
#include <string>

namespace mlir::moe {

/// `moe-compile-tail`: compiles the tail's plan that moe-select-batch-sizes
/// recorded (its `tail` option) and keeps it for moe-export-plan.
std::unique_ptr<Pass> createCompileTail(std::string profile);
void registerCompileTailPass();

/// Registers `moe-plan`: select batch sizes, place weights, schedule the
/// overlap and (with output=FILE) export the plan, from one option string:
///   --moe-plan="profile=h100.json gpu-mem=24 host-mem=120 prompt-len=512
///               gen-len=256 kv-dtype=bf16 output=model.moeplan"
/// With tail-plan (the default), the plan carries the job's tail plan too.
void registerPlanPipeline();

} // namespace mlir::moe
