//===- CompileTail.cpp - the moe-compile-tail pass ------------------------===//
//
// The tail's plan is a whole plan (its own placement and schedule), so it is
// compiled as one: a copy of the module takes the tail's decision and runs
// the planning passes that follow the batch-size search, and its plan file
// travels inside the job's plan (moe-export-plan writes it as a phase).
//
//===----------------------------------------------------------------------===//

#include "moe/Pipelines.h"

#include "moe/Conversion/Passes.h"
#include "moe/Target/Plan.h"
#include "moe/Transforms/Passes.h"

#include "dialects/MoE/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

using namespace mlir;
using namespace mlir::moe;

namespace {
struct CompileTailPass
    : public PassWrapper<CompileTailPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(CompileTailPass)

  CompileTailPass() = default;
  CompileTailPass(const CompileTailPass &other) : PassWrapper(other) {}
  explicit CompileTailPass(std::string profilePath) {
    profile = std::move(profilePath);
  }

  StringRef getArgument() const override { return "moe-compile-tail"; }
  StringRef getDescription() const override {
    return "Compile the plan of the job's tail that moe-select-batch-sizes "
           "recorded (moe.tail): place and schedule a copy of the module "
           "with the tail's decision and keep its plan file under "
           "moe.tail's \"plan\" for moe-export-plan";
  }

  Option<std::string> profile{*this, "profile",
                              llvm::cl::desc("Hardware profile JSON")};

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto tail =
        module->getAttrOfType<DictionaryAttr>(MoEDialect::kTailAttrName);
    if (!tail)
      return markAllAnalysesPreserved();
    auto batching = tail.getAs<BatchingAttr>("batching");
    auto report = tail.getAs<DictionaryAttr>("report");
    if (!batching || !report) {
      module.emitError() << "'" << MoEDialect::kTailAttrName
                         << "' needs a batching decision and its report";
      return signalPassFailure();
    }
    OwningOpRef<ModuleOp> copy = module.clone();
    (*copy)->setAttr(MoEDialect::kBatchingAttrName, batching);
    (*copy)->setAttr(MoEDialect::kPlanReportAttrName, report);
    (*copy)->removeAttr(MoEDialect::kTailAttrName);
    PassManager planning(module.getContext());
    planning.addPass(createPlace());
    ScheduleOverlapOptions schedule;
    schedule.profile = profile;
    planning.addPass(createScheduleOverlap(schedule));
    if (failed(planning.run(*copy)))
      return signalPassFailure();
    FailureOr<std::vector<uint8_t>> bytes = exportPlan(*copy);
    if (failed(bytes))
      return signalPassFailure();
    NamedAttrList entries(tail);
    entries.set(
        "plan",
        StringAttr::get(module.getContext(),
                        StringRef(reinterpret_cast<const char *>(bytes->data()),
                                  bytes->size())));
    module->setAttr(MoEDialect::kTailAttrName,
                    entries.getDictionary(module.getContext()));
  }
};
} // namespace

std::unique_ptr<Pass> mlir::moe::createCompileTail(std::string profile) {
  return std::make_unique<CompileTailPass>(std::move(profile));
}

void mlir::moe::registerCompileTailPass() {
  PassRegistration<CompileTailPass>();
}
