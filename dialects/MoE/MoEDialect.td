//===- MoEDialect.td - the moe dialect, its enums and attributes -*- tablegen -*-===//
//
// The model graph of a Mixture-of-Experts LLM. Each op is one *module* of a
// decoder layer (attention, router, experts, ...), the unit that the planner
// batches, places and streams. Weights are `moe.param` symbols so placement
// can annotate each parameter; ops reference them by symbol.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_TD
#define MOE_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"

def MoE_Dialect : Dialect {
  let name = "moe";
  let cppNamespace = "::mlir::moe";
  let summary = "Mixture-of-Experts model graph";
  let description = [{
    Ops over token activations `tensor<?xHxf32>` (one row per token of the
    batch; the token count is dynamic). Model weights are module-level
    `moe.param` symbols in the checkpoint's layout and dtype.
  }];
  let useDefaultAttributePrinterParser = 1;
  let hasOperationAttrVerify = 1;
  let extraClassDeclaration = [{
    /// Name of the module attribute that holds the #moe.model description.
    static constexpr ::llvm::StringLiteral kModelAttrName = "moe.model";
    /// The planner's decision (#moe.batching) and its prediction report.
    static constexpr ::llvm::StringLiteral kBatchingAttrName = "moe.batching";
    static constexpr ::llvm::StringLiteral kPlanReportAttrName = "moe.plan_report";
    /// The plan for the job's tail: its decision, report and the steps both
    /// plans take as the live sequences go down (and, once compiled, the
    /// tail's plan file as a string of bytes under "plan").
    static constexpr ::llvm::StringLiteral kTailAttrName = "moe.tail";
  }];
}

class MoE_Attr<string name, string mnemonicName, list<Trait> traits = []>
    : AttrDef<MoE_Dialect, name, traits> {
  let mnemonic = mnemonicName;
}

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def MoE_RopeStyle : I32EnumAttr<"RopeStyle", "how RoPE pairs dimensions", [
    I32EnumAttrCase<"neox", 0>,          // rotate_half: (x_i, x_{i+d/2})
    I32EnumAttrCase<"interleaved", 1>    // GPT-J: (x_{2i}, x_{2i+1})
  ]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_RopeScaling : I32EnumAttr<"RopeScaling", "RoPE frequency scaling", [
    I32EnumAttrCase<"none", 0>, I32EnumAttrCase<"yarn", 1>
  ]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_QKNorm : I32EnumAttr<"QKNorm", "RMSNorm applied to q and k before RoPE", [
    I32EnumAttrCase<"none", 0>,
    I32EnumAttrCase<"per_head", 1>,      // weight [head_dim] (Qwen3)
    I32EnumAttrCase<"full_width", 2>     // weight [heads*head_dim] (OLMoE)
  ]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_RouterScoring : I32EnumAttr<"RouterScoring", "router score function", [
    I32EnumAttrCase<"softmax", 0>, I32EnumAttrCase<"sigmoid", 1>
  ]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_RouterSelection : I32EnumAttr<"RouterSelection", "expert selection rule", [
    I32EnumAttrCase<"greedy", 0>,               // top-k of the scores
    I32EnumAttrCase<"group_limited_greedy", 1>, // groups ranked by their max score (DeepSeek-V2)
    I32EnumAttrCase<"noaux_tc", 2>              // biased scores, groups ranked by top-2 sum (DeepSeek-V3)
  ]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_ExpertActivation : I32EnumAttr<"ExpertActivation", "expert FFN activation", [
    I32EnumAttrCase<"silu_gated", 0>,    // down(silu(gate x) * up x)
    I32EnumAttrCase<"swiglu_clamped", 1> // GPT-OSS: clamp, (up+1) * g*sigmoid(alpha g), biases
  ]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}
def MoE_ExpertLayout : I32EnumAttr<"ExpertLayout", "how expert weights are stored", [
    I32EnumAttrCase<"separate", 0>,  // gate, up [E, I, H]; down [E, H, I]
    I32EnumAttrCase<"fused_interleaved_transposed", 1> // gate_up [E, H, 2I] gate/up by column pairs; down [E, I, H]
  ]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

def MoE_Placement : I32EnumAttr<"Placement", "where a weight lives while the plan runs", [
    I32EnumAttrCase<"gpu_resident", 0>,  // copied to the GPU once
    I32EnumAttrCase<"host_streamed", 1>  // pinned host memory, streamed every step
  ]> {
  let cppNamespace = "::mlir::moe";
  let genSpecializedAttr = 0;
}

def MoE_PlacementAttr : EnumAttr<MoE_Dialect, MoE_Placement, "placement">;
def MoE_RopeStyleAttr : EnumAttr<MoE_Dialect, MoE_RopeStyle, "rope_style">;
def MoE_QKNormAttr : EnumAttr<MoE_Dialect, MoE_QKNorm, "qk_norm">;
def MoE_RouterScoringAttr : EnumAttr<MoE_Dialect, MoE_RouterScoring, "scoring">;
def MoE_RouterSelectionAttr : EnumAttr<MoE_Dialect, MoE_RouterSelection, "selection">;
def MoE_ExpertActivationAttr : EnumAttr<MoE_Dialect, MoE_ExpertActivation, "activation">;
def MoE_ExpertLayoutAttr : EnumAttr<MoE_Dialect, MoE_ExpertLayout, "expert_layout">;

//===----------------------------------------------------------------------===//
// Attributes
//===----------------------------------------------------------------------===//

