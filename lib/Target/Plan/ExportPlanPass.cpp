//===- ExportPlanPass.cpp - the moe-export-plan pass ----------------------===//

#include "moe/Target/Passes.h"
#include "moe/Target/Plan.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::moe {
#define GEN_PASS_DEF_EXPORTPLAN
#include "moe/Target/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;

namespace {
struct ExportPlanPass : public mlir::moe::impl::ExportPlanBase<ExportPlanPass> {
  using ExportPlanBase::ExportPlanBase;

  void runOnOperation() override {
    if (output.empty()) {
      getOperation().emitError()
          << "moe-export-plan needs an output file: "
             "--moe-export-plan=\"output=model.moeplan\"";
      return signalPassFailure();
    }
    FailureOr<std::vector<uint8_t>> bytes = moe::exportPlan(getOperation());
    if (failed(bytes))
      return signalPassFailure();
    std::error_code error;
    llvm::raw_fd_ostream file(output, error, llvm::sys::fs::OF_None);
    if (!error) {
      file.write(reinterpret_cast<const char *>(bytes->data()), bytes->size());
      file.close();
      error = file.error();
    }
    if (error) {
      getOperation().emitError()
          << "cannot write plan '" << output << "': " << error.message();
      return signalPassFailure();
    }
    markAllAnalysesPreserved();
  }
};
} // namespace
