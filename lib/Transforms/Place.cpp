//===- Place.cpp - the moe-place pass -------------------------------------===//
//
// The resident set is a prefix of the cost model's residency order, so the
// decision is one number; this pass turns it into a placement per weight.
//
//===----------------------------------------------------------------------===//

#include "moe/Analysis/CostModelBridge.h"
#include "moe/Transforms/Passes.h"

#include "dialects/MoE/MoEOps.h"
#include "runtime/costmodel/Plan.h"

#include "llvm/ADT/MapVector.h"

namespace mlir::moe {
#define GEN_PASS_DEF_PLACE
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;
namespace cm = ::moe::costmodel;

namespace {

/// What the modules that read a weight ask of it. A weight shared by two
/// modules (a tied LM head) stays on the GPU if either keeps it there.
struct WeightDemand {
  bool resident = false;
  int64_t gpuExperts = 0;
};

struct PlacePass : public mlir::moe::impl::PlaceBase<PlacePass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto batching =
        module->getAttrOfType<BatchingAttr>(MoEDialect::kBatchingAttrName);
    if (!batching) {
      module.emitError() << "moe-place needs the planner's decision: run "
                            "moe-select-batch-sizes first";
      return signalPassFailure();
    }
    FailureOr<CostModelView> view =
        buildCostModelView(module, planDtypesOf(batching));
    if (failed(view))
      return signalPassFailure();
    cm::ResidentSet resident =
        cm::residentPrefix(view->costs, batching.getResidentUnits());

    SymbolTableCollection symbols;
    llvm::MapVector<Operation *, WeightDemand> demands;
    for (size_t l = 0; l < view->ops.size(); ++l) {
      for (size_t m = 0; m < view->ops[l].size(); ++m) {
        const cm::ModuleCosts &costs = view->costs.layers[l].modules[m];
        int64_t units = resident.units[l][m];
        bool whole = units == cm::residencyUnits(costs);
        for (ParamOp param : referencedParams(view->ops[l][m], symbols)) {
          WeightDemand &demand = demands[param];
          demand.resident |= whole;
          if (!whole)
            demand.gpuExperts = std::max(demand.gpuExperts, units);
        }
      }
    }
    OpBuilder builder(&getContext());
    for (auto &[op, demand] : demands) {
      auto param = cast<ParamOp>(op);
      param.setPlacement(demand.resident ? Placement::gpu_resident
                                         : Placement::host_streamed);
      if (!demand.resident && demand.gpuExperts > 0)
        param.setGpuExperts(demand.gpuExperts);
      else
        param.removeGpuExpertsAttr();
    }
  }
};

} // namespace
