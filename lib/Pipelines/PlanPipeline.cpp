//===- PlanPipeline.cpp - the moe-plan pipeline ---------------------------===//

#include "moe/Pipelines.h"

#include "moe/Conversion/Passes.h"
#include "moe/Target/Passes.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "mlir/Pass/PassRegistry.h"

using namespace mlir;

namespace {
struct PlanPipelineOptions : public PassPipelineOptions<PlanPipelineOptions> {
  Option<std::string> profile{*this, "profile",
                              llvm::cl::desc("Hardware profile JSON")};
  Option<double> gpuMemGiB{*this, "gpu-mem",
                           llvm::cl::desc("GPU budget in GiB (0: profile's)"),
                           llvm::cl::init(0.0)};
  Option<double> hostMemGiB{*this, "host-mem",
                            llvm::cl::desc("Host budget in GiB (0: profile's)"),
                            llvm::cl::init(0.0)};
  Option<int64_t> promptTokens{
      *this, "prompt-len",
      llvm::cl::desc("Prompt length in tokens (0: 512; with lengths, the "
                     "longest planned for)"),
      llvm::cl::init(0)};
  Option<int64_t> generatedTokens{
      *this, "gen-len",
      llvm::cl::desc("Generated tokens (0: 256; with lengths, the longest "
                     "planned for)"),
      llvm::cl::init(0)};
  Option<int64_t> minGeneratedTokens{
      *this, "gen-len-min",
      llvm::cl::desc("The fewest generated tokens (generations spread evenly "
                     "to gen-len; 0: all reach gen-len)"),
      llvm::cl::init(0)};
  Option<std::string> lengths{
      *this, "lengths",
      llvm::cl::desc("The job's length distributions (moe-run "
                     "--describe-prompts's JSON)")};
  Option<int64_t> maxBatch{
      *this, "max-batch",
      llvm::cl::desc("Largest resident batch (e.g. the number of prompts)"),
      llvm::cl::init(65536)};
  Option<int64_t> batch{
      *this, "batch",
      llvm::cl::desc("Plan exactly this resident batch, for a measured "
                     "sweep of B (0: search B up to max-batch)"),
      llvm::cl::init(0)};
  Option<std::string> weightDtype{
      *this, "weight-dtype",
      llvm::cl::desc("Weight dtype: declared (routed experts as the "
                     "checkpoint stores them), bf16, f16, f32, fp8 or mxfp4 "
                     "(routed experts in E4M3 or MXFP4, the rest bf16)"),
      llvm::cl::init("declared")};
  Option<std::string> kvDtype{*this, "kv-dtype",
                              llvm::cl::desc("KV cache format: bf16 or fp8"),
                              llvm::cl::init("bf16")};
  Option<std::string> hostAttention{
      *this, "host-attention",
      llvm::cl::desc("Decode attention on the host's cores (ω): auto or a "
                     "fixed share of the sequences in [0, 1]"),
      llvm::cl::init("auto")};
  Option<bool> tailPlan{
      *this, "tail-plan",
      llvm::cl::desc("Also compile a plan for the job's tail (the steps "
                     "after the last admission), kept where it saves time"),
      llvm::cl::init(true)};
  Option<std::string> output{*this, "output",
                             llvm::cl::desc("Write the plan to this file")};
};
} // namespace

void mlir::moe::registerPlanPipeline() {
  PassPipelineRegistration<PlanPipelineOptions>(
      "moe-plan",
      "Plan a model: batch sizes, placement, overlap schedule, plan file",
      [](OpPassManager &pm, const PlanPipelineOptions &options) {
        SelectBatchSizesOptions select;
        select.profile = options.profile;
        select.gpuMemGiB = options.gpuMemGiB;
        select.hostMemGiB = options.hostMemGiB;
        select.promptTokens = options.promptTokens;
        select.generatedTokens = options.generatedTokens;
        select.minGeneratedTokens = options.minGeneratedTokens;
        select.lengths = options.lengths;
        select.maxBatch = options.maxBatch;
        select.batch = options.batch;
        select.weightDtype = options.weightDtype;
        select.kvDtype = options.kvDtype;
        select.hostAttention = options.hostAttention;
        select.tail = options.tailPlan;
        pm.addPass(createSelectBatchSizes(select));
        if (options.tailPlan)
          pm.addPass(createCompileTail(options.profile));
        pm.addPass(createPlace());
        ScheduleOverlapOptions schedule;
        schedule.profile = options.profile;
        pm.addPass(createScheduleOverlap(schedule));
        if (!options.output.empty()) {
          ExportPlanOptions exportOptions;
          exportOptions.output = options.output;
          pm.addPass(createExportPlan(exportOptions));
        }
      });
}
