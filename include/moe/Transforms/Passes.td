//===- Passes.td - moe passes ---------------------------------*- tablegen -*-===//

#ifndef MOE_TRANSFORMS_PASSES_TD
#define MOE_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def PrintModelSummary : Pass<"moe-print-summary", "::mlir::ModuleOp"> {
  let summary = "Print parameter counts, weight bytes, KV and state sizes";
  let description = [{
    Adds up every module's cost (ModuleCostInterface): total and active
    parameters, bf16 weight bytes, KV bytes per token and fixed state bytes
    per sequence. Prints to stdout, as text or as JSON. Leaves the IR as is.
  }];
  let options = [
    Option<"json", "json", "bool", /*default=*/"false",
           "Print JSON instead of text">,
    Option<"kvBytes", "kv-bytes", "int64_t", /*default=*/"2",
           "Bytes per KV cache element (2 = bf16)">,
    Option<"stateBytes", "state-bytes", "int64_t", /*default=*/"4",
           "Bytes per recurrent state element (4 = fp32)">,
  ];
}

#endif // MOE_TRANSFORMS_PASSES_TD