// A float parameter printed so that it round-trips exactly.
class MoE_F64Parameter<string desc, string default = "">
    : APFloatParameter<desc> {
  let parser = [{ [&]() -> ::mlir::FailureOr<::llvm::APFloat> {
      double value;
      if (::mlir::failed($_parser.parseFloat(value)))
        return ::mlir::failure();
      return ::llvm::APFloat(value);
    }() }];
  let printer = [{ $_printer.printFloat($_self) }];
  let defaultValue = !if(!empty(default), "", "::llvm::APFloat(" # default # ")");
}

def MoE_RopeAttr : MoE_Attr<"Rope", "rope"> {
  let summary = "rotary position embedding";
  let description = [{
    θ_i(p) = p · theta^(−2i/rotary_dim) over the first `rotary_dim` dims of a
    head (the rest pass through). YaRN (`scaling = yarn`) blends the original
    and the 1/factor-interpolated frequency per dimension between the
    correction dims of `beta_fast` and `beta_slow` (floored/ceiled unless
    `truncate = false`). cos and sin are multiplied by `attention_factor`.
  }];
  let parameters = (ins
    EnumParameter<MoE_RopeStyle>:$style,
    MoE_F64Parameter<"base of the frequencies">:$theta,
    "int64_t":$rotary_dim,
    DefaultValuedParameter<"::mlir::moe::RopeScaling", "::mlir::moe::RopeScaling::none">:$scaling,
    MoE_F64Parameter<"YaRN context extension factor", "1.0">:$factor,
    DefaultValuedParameter<"int64_t", "0">:$original_max_position,
    MoE_F64Parameter<"YaRN fast boundary", "32.0">:$beta_fast,
    MoE_F64Parameter<"YaRN slow boundary", "1.0">:$beta_slow,
    DefaultValuedParameter<"bool", "true">:$truncate,
    MoE_F64Parameter<"scale of cos and sin", "1.0">:$attention_factor
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def MoE_ModelAttr : MoE_Attr<"Model", "model"> {
  let summary = "what the whole model is: family, vocabulary, special tokens";
  let parameters = (ins
    StringRefParameter<"HF model_type">:$model_type,
    StringRefParameter<"HF architectures[0]", "\"\"">:$architecture,
    "int64_t":$vocab_size,
    "int64_t":$hidden_size,
    "int64_t":$num_layers,
    DefaultValuedParameter<"int64_t", "0">:$max_position,
    DefaultValuedParameter<"int64_t", "-1">:$bos_token_id,
    StringRefParameter<"routed experts' format as the checkpoint stores "
                       "them (runtime/model/WeightFormat.h)",
                       "\"bf16\"">:$expert_weight_dtype,
    // Last: its comma-separated values would swallow a parameter after it.
    OptionalArrayRefParameter<"int64_t">:$eos_token_ids
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

def MoE_BatchingAttr : MoE_Attr<"Batching", "batching"> {
  let summary = "the planner's module-based batching decision";
  let description = [{
    Chosen by `moe-select-batch-sizes`: B sequences stay resident; attention
    runs over micro-batches of b_a sequences (prefill and decode), experts
    over GEMMs of at most b_e tokens; `prefetch_depth` layers of streamed
    weights may be in flight; `kv_gpu_fraction` of the B sequences keep
    their KV on the GPU, the rest on the host, staged through
    `kv_staging_buffers`, in the format `kv_dtype`
    (`runtime/model/KvFormat.h`); routed experts' weights are held and
    streamed as `weight_dtype` (`runtime/model/WeightFormat.h`); `resident_units` is how many units (modules, or
    single experts) of the greedy residency order stay on the GPU. The
    lengths and budgets it was planned for are kept with it
    (`min_generated_tokens` > 0: generations spread evenly from it up to
    `generated_tokens`). `prompt_lengths` and `generated_lengths`, where
    present, are the job's length distributions (flattened shortest,
    longest, weight triples of bins each spreading evenly over its lengths;
    `runtime/costmodel/Lengths.h`): `prompt_tokens` and `generated_tokens`
    are then their longest. The host-KV sequences share a pool of
    `host_kv_pool_tokens` tokens in pages (0: each holds its whole context).
  }];
  let parameters = (ins
    "int64_t":$resident_batch,
    "int64_t":$attention_micro_batch_prefill,
    "int64_t":$attention_micro_batch_decode,
    "int64_t":$expert_micro_batch,
    "int64_t":$prefetch_depth,
    "int64_t":$kv_staging_buffers,
    MoE_F64Parameter<"ω: share of attention on the CPU">:$cpu_attention_share,
    MoE_F64Parameter<"share of sequences with KV on the GPU">:$kv_gpu_fraction,
    "int64_t":$resident_units,
    "int64_t":$prompt_tokens,
    "int64_t":$generated_tokens,
    "int64_t":$gpu_budget_bytes,
    "int64_t":$host_budget_bytes,
    StringRefParameter<"the KV caches' format: bf16 or fp8",
                       "\"bf16\"">:$kv_dtype,
    StringRefParameter<"routed experts' weight format: bf16, fp8 or mxfp4",
                       "\"bf16\"">:$weight_dtype,
    DefaultValuedParameter<"int64_t", "0">:$min_generated_tokens,
    DefaultValuedParameter<"int64_t", "0">:$host_kv_pool_tokens,
    OptionalParameter<"::mlir::DenseF64ArrayAttr">:$prompt_lengths,
    OptionalParameter<"::mlir::DenseF64ArrayAttr">:$generated_lengths
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

#endif // MOE_DIALECT_TD
