// RUN: moe-opt %s -split-input-file -verify-diagnostics

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module {
  moe.param @q : tensor<12x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  moe.param @o : tensor<8x12xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{num_kv_heads (2) must divide num_heads (3)}}
    %a = moe.attention %x {layer = 0 : i64, num_heads = 3 : i64, num_kv_heads = 2 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @k, o = @o} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module {
  moe.param @q : tensor<8x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  moe.param @o : tensor<8x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{'k' parameter @q has shape [8, 8], expected [4, 8]}}
    %a = moe.attention %x {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @q, v = @k, o = @o} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module {
  moe.param @q : tensor<8x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{'o' references @missing, which is not a moe.param}}
    %a = moe.attention %x {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @k, o = @missing} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module {
  moe.param @q : tensor<8x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{layer 0 computes its own K/V and needs 'k' and 'v'}}
    %a = moe.attention %x {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, o = @q} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module {
  moe.param @q : tensor<8x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{layer 1 reads layer 0's K/V and must not have k/v weights}}
    %a = moe.attention %x {layer = 1 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @k, o = @q, kv_source_layer = 0 : i64} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module {
  moe.param @q : tensor<8x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{kv_source_layer 3 is not an earlier layer than 1}}
    %a = moe.attention %x {layer = 1 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, o = @q, kv_source_layer = 3 : i64} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module {
  moe.param @q : tensor<8x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    %a = moe.attention %x {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @k, o = @q, sliding_window = 8 : i64} : tensor<?x8xf32>
    // expected-error @+1 {{kv_source_layer 0 has a different sliding window}}
    %b = moe.attention %a {layer = 1 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, o = @q, kv_source_layer = 0 : i64} : tensor<?x8xf32>
    return %b : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module {
  moe.param @q : tensor<8x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    %a = moe.attention %x {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @k, o = @q} : tensor<?x8xf32>
    %b = moe.attention %a {layer = 1 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, o = @q, kv_source_layer = 0 : i64} : tensor<?x8xf32>
    // expected-error @+1 {{kv_source_layer 1 itself reads layer 0; it must compute its own K/V}}
    %c = moe.attention %b {layer = 2 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, o = @q, kv_source_layer = 1 : i64} : tensor<?x8xf32>
    return %c : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 8>
module {
  moe.param @q : tensor<8x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{rope rotary_dim (8) exceeds head_dim (4)}}
    %a = moe.attention %x {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @k, o = @q} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module {
  moe.param @q : tensor<8x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{qk_norm = per_head requires exactly the q_norm/k_norm weights}}
    %a = moe.attention %x {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @k, o = @q, qk_norm = #moe<qk_norm per_head>, qk_norm_eps = 1.0e-6 : f64} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

// expected-error @+1 {{rope rotary_dim must be positive and even, got 3}}
#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 3>

// -----

// expected-error @+1 {{yarn needs original_max_position > 0}}
#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4, scaling = yarn, factor = 4.0>

// -----

#rope = #moe.rope<style = interleaved, theta = 1.0e4, rotary_dim = 2>
module {
  moe.param @w : tensor<8x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{q_lora_rank 4 needs q_a, q_a_norm and q_b (and no q)}}
    %a = moe.mla_attention %x {layer = 0 : i64, num_heads = 2 : i64, q_lora_rank = 4 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64, qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, rope = #rope, scale = 0.4 : f64, norm_eps = 1.0e-6 : f64, q = @w, kv_a = @w, kv_a_norm = @w, kv_b = @w, o = @w} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

#rope = #moe.rope<style = interleaved, theta = 1.0e4, rotary_dim = 2>
module {
  moe.param @q : tensor<12x8xbf16>
  moe.param @kv_a : tensor<6x8xbf16>
  moe.param @kv_a_norm : tensor<4xbf16>
  moe.param @kv_b : tensor<12x4xbf16>
  moe.param @o : tensor<8x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{'kv_b' parameter @kv_b has shape [12, 4], expected [16, 4]}}
    %a = moe.mla_attention %x {layer = 0 : i64, num_heads = 2 : i64, q_lora_rank = 0 : i64, kv_lora_rank = 4 : i64, qk_nope_head_dim = 4 : i64, qk_rope_head_dim = 2 : i64, v_head_dim = 4 : i64, rope = #rope, scale = 0.4 : f64, norm_eps = 1.0e-6 : f64, q = @q, kv_a = @kv_a, kv_a_norm = @kv_a_norm, kv_b = @kv_b, o = @o} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

module {
  moe.param @qkv : tensor<24x8xbf16>
  moe.param @w : tensor<8x8xbf16>
  moe.param @n : tensor<4xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{'norm' parameter @n has shape [4], expected [8]}}
    %a = moe.lightning_attention %x {layer = 0 : i64, num_heads = 2 : i64, head_dim = 4 : i64, decay_scale = 0.5 : f64, block_size = 256 : i64, norm_eps = 1.0e-6 : f64, qkv = @qkv, gate = @w, norm = @n, out = @w} : tensor<?x8xf32>
    return %a : tensor<?x8xf32>
  }
}

// -----

module {
  moe.param @r : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) {
    // expected-error @+1 {{top_k (5) exceeds num_experts (4)}}
    %w, %i = moe.router %x {layer = 0 : i64, num_experts = 4 : i64, top_k = 5 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection greedy>, normalize = true, weight = @r} : tensor<?x8xf32> -> tensor<?x5xf32>, tensor<?x5xi32>
    return
  }
}

// -----

module {
  moe.param @r : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) {
    // expected-error @+1 {{n_group (3) must divide num_experts (4)}}
    %w, %i = moe.router %x {layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection group_limited_greedy>, n_group = 3 : i64, topk_group = 1 : i64, normalize = true, weight = @r} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    return
  }
}

// -----

module {
  moe.param @r : tensor<8x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) {
    // expected-error @+1 {{top_k (3) exceeds the 2 experts in the topk_group kept groups}}
    %w, %i = moe.router %x {layer = 0 : i64, num_experts = 8 : i64, top_k = 3 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection group_limited_greedy>, n_group = 4 : i64, topk_group = 1 : i64, normalize = true, weight = @r} : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
    return
  }
}

// -----

module {
  moe.param @r : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) {
    // expected-error @+1 {{noaux_tc selection needs a correction_bias}}
    %w, %i = moe.router %x {layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring sigmoid>, selection = #moe<selection noaux_tc>, n_group = 2 : i64, topk_group = 1 : i64, normalize = true, weight = @r} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    return
  }
}

// -----

module {
  moe.param @r : tensor<4x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) {
    // expected-error @+1 {{results must have top_k (2) columns, got 3}}
    %w, %i = moe.router %x {layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection greedy>, normalize = true, weight = @r} : tensor<?x8xf32> -> tensor<?x3xf32>, tensor<?x3xi32>
    return
  }
}

// -----

module {
  moe.param @r : tensor<4x8xbf16>
  moe.param @down : tensor<4x8x6xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    %w, %i = moe.router %x {layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection greedy>, normalize = true, weight = @r} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    // expected-error @+1 {{the separate layout needs 'gate' and 'up'}}
    %e = moe.experts %x, %w, %i {layer = 0 : i64, num_experts = 4 : i64, intermediate_size = 6 : i64, activation = #moe<activation silu_gated>, down = @down} : tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x8xf32>
    return %e : tensor<?x8xf32>
  }
}

// -----

module {
  moe.param @r : tensor<4x8xbf16>
  moe.param @g : tensor<4x6x8xbf16>
  moe.param @down : tensor<4x8x6xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    %w, %i = moe.router %x {layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection greedy>, normalize = true, weight = @r} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    // expected-error @+1 {{num_experts (8) differs from its router's (4)}}
    %e = moe.experts %x, %w, %i {layer = 0 : i64, num_experts = 8 : i64, intermediate_size = 6 : i64, activation = #moe<activation silu_gated>, gate = @g, up = @g, down = @down} : tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x8xf32>
    return %e : tensor<?x8xf32>
  }
}

// -----

module {
  moe.param @r : tensor<4x8xbf16>
  moe.param @g : tensor<4x6x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    %w, %i = moe.router %x {layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection greedy>, normalize = true, weight = @r} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    // expected-error @+1 {{'down' parameter @g has shape [4, 6, 8], expected [4, 8, 6]}}
    %e = moe.experts %x, %w, %i {layer = 0 : i64, num_experts = 4 : i64, intermediate_size = 6 : i64, activation = #moe<activation silu_gated>, gate = @g, up = @g, down = @g} : tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x8xf32>
    return %e : tensor<?x8xf32>
  }
}

// -----

module {
  moe.param @r : tensor<4x8xbf16>
  moe.param @g : tensor<4x6x8xbf16>
  moe.param @down : tensor<4x8x6xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    %w, %i = moe.router %x {layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection greedy>, normalize = true, weight = @r} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    // expected-error @+1 {{swiglu_limit and swiglu_alpha go with the swiglu_clamped activation, and only with it}}
    %e = moe.experts %x, %w, %i {layer = 0 : i64, num_experts = 4 : i64, intermediate_size = 6 : i64, activation = #moe<activation silu_gated>, swiglu_limit = 7.0 : f64, swiglu_alpha = 1.702 : f64, gate = @g, up = @g, down = @down} : tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x8xf32>
    return %e : tensor<?x8xf32>
  }
}

// -----

module {
  moe.param @g : tensor<6x8xbf16>
  moe.param @d : tensor<8x6xbf16>
  moe.param @bad_gate : tensor<8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{'output_gate' parameter @bad_gate has shape [8], expected [1, 8]}}
    %y = moe.mlp %x {layer = 0 : i64, intermediate_size = 6 : i64, gate = @g, up = @g, down = @d, output_gate = @bad_gate, shared_experts} : tensor<?x8xf32>
    return %y : tensor<?x8xf32>
  }
}

