//===- Passes.td - conversions between moe dialects -----------*- tablegen -*-===//

#ifndef MOE_CONVERSION_PASSES_TD
#define MOE_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def ScheduleOverlap : Pass<"moe-schedule-overlap", "::mlir::ModuleOp"> {
  let summary = "Lower the batching decision to an explicit sched schedule";
  let description = [{
    From `moe.batching` and the placements, builds the jobs of one decode
    step and one prefill pass exactly as the cost model priced them: weight
    copies into ring slots `prefetch_depth` layers ahead, host-KV micro-batches
    staged through `kv_staging_buffers` buffers while the previous one
    computes, their new KV stored back, prefill hidden states parked between
    layers; every job on its stream, waiting on the events of the jobs it
    needs. Emits sched.stream, sched.buffer_pool and sched.step ops.
  }];
  let options = [
    Option<"profile", "profile", "std::string", /*default=*/"",
           "Hardware profile JSON, to price each job">,
  ];
  let dependentDialects = ["::mlir::sched::SchedDialect"];
}

#endif // MOE_CONVERSION_PASSES_TD
