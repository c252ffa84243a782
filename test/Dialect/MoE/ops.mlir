// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s

// Every op of the dialect, with each optional feature used at least once.

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
#yarn = #moe.rope<style = interleaved, theta = 1.0e4, rotary_dim = 2, scaling = yarn, factor = 40.0, original_max_position = 4096, beta_fast = 32.0, beta_slow = 1.0, attention_factor = 1.0>

// CHECK-DAG: #[[YARN:.+]] = #moe.rope<style = interleaved, theta = 1.000000e+04, rotary_dim = 2, scaling = yarn, factor = 4.000000e+01, original_max_position = 4096>
// CHECK-DAG: #[[ROPE:.+]] = #moe.rope<style = neox, theta = 1.000000e+04, rotary_dim = 4>
// CHECK-DAG: #[[MODEL:.+]] = #moe.model<model_type = "test", vocab_size = 16, hidden_size = 8, num_layers = 4, eos_token_ids = 2, 3>
// CHECK: module attributes {moe.model = #[[MODEL]]}
module attributes {moe.model = #moe.model<model_type = "test", vocab_size = 16, hidden_size = 8, num_layers = 4, eos_token_ids = 2, 3>} {
  // CHECK: moe.param @embed : tensor<16x8xbf16> {hf_name = "model.embed_tokens.weight"}
  moe.param @embed : tensor<16x8xbf16> {hf_name = "model.embed_tokens.weight"}
  moe.param @norm : tensor<8xbf16>
  moe.param @q : tensor<8x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  moe.param @v : tensor<4x8xbf16>
  moe.param @o : tensor<8x8xbf16>
  moe.param @q_bias : tensor<8xbf16>
  moe.param @o_bias : tensor<8xbf16>
  moe.param @head_norm : tensor<4xbf16>
  moe.param @sinks : tensor<2xf32>
  moe.param @mla_q : tensor<12x8xbf16>
  moe.param @mla_q_a : tensor<4x8xbf16>
  moe.param @mla_q_a_norm : tensor<4xbf16>
  moe.param @mla_q_b : tensor<12x4xbf16>
  moe.param @mla_kv_a : tensor<6x8xbf16>
  moe.param @mla_kv_a_norm : tensor<4xbf16>
  moe.param @mla_kv_b : tensor<16x4xbf16>
  moe.param @qkv : tensor<24x8xbf16>
  moe.param @gate8 : tensor<8x8xbf16>
  moe.param @norm8 : tensor<8xbf16>
  moe.param @router : tensor<4x8xbf16>
  moe.param @router_bias : tensor<4xf32>
  // CHECK: moe.param @experts.gate : tensor<4x6x8xbf16> {hf_name = "model.layers.0.mlp.experts.{e}.gate_proj.weight"}
  moe.param @experts.gate : tensor<4x6x8xbf16> {hf_name = "model.layers.0.mlp.experts.{e}.gate_proj.weight"}
  moe.param @experts.up : tensor<4x6x8xbf16>
  moe.param @experts.down : tensor<4x8x6xbf16>
  moe.param @fused.gate_up : tensor<4x8x12xbf16>
  moe.param @fused.gate_up_bias : tensor<4x12xbf16>
  moe.param @fused.down : tensor<4x6x8xbf16>
  moe.param @fused.down_bias : tensor<4x8xbf16>
  moe.param @mlp.gate : tensor<6x8xbf16>
  moe.param @mlp.up : tensor<6x8xbf16>
  moe.param @mlp.down : tensor<8x6xbf16>
  moe.param @mlp.gate_logit : tensor<1x8xbf16>
  moe.param @lm_head : tensor<16x8xbf16>

