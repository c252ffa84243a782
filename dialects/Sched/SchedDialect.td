//===- SchedDialect.td - explicit schedules of copies and compute -*- tablegen -*-===//
//
// The `sched` dialect states how one decode step and one prefill pass run:
// which stream each copy and compute job goes on, which ring slot or staging
// buffer it uses, and which earlier jobs it waits for (events). It is 1:1
// with the plan's schedule, so the runtime executes exactly what the cost
// model priced.
//
//===----------------------------------------------------------------------===//

#ifndef SCHED_DIALECT_TD
#define SCHED_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/SymbolInterfaces.td"

def Sched_Dialect : Dialect {
  let name = "sched";
  let cppNamespace = "::mlir::sched";
  let summary = "streams, buffers and the jobs of one step";
  let useDefaultTypePrinterParser = 1;
  let useDefaultAttributePrinterParser = 1;
}

def Sched_EventType : TypeDef<Sched_Dialect, "Event"> {
  let mnemonic = "event";
  let summary = "completion of a job; a job lists the events it waits for";
}

def Sched_StreamKind : I32EnumAttr<"StreamKind", "what a stream runs", [
    I32EnumAttrCase<"compute", 0>, I32EnumAttrCase<"h2d", 1>,
    I32EnumAttrCase<"d2h", 2>, I32EnumAttrCase<"host", 3>]> {
  let cppNamespace = "::mlir::sched";
  let genSpecializedAttr = 0;
}
def Sched_PoolKind : I32EnumAttr<"PoolKind", "what a buffer pool holds", [
    I32EnumAttrCase<"weight_ring", 0>,  // one streaming layer's weights per slot
    I32EnumAttrCase<"kv_staging", 1>,   // one host-KV micro-batch per buffer
    I32EnumAttrCase<"hidden", 2>]> {    // one prefill chunk's hidden states
  let cppNamespace = "::mlir::sched";
  let genSpecializedAttr = 0;
}
def Sched_CopyKind : I32EnumAttr<"CopyKind", "what a copy moves", [
    I32EnumAttrCase<"weights", 0>, I32EnumAttrCase<"kv_load", 1>,
    I32EnumAttrCase<"kv_store", 2>, I32EnumAttrCase<"hidden_load", 3>,
    I32EnumAttrCase<"hidden_store", 4>]> {
  let cppNamespace = "::mlir::sched";
  let genSpecializedAttr = 0;
}
def Sched_ExpertShare : I32EnumAttr<"ExpertShare",
    "which experts a routed-experts job computes", [
    I32EnumAttrCase<"all", 0>, I32EnumAttrCase<"resident", 1>,
    I32EnumAttrCase<"streamed", 2>]> {
  let cppNamespace = "::mlir::sched";
  let genSpecializedAttr = 0;
}

def Sched_StreamKindAttr : EnumAttr<Sched_Dialect, Sched_StreamKind, "stream_kind">;
def Sched_PoolKindAttr : EnumAttr<Sched_Dialect, Sched_PoolKind, "pool_kind">;
def Sched_CopyKindAttr : EnumAttr<Sched_Dialect, Sched_CopyKind, "copy_kind">;
def Sched_ExpertShareAttr : EnumAttr<Sched_Dialect, Sched_ExpertShare, "experts">;

#endif // SCHED_DIALECT_TD
