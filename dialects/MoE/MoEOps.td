//===- MoEOps.td - ops of the moe dialect ---------------------*- tablegen -*-===//

#ifndef MOE_OPS_TD
#define MOE_OPS_TD

include "dialects/MoE/MoEDialect.td"
include "dialects/MoE/MoEInterfaces.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

class MoE_Op<string mnemonic, list<Trait> traits = []>
    : Op<MoE_Dialect, mnemonic, traits>;

// A module op: pure, references parameters by symbol, reports its cost.
class MoE_ModuleOp<string mnemonic, list<Trait> traits = []>
    : MoE_Op<mnemonic, !listconcat(traits, [Pure,
        DeclareOpInterfaceMethods<SymbolUserOpInterface>,
        DeclareOpInterfaceMethods<MoE_ModuleCostInterface>])>;

// Token activations: one row of `hidden` values per token.
def MoE_Activations : 2DTensorOf<[F32]>;
def MoE_TokenIds : 1DTensorOf<[I32]>;
defvar MoE_ParamRef = FlatSymbolRefAttr;
def MoE_LayerIndex : ConfinedAttr<I64Attr, [IntNonNegative]>;
def MoE_PositiveI64 : ConfinedAttr<I64Attr, [IntPositive]>;

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

def MoE_ParamOp : MoE_Op<"param", [Symbol]> {
  let summary = "a weight tensor of the model";
  let description = [{
    Declares one weight in the checkpoint's shape and dtype. `hf_name` is the
    tensor's name in the HuggingFace safetensors; stacked expert weights use
    `{e}` for the expert index (one tensor per expert on disk, one parameter
    here, leading dimension E). `placement`, set by the planner, says whether
    the weight stays on the GPU or streams from pinned host memory; a
    streamed stacked expert weight may keep its first `gpu_experts` experts
    on the GPU.

    ```mlir
    moe.param @l0.experts.gate : tensor<8x14336x4096xbf16>
        {hf_name = "model.layers.0.block_sparse_moe.experts.{e}.w1.weight"}
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<AnyStaticShapeTensor>:$type,
                       OptionalAttr<StrAttr>:$hf_name,
                       OptionalAttr<MoE_PlacementAttr>:$placement,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntNonNegative]>>:$gpu_experts);
  let assemblyFormat = "$sym_name `:` $type attr-dict";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    ::mlir::RankedTensorType getTensorType() {
      return ::llvm::cast<::mlir::RankedTensorType>(getType());
    }
    int64_t getNumElements() { return getTensorType().getNumElements(); }
    /// Bytes at the declared element type.
    int64_t getNumBytes();
  }];
}

//===----------------------------------------------------------------------===//
// Modules
//===----------------------------------------------------------------------===//

def MoE_EmbeddingOp : MoE_ModuleOp<"embedding"> {
  let summary = "token embedding lookup";
  let arguments = (ins MoE_TokenIds:$ids, MoE_ParamRef:$table);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = "$ids `,` $table attr-dict `:` type($ids) `->` type($result)";
}

def MoE_RMSNormOp : MoE_ModuleOp<"rms_norm", [SameOperandsAndResultType]> {
  let summary = "RMSNorm: w ⊙ x / sqrt(mean(x²) + eps), in fp32";
  let arguments = (ins MoE_Activations:$input, MoE_ParamRef:$weight,
                       F64Attr:$eps, OptionalAttr<MoE_LayerIndex>:$layer);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = "$input `,` $weight attr-dict `:` type($result)";
}

def MoE_AttentionOp : MoE_ModuleOp<"attention", [SameOperandsAndResultType]> {
  let summary = "causal softmax attention with GQA/MHA and RoPE";
  let description = [{
    q = W_q x (+b), k = W_k x (+b), v = W_v x (+b), optional QK RMSNorm, then
    RoPE on q and k; query head h reads KV head ⌊h / (heads / kv_heads)⌋;
    scores are scaled by `scale`. With `sliding_window = w` a token attends to
    itself and the w − 1 tokens before it. With `sinks`, each head's learned
    logit joins the softmax denominator (GPT-OSS). A layer whose
    `kv_source_layer` is an earlier layer has no k/v weights and reads that
    layer's K/V (cross-layer KV sharing).
  }];
  let arguments = (ins MoE_Activations:$input,
      MoE_LayerIndex:$layer,
      MoE_PositiveI64:$num_heads, MoE_PositiveI64:$num_kv_heads,
      MoE_PositiveI64:$head_dim, MoE_RopeAttr:$rope, F64Attr:$scale,
      MoE_ParamRef:$q, OptionalAttr<MoE_ParamRef>:$k,
      OptionalAttr<MoE_ParamRef>:$v, MoE_ParamRef:$o,
      OptionalAttr<MoE_ParamRef>:$q_bias, OptionalAttr<MoE_ParamRef>:$k_bias,
      OptionalAttr<MoE_ParamRef>:$v_bias, OptionalAttr<MoE_ParamRef>:$o_bias,
      DefaultValuedAttr<MoE_QKNormAttr, "::mlir::moe::QKNorm::none">:$qk_norm,
      OptionalAttr<MoE_ParamRef>:$q_norm, OptionalAttr<MoE_ParamRef>:$k_norm,
      OptionalAttr<F64Attr>:$qk_norm_eps,
      OptionalAttr<MoE_PositiveI64>:$sliding_window,
      OptionalAttr<MoE_ParamRef>:$sinks,
      OptionalAttr<MoE_LayerIndex>:$kv_source_layer);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The layer whose K/V this layer reads (itself unless it shares).
    int64_t getKvLayer() { return getKvSourceLayer().value_or(getLayer()); }
    bool sharesKv() { return getKvLayer() != static_cast<int64_t>(getLayer()); }
  }];
}

def MoE_MLAttentionOp : MoE_ModuleOp<"mla_attention", [SameOperandsAndResultType]> {
  let summary = "multi-head latent attention (DeepSeek-V2/V3)";
  let description = [{
    q from `q` (q_lora_rank = 0) or `q_b(RMSNorm(q_a x))`; per head
    [nope | rope] dims. `kv_a x` = [latent (kv_lora_rank) | k_pe (rope dim)];
    the latent is RMSNormed and expanded by `kv_b` into per-head
    [k_nope | v]. k_pe is shared by all heads. The cache holds only the
    normed latent and k_pe; decode absorbs `kv_b` into q and the output.
  }];
  let arguments = (ins MoE_Activations:$input,
      MoE_LayerIndex:$layer, MoE_PositiveI64:$num_heads,
      ConfinedAttr<I64Attr, [IntNonNegative]>:$q_lora_rank,
      MoE_PositiveI64:$kv_lora_rank, MoE_PositiveI64:$qk_nope_head_dim,
      MoE_PositiveI64:$qk_rope_head_dim, MoE_PositiveI64:$v_head_dim,
      MoE_RopeAttr:$rope, F64Attr:$scale, F64Attr:$norm_eps,
      OptionalAttr<MoE_ParamRef>:$q, OptionalAttr<MoE_ParamRef>:$q_a,
      OptionalAttr<MoE_ParamRef>:$q_a_norm, OptionalAttr<MoE_ParamRef>:$q_b,
      MoE_ParamRef:$kv_a, MoE_ParamRef:$kv_a_norm, MoE_ParamRef:$kv_b,
      MoE_ParamRef:$o);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def MoE_LightningAttentionOp
    : MoE_ModuleOp<"lightning_attention", [SameOperandsAndResultType]> {
  let summary = "lightning (linear) attention with per-head decay (MiniMax)";
  let description = [{
    [q|k|v] per head = SiLU(x W_qkv) (per-head interleaved layout);
    o_t = Σ_{s≤t} exp(−λ_h (t−s)) (q_t·k_s) v_s with λ_h = 2^(−8h/heads) ·
    `decay_scale`; y = W_out(σ(x W_gate) ⊙ RMSNorm(concat o)). Prefill runs
    in blocks of `block_size`; decode keeps an O(1) state per sequence.
  }];
  let arguments = (ins MoE_Activations:$input,
      MoE_LayerIndex:$layer, MoE_PositiveI64:$num_heads,
      MoE_PositiveI64:$head_dim, F64Attr:$decay_scale,
      MoE_PositiveI64:$block_size, F64Attr:$norm_eps,
      MoE_ParamRef:$qkv, MoE_ParamRef:$gate, MoE_ParamRef:$norm,
      MoE_ParamRef:$out);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def MoE_RouterOp : MoE_ModuleOp<"router"> {
  let summary = "expert selection: top-k experts and their combine weights";
  let description = [{
    z = W x (+ bias). Scores s = softmax(z) or sigmoid(z). Selection picks
    `top_k` experts: `greedy` over all, `group_limited_greedy` within the
    `topk_group` best of `n_group` groups ranked by their max score,
    `noaux_tc` by s + correction_bias within groups ranked by the sum of
    their two best biased scores. Weights are the unbiased scores of the
    selection, divided by their sum when `normalize`, times `scaling`.
  }];
  let arguments = (ins MoE_Activations:$input,
      MoE_LayerIndex:$layer, MoE_PositiveI64:$num_experts,
      MoE_PositiveI64:$top_k, MoE_RouterScoringAttr:$scoring,
      MoE_RouterSelectionAttr:$selection,
      DefaultValuedAttr<MoE_PositiveI64, "1">:$n_group,
      DefaultValuedAttr<MoE_PositiveI64, "1">:$topk_group,
      BoolAttr:$normalize, DefaultValuedAttr<F64Attr, "1.0">:$scaling,
      MoE_ParamRef:$weight, OptionalAttr<MoE_ParamRef>:$bias,
      OptionalAttr<MoE_ParamRef>:$correction_bias);
  let results = (outs 2DTensorOf<[F32]>:$weights, 2DTensorOf<[I32]>:$indices);
  let assemblyFormat =
      "$input attr-dict `:` type($input) `->` type($weights) `,` type($indices)";
  let hasVerifier = 1;
}

def MoE_ExpertsOp : MoE_ModuleOp<"experts"> {
  let summary = "routed experts: Σ_k w_k · FFN_{idx_k}(x)";
  let arguments = (ins MoE_Activations:$input, 2DTensorOf<[F32]>:$weights,
      2DTensorOf<[I32]>:$indices,
      MoE_LayerIndex:$layer, MoE_PositiveI64:$num_experts,
      MoE_PositiveI64:$intermediate_size, MoE_ExpertActivationAttr:$activation,
      DefaultValuedAttr<MoE_ExpertLayoutAttr, "::mlir::moe::ExpertLayout::separate">:$expert_layout,
      OptionalAttr<F64Attr>:$swiglu_limit, OptionalAttr<F64Attr>:$swiglu_alpha,
      OptionalAttr<MoE_ParamRef>:$gate, OptionalAttr<MoE_ParamRef>:$up,
      OptionalAttr<MoE_ParamRef>:$gate_up, MoE_ParamRef:$down,
      OptionalAttr<MoE_ParamRef>:$gate_up_bias,
      OptionalAttr<MoE_ParamRef>:$down_bias);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = "$input `,` $weights `,` $indices attr-dict `:` "
                       "type($input) `,` type($weights) `,` type($indices) `->` type($result)";
  let hasVerifier = 1;
}

def MoE_MLPOp : MoE_ModuleOp<"mlp", [SameOperandsAndResultType]> {
  let summary = "gated SiLU FFN: a dense layer's MLP or the shared experts";
  let description = [{
    y = down(silu(gate x) ⊙ up x). With `output_gate` (Qwen2-MoE's shared
    expert gate, [1, hidden]) y is scaled by sigmoid(output_gate · x).
    `shared_experts` marks the always-on experts of an MoE layer.
  }];
  let arguments = (ins MoE_Activations:$input,
      MoE_LayerIndex:$layer, MoE_PositiveI64:$intermediate_size,
      MoE_ParamRef:$gate, MoE_ParamRef:$up, MoE_ParamRef:$down,
      OptionalAttr<MoE_ParamRef>:$output_gate, UnitAttr:$shared_experts);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def MoE_ResidualOp : MoE_Op<"residual", [Pure, SameOperandsAndResultType]> {
  let summary = "skip_scale · skip + update_scale · update";
  let description = [{
    The residual connection. Pre-norm models use scales 1 and 1; MiniMax's
    DeepNorm-style post-norm residual passes the *normed* input as `skip`
    with skip_scale = α.
  }];
  let arguments = (ins MoE_Activations:$skip, MoE_Activations:$update,
      DefaultValuedAttr<F64Attr, "1.0">:$skip_scale,
      DefaultValuedAttr<F64Attr, "1.0">:$update_scale);
  let results = (outs MoE_Activations:$result);
  let assemblyFormat = "$skip `,` $update attr-dict `:` type($result)";
}

def MoE_LMHeadOp : MoE_ModuleOp<"lm_head"> {
  let summary = "logits = x Wᵀ";
  let arguments = (ins MoE_Activations:$input, MoE_ParamRef:$weight);
  let results = (outs MoE_Activations:$logits);
  let assemblyFormat = "$input `,` $weight attr-dict `:` type($input) `->` type($logits)";
}

#endif // MOE_OPS_TD