  // CHECK-LABEL: func.func @forward
  func.func @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    // CHECK: %[[X:.+]] = moe.embedding %{{.+}}, @embed : tensor<?xi32> -> tensor<?x8xf32>
    %x = moe.embedding %ids, @embed : tensor<?xi32> -> tensor<?x8xf32>
    // CHECK: moe.rms_norm %[[X]], @norm {eps = 9.9999999999999995E-7 : f64, layer = 0 : i64} : tensor<?x8xf32>
    %h = moe.rms_norm %x, @norm {eps = 1.0e-6 : f64, layer = 0 : i64} : tensor<?x8xf32>
    // CHECK: moe.attention %{{.+}} {head_dim = 4 : i64, k = @k, layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, o = @o, o_bias = @o_bias, q = @q, q_bias = @q_bias, rope = #[[ROPE]], scale = 5.000000e-01 : f64, sinks = @sinks, sliding_window = 128 : i64, v = @v}
    %a0 = moe.attention %h {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @v, o = @o, q_bias = @q_bias, o_bias = @o_bias, sinks = @sinks, sliding_window = 128 : i64} : tensor<?x8xf32>
    // CHECK: moe.attention %{{.+}} {head_dim = 4 : i64, k = @k, k_norm = @head_norm, layer = 1 : i64, {{.*}}qk_norm = #moe<qk_norm per_head>, qk_norm_eps = 9.9999999999999995E-7 : f64
    %a1 = moe.attention %h {layer = 1 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @v, o = @o, qk_norm = #moe<qk_norm per_head>, q_norm = @head_norm, k_norm = @head_norm, qk_norm_eps = 1.0e-6 : f64} : tensor<?x8xf32>
    // CHECK: moe.attention %{{.+}} {head_dim = 4 : i64, kv_source_layer = 1 : i64, layer = 2 : i64
    %a2 = moe.attention %h {layer = 2 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, o = @o, kv_source_layer = 1 : i64} : tensor<?x8xf32>
    // CHECK: moe.mla_attention %{{.+}} {{{.*}}q = @mla_q, q_lora_rank = 0 : i64, qk_nope_head_dim = 4 : i64, qk_rope_head_dim = 2 : i64, rope = #[[YARN]]
    %m0 = moe.mla_attention %h {layer = 0 : i64, num_heads = 2 : i64, q_lora_rank = 0 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64, qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, rope = #yarn, scale = 0.4 : f64, norm_eps = 1.0e-6 : f64, q = @mla_q, kv_a = @mla_kv_a, kv_a_norm = @mla_kv_a_norm, kv_b = @mla_kv_b, o = @o} : tensor<?x8xf32>
    // CHECK: moe.mla_attention %{{.+}} {{{.*}}q_a = @mla_q_a, q_a_norm = @mla_q_a_norm, q_b = @mla_q_b, q_lora_rank = 4 : i64
    %m1 = moe.mla_attention %h {layer = 1 : i64, num_heads = 2 : i64, q_lora_rank = 4 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64, qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, rope = #yarn, scale = 0.4 : f64, norm_eps = 1.0e-6 : f64, q_a = @mla_q_a, q_a_norm = @mla_q_a_norm, q_b = @mla_q_b, kv_a = @mla_kv_a, kv_a_norm = @mla_kv_a_norm, kv_b = @mla_kv_b, o = @o} : tensor<?x8xf32>
    // CHECK: moe.lightning_attention %{{.+}} {block_size = 256 : i64, decay_scale = 5.000000e-01 : f64, gate = @gate8, head_dim = 4 : i64, layer = 3 : i64, norm = @norm8, norm_eps = 9.9999999999999995E-7 : f64, num_heads = 2 : i64, out = @o, qkv = @qkv}
    %l = moe.lightning_attention %h {layer = 3 : i64, num_heads = 2 : i64, head_dim = 4 : i64, decay_scale = 0.5 : f64, block_size = 256 : i64, norm_eps = 1.0e-6 : f64, qkv = @qkv, gate = @gate8, norm = @norm8, out = @o} : tensor<?x8xf32>
    // CHECK: moe.residual %{{.+}}, %{{.+}} {skip_scale = 3.500000e+00 : f64} : tensor<?x8xf32>
    %r = moe.residual %h, %l {skip_scale = 3.5 : f64} : tensor<?x8xf32>
    // CHECK: %{{.+}}, %{{.+}} = moe.router %{{.+}} {layer = 0 : i64, n_group = 2 : i64, normalize = false, num_experts = 4 : i64, scaling = 1.600000e+01 : f64, scoring = #moe<scoring softmax>, selection = #moe<selection group_limited_greedy>, top_k = 2 : i64, weight = @router} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    %w, %i = moe.router %r {layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection group_limited_greedy>, n_group = 2 : i64, topk_group = 1 : i64, normalize = false, scaling = 16.0 : f64, weight = @router} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    // CHECK: moe.router %{{.+}} {correction_bias = @router_bias, {{.*}}scoring = #moe<scoring sigmoid>, selection = #moe<selection noaux_tc>
    %w3, %i3 = moe.router %r {layer = 1 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring sigmoid>, selection = #moe<selection noaux_tc>, n_group = 2 : i64, topk_group = 1 : i64, normalize = true, scaling = 2.5 : f64, weight = @router, correction_bias = @router_bias} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    // CHECK: moe.experts %{{.+}} {activation = #moe<activation silu_gated>, down = @experts.down, gate = @experts.gate, intermediate_size = 6 : i64, layer = 0 : i64, num_experts = 4 : i64, up = @experts.up}
    %e = moe.experts %r, %w, %i {layer = 0 : i64, num_experts = 4 : i64, intermediate_size = 6 : i64, activation = #moe<activation silu_gated>, gate = @experts.gate, up = @experts.up, down = @experts.down} : tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x8xf32>
    // CHECK: moe.experts %{{.+}} {activation = #moe<activation swiglu_clamped>, {{.*}}expert_layout = #moe<expert_layout fused_interleaved_transposed>, gate_up = @fused.gate_up, gate_up_bias = @fused.gate_up_bias, {{.*}}swiglu_alpha = 1.702000e+00 : f64, swiglu_limit = 7.000000e+00 : f64}
    %f = moe.experts %r, %w3, %i3 {layer = 1 : i64, num_experts = 4 : i64, intermediate_size = 6 : i64, activation = #moe<activation swiglu_clamped>, expert_layout = #moe<expert_layout fused_interleaved_transposed>, swiglu_limit = 7.0 : f64, swiglu_alpha = 1.702 : f64, gate_up = @fused.gate_up, gate_up_bias = @fused.gate_up_bias, down = @fused.down, down_bias = @fused.down_bias} : tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x8xf32>
    // CHECK: moe.mlp %{{.+}} {down = @mlp.down, gate = @mlp.gate, intermediate_size = 6 : i64, layer = 0 : i64, output_gate = @mlp.gate_logit, shared_experts, up = @mlp.up}
    %s = moe.mlp %r {layer = 0 : i64, intermediate_size = 6 : i64, gate = @mlp.gate, up = @mlp.up, down = @mlp.down, output_gate = @mlp.gate_logit, shared_experts} : tensor<?x8xf32>
    %y = moe.residual %e, %s : tensor<?x8xf32>
    // CHECK: moe.lm_head %{{.+}}, @lm_head : tensor<?x8xf32> -> tensor<?x16xf32>
    %logits = moe.lm_head %y, @lm_head : tensor<?x8xf32> -> tensor<?x16xf32>
    return %logits : tensor<?x16xf32>
  }
}
