//===- Pipelines.h - moe's pass pipelines ------------------------*- C++ -*-===//
#pragma once

namespace mlir::moe {

/// Registers `moe-plan`: select batch sizes, place weights, schedule the
/// overlap and (with output=FILE) export the plan, from one option string:
///   --moe-plan="profile=h100.json gpu-mem=24 host-mem=120 prompt-len=512
///               gen-len=256 kv-dtype=bf16 output=model.moeplan"
void registerPlanPipeline();

} // namespace mlir::moe
