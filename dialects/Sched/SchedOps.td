//===- SchedOps.td - ops of the sched dialect -----------------*- tablegen -*-===//

#ifndef SCHED_OPS_TD
#define SCHED_OPS_TD

include "dialects/Sched/SchedDialect.td"

class Sched_Op<string mnemonic, list<Trait> traits = []>
    : Op<Sched_Dialect, mnemonic, traits>;

def Sched_StreamOp : Sched_Op<"stream", [Symbol]> {
  let summary = "a stream: jobs on it run in program order";
  let arguments = (ins SymbolNameAttr:$sym_name, Sched_StreamKindAttr:$kind);
  let assemblyFormat = "$sym_name $kind attr-dict";
}

def Sched_BufferPoolOp : Sched_Op<"buffer_pool", [Symbol]> {
  let summary = "device buffers used in turn: ring slots or staging buffers";
  let arguments = (ins SymbolNameAttr:$sym_name, Sched_PoolKindAttr:$kind,
                       ConfinedAttr<I64Attr, [IntPositive]>:$count,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$buffer_bytes);
  let assemblyFormat = "$sym_name $kind `x` $count `,` $buffer_bytes `bytes` attr-dict";
}

def Sched_StepOp : Sched_Op<"step", [Symbol, NoTerminator, SingleBlock]> {
  let summary = "the jobs of one decode step or one prefill pass";
  let description = [{
    Jobs in issue order. `predicted_seconds` is the critical path the cost
    model computed for exactly these jobs.
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, F64Attr:$predicted_seconds);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$sym_name attr-dict-with-keyword $body";
  let hasRegionVerifier = 1;
}

// Common fields of a job: where in the model it acts. Layer and module index
// the cost model's view (layer 0 is the embedding, the last the LM head).
class Sched_JobOp<string mnemonic> : Sched_Op<mnemonic,
    [DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let results = (outs Sched_EventType:$done);
  let hasVerifier = 1;
}

def Sched_CopyOp : Sched_JobOp<"copy"> {
  let summary = "a copy between host and device memory";
  let arguments = (ins Variadic<Sched_EventType>:$after,
      FlatSymbolRefAttr:$stream, Sched_CopyKindAttr:$kind,
      I64Attr:$layer, I64Attr:$module,
      DefaultValuedAttr<I64Attr, "-1">:$micro_batch,
      DefaultValuedAttr<I64Attr, "0">:$first_sequence,
      DefaultValuedAttr<I64Attr, "0">:$sequences,
      OptionalAttr<FlatSymbolRefAttr>:$pool,
      DefaultValuedAttr<I64Attr, "-1">:$buffer,
      F64Attr:$bytes, F64Attr:$seconds);
  let assemblyFormat = "$kind `on` $stream (`after` `(` $after^ `)`)? attr-dict";
}

def Sched_ComputeOp : Sched_JobOp<"compute"> {
  let summary = "a module's compute over some of the resident sequences";
  let arguments = (ins Variadic<Sched_EventType>:$after,
      FlatSymbolRefAttr:$stream, StrAttr:$stage,
      I64Attr:$layer, I64Attr:$module,
      DefaultValuedAttr<I64Attr, "-1">:$micro_batch,
      DefaultValuedAttr<I64Attr, "0">:$first_sequence,
      DefaultValuedAttr<I64Attr, "0">:$sequences,
      OptionalAttr<FlatSymbolRefAttr>:$pool,
      DefaultValuedAttr<I64Attr, "-1">:$buffer,
      DefaultValuedAttr<Sched_ExpertShareAttr, "::mlir::sched::ExpertShare::all">:$experts,
      F64Attr:$seconds);
  let assemblyFormat = "$stage `on` $stream (`after` `(` $after^ `)`)? attr-dict";
}

#endif // SCHED_OPS_TD