// -----

module {
  moe.param @n : tensor<4xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{'weight' parameter @n has shape [4], expected [8]}}
    %y = moe.rms_norm %x, @n {eps = 1.0e-6 : f64} : tensor<?x8xf32>
    return %y : tensor<?x8xf32>
  }
}

// -----

module {
  moe.param @table : tensor<16x4xbf16>
  func.func @f(%ids: tensor<?xi32>) -> tensor<?x8xf32> {
    // expected-error @+1 {{'table' parameter @table has shape [16, 4], expected [16, 8]}}
    %x = moe.embedding %ids, @table : tensor<?xi32> -> tensor<?x8xf32>
    return %x : tensor<?x8xf32>
  }
}

// -----

module {
  moe.param @head : tensor<16x8xbf16>
  func.func @f(%x: tensor<?x8xf32>) -> tensor<?x32xf32> {
    // expected-error @+1 {{'weight' parameter @head has shape [16, 8], expected [32, 8]}}
    %y = moe.lm_head %x, @head : tensor<?x8xf32> -> tensor<?x32xf32>
    return %y : tensor<?x32xf32>
  }
}

// -----

// expected-error @+1 {{'moe.param' op a stacked expert parameter ('{e}' in hf_name) needs the expert index as its leading dimension}}
moe.param @e : tensor<8xbf16> {hf_name = "experts.{e}.w1.weight"}

