//===- Passes.td - passes that write artifacts ----------------*- tablegen -*-===//

#ifndef MOE_TARGET_PASSES_TD
#define MOE_TARGET_PASSES_TD

include "mlir/Pass/PassBase.td"

def ExportPlan : Pass<"moe-export-plan", "::mlir::ModuleOp"> {
  let summary = "Write the model and its plan as a FlatBuffers .moeplan file";
  let description = [{
    Serializes the module (model graph, parameter placement, planner
    decisions) into the format `moe-run` loads (runtime/schemas/plan.fbs).
    Leaves the IR as is, so it can end any pipeline.
  }];
  let options = [
    Option<"output", "output", "std::string", /*default=*/"",
           "Path of the .moeplan file to write">,
  ];
}

#endif // MOE_TARGET_PASSES_TD
