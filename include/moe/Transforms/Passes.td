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
    Option<"kvDtype", "kv-dtype", "std::string", /*default=*/"\"bf16\"",
           "KV cache format: bf16 or fp8">,
    Option<"stateBytes", "state-bytes", "int64_t", /*default=*/"4",
           "Bytes per recurrent state element (4 = fp32)">,
  ];
}

def SelectBatchSizes : Pass<"moe-select-batch-sizes", "::mlir::ModuleOp"> {
  let summary = "Choose module-based batch sizes, KV placement and residency";
  let description = [{
    Builds the cost model's view of the model (every module's weights,
    FLOPs, KV and GEMM shapes), then searches the resident batch B, the
    attention micro-batches, the expert micro-batch, the prefetch depth, the
    share of KV on the GPU and the resident weights, scoring each candidate
    by the critical path of one decode step over the hardware profile under
    the GPU and host budgets. Records the decision as `moe.batching` and the
    predictions and runner-ups as `moe.plan_report`. Fails, naming the pool
    and the shortfall, when nothing fits. With `tail`, also plans the job's
    tail (the steps after the last admission, when the live sequences only
    finish) and records it as `moe.tail` where it saves time.
  }];
  let options = [
    Option<"profile", "profile", "std::string", /*default=*/"",
           "Hardware profile JSON (moe-hardware-profile/1)">,
    Option<"gpuMemGiB", "gpu-mem", "double", /*default=*/"0",
           "GPU memory budget in GiB (0: the profile's)">,
    Option<"hostMemGiB", "host-mem", "double", /*default=*/"0",
           "Pinned host memory budget in GiB (0: the profile's)">,
    Option<"promptTokens", "prompt-len", "int64_t", /*default=*/"0",
           "Prompt length in tokens (0: 512); with lengths, the longest "
           "prompt planned for (longer ones count as this long)">,
    Option<"generatedTokens", "gen-len", "int64_t", /*default=*/"0",
           "Generated tokens per sequence (0: 256; the most, with "
           "gen-len-min); with lengths, the longest generation planned for">,
    Option<"minGeneratedTokens", "gen-len-min", "int64_t", /*default=*/"0",
           "The fewest generated tokens: generations spread evenly from it "
           "to gen-len, priced at the steady state of a refilled batch "
           "(0: every sequence generates gen-len)">,
    Option<"lengths", "lengths", "std::string", /*default=*/"",
           "The job's prompt and generation length distributions, as "
           "moe-run --describe-prompts writes them (JSON: prompt_tokens and "
           "generated_tokens, lists of [length, count])">,
    Option<"weightDtype", "weight-dtype", "std::string", /*default=*/"\"declared\"",
           "Weight dtype priced: declared (routed experts as the checkpoint "
           "stores them), bf16, f16, f32, fp8 or mxfp4 (routed experts as "
           "E4M3 with 128x128 block scales or as MXFP4, the rest bf16)">,
    Option<"kvDtype", "kv-dtype", "std::string", /*default=*/"\"bf16\"",
           "KV cache format: bf16, or fp8 (E4M3 with a scale per token "
           "and head)">,
    Option<"maxBatch", "max-batch", "int64_t", /*default=*/"65536",
           "Largest resident batch to consider">,
    Option<"batch", "batch", "int64_t", /*default=*/"0",
           "Plan exactly this resident batch, for a measured sweep of B "
           "(0: search B up to max-batch)">,
    Option<"runnerUps", "runner-ups", "int64_t", /*default=*/"6",
           "How many runner-up candidates to keep in the report">,
    Option<"hostAttention", "host-attention", "std::string",
           /*default=*/"\"auto\"",
           "Decode attention on the host's cores over host KV (ω): auto "
           "(the share balancing the host against PCIe, where the model "
           "and the profile's host_cpu section allow), or a fixed share "
           "of the sequences in [0, 1]">,
    Option<"tail", "tail", "bool", /*default=*/"false",
           "Also plan the job's tail: fewer slots and more resident weights "
           "for the last long sequences, kept where it saves time">,
  ];
}

def Place : Pass<"moe-place", "::mlir::ModuleOp"> {
  let summary = "Mark each weight GPU-resident or host-streamed";
  let description = [{
    Applies the residency of `moe.batching` (a prefix of the greedy
    residency order: dense modules first, then experts one by one, the
    embedding last) to every `moe.param`: `placement` = gpu_resident or
    host_streamed, and `gpu_experts` for a stacked expert weight whose first
    experts stay on the GPU.
  }];
}

def ExplainPlan : Pass<"moe-explain-plan", "::mlir::ModuleOp"> {
  let summary = "Print why the plan was chosen";
  let description = [{
    Prints the decision of `moe-select-batch-sizes` and its report: batch
    sizes, predicted prefill and decode tokens/s, time per stage, bytes per
    link per step, memory per pool against its budget, the roofline bound
    that applies, and the runner-up candidates with the reason each lost.
    Text for people, or JSON with `json=true`.
  }];
  let options = [
    Option<"json", "json", "bool", /*default=*/"false",
           "Print JSON instead of text">,
  ];
}

#endif // MOE_TRANSFORMS_PASSES_TD
