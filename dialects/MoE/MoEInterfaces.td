//===- MoEInterfaces.td - module cost interface ---------------*- tablegen -*-===//

#ifndef MOE_INTERFACES_TD
#define MOE_INTERFACES_TD

include "mlir/IR/OpBase.td"

def MoE_ModuleCostInterface : OpInterface<"ModuleCostInterface"> {
  let cppNamespace = "::mlir::moe";
  let description = [{
    A module of the model (attention, router, experts, ...) reports what it
    costs per token: the parameters it stores and touches, its FLOPs, and the
    KV or state it keeps per sequence. The planner and `moe-print-summary`
    add these up; nothing else in the compiler hard-codes a family's math.
  }];
  let methods = [
    InterfaceMethod<"The kind of module, for per-kind totals and placement.",
      "::mlir::moe::ModuleKind", "getModuleKind", (ins)>,
    InterfaceMethod<[{
        Cost of the module for one token. Parameter sizes come from the
        `moe.param` symbols the op references.
      }],
      "::mlir::moe::ModuleCost", "getModuleCost",
      (ins "::mlir::SymbolTableCollection &":$symbols,
           "const ::mlir::moe::CacheDtypes &":$cacheDtypes)>,
  ];
}

#endif // MOE_INTERFACES_TD
