//===- PrintModelSummary.cpp - the moe-print-summary pass -----------------===//

#include "moe/Analysis/ModelSummary.h"
#include "moe/Transforms/Passes.h"

#include "llvm/Support/raw_ostream.h"

namespace mlir::moe {
#define GEN_PASS_DEF_PRINTMODELSUMMARY
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;

namespace {
struct PrintModelSummaryPass
    : public mlir::moe::impl::PrintModelSummaryBase<PrintModelSummaryPass> {
  using PrintModelSummaryBase::PrintModelSummaryBase;

  void runOnOperation() override {
    std::optional<::moe::model::KvDtype> kv =
        ::moe::model::parseKvDtype(kvDtype);
    if (!kv || stateBytes <= 0) {
      getOperation().emitError() << "moe-print-summary: kv-dtype must be "
                                    "bf16 or fp8, state-bytes positive";
      return signalPassFailure();
    }
    FailureOr<ModelSummary> summary =
        summarizeModel(getOperation(), CacheDtypes{*kv, stateBytes});
    if (failed(summary))
      return signalPassFailure();
    if (json)
      llvm::outs() << llvm::formatv("{0:2}", modelSummaryToJSON(*summary))
                   << "\n";
    else
      printModelSummary(llvm::outs(), *summary);
    markAllAnalysesPreserved();
  }
};
} // namespace