// -----

// expected-error @+1 {{'moe.model' belongs on a builtin.module}}
func.func @f() attributes {moe.model = #moe.model<model_type = "x", vocab_size = 1, hidden_size = 1, num_layers = 1>} {
  return
}

// -----

// expected-error @+1 {{#moe.model needs positive vocab_size, hidden_size and num_layers}}
module attributes {moe.model = #moe.model<model_type = "x", vocab_size = 0, hidden_size = 1, num_layers = 1>} {
}

// -----

// expected-error @+1 {{kv_dtype must be bf16 or fp8, not 'int4'}}
module attributes {moe.batching = #moe.batching<resident_batch = 1, attention_micro_batch_prefill = 1, attention_micro_batch_decode = 1, expert_micro_batch = 1, prefetch_depth = 1, kv_staging_buffers = 1, cpu_attention_share = 0.0, kv_gpu_fraction = 1.0, resident_units = 0, prompt_tokens = 8, generated_tokens = 8, gpu_budget_bytes = 1, host_budget_bytes = 1, kv_dtype = "int4">} {}

// -----

// expected-error @+1 {{weight_dtype must be bf16, fp8 or mxfp4, not 'int4'}}
module attributes {moe.batching = #moe.batching<resident_batch = 1, attention_micro_batch_prefill = 1, attention_micro_batch_decode = 1, expert_micro_batch = 1, prefetch_depth = 1, kv_staging_buffers = 1, cpu_attention_share = 0.0, kv_gpu_fraction = 1.0, resident_units = 0, prompt_tokens = 8, generated_tokens = 8, gpu_budget_bytes = 1, host_budget_bytes = 1, weight_dtype = "int4">} {}

// -----

// expected-error @+1 {{prompt_lengths reach 6 tokens, not the prompt_tokens of 8}}
module attributes {moe.batching = #moe.batching<resident_batch = 1, attention_micro_batch_prefill = 1, attention_micro_batch_decode = 1, expert_micro_batch = 1, prefetch_depth = 1, kv_staging_buffers = 1, cpu_attention_share = 0.0, kv_gpu_fraction = 1.0, resident_units = 0, prompt_tokens = 8, generated_tokens = 8, gpu_budget_bytes = 1, host_budget_bytes = 1, prompt_lengths = [2.0, 6.0, 1.0]>} {}

// -----

// expected-error @+1 {{generated_lengths: length bin 0 ([0, 8], weight 0) must hold lengths of at least 0, shortest first, with a positive weight}}
module attributes {moe.batching = #moe.batching<resident_batch = 1, attention_micro_batch_prefill = 1, attention_micro_batch_decode = 1, expert_micro_batch = 1, prefetch_depth = 1, kv_staging_buffers = 1, cpu_attention_share = 0.0, kv_gpu_fraction = 1.0, resident_units = 0, prompt_tokens = 8, generated_tokens = 8, gpu_budget_bytes = 1, host_budget_bytes = 1, generated_lengths = [0.0, 8.0, 0.0]>} {}

// -----

// expected-error @+1 {{prompt_lengths: 2 values are no (shortest, longest, weight) triples}}
module attributes {moe.batching = #moe.batching<resident_batch = 1, attention_micro_batch_prefill = 1, attention_micro_batch_decode = 1, expert_micro_batch = 1, prefetch_depth = 1, kv_staging_buffers = 1, cpu_attention_share = 0.0, kv_gpu_fraction = 1.0, resident_units = 0, prompt_tokens = 8, generated_tokens = 8, gpu_budget_bytes = 1, host_budget_bytes = 1, prompt_lengths = [8.0, 8.0]>} {}
