// RUN: moe-opt %s --moe-print-summary -o /dev/null | FileCheck %s
// RUN: moe-opt %s --moe-print-summary="kv-dtype=fp8" -o /dev/null | FileCheck %s --check-prefix=FP8
// RUN: moe-opt %s --moe-print-summary="json=true" -o /dev/null | FileCheck %s --check-prefix=JSON
// RUN: moe-opt %s --moe-print-summary | FileCheck %s --check-prefix=IR
// RUN: echo 'module {}' | not moe-opt --moe-print-summary 2>&1 | FileCheck %s --check-prefix=NOMODEL

// One layer, 4 experts of which a token reads 2; the embedding is tied to
// the LM head and counted once.
#rope = #moe.rope<style = neox, theta = 1.0e4, rotary_dim = 4>
module attributes {moe.model = #moe.model<model_type = "test", vocab_size = 16, hidden_size = 8, num_layers = 1>} {
  moe.param @embed : tensor<16x8xbf16>
  moe.param @norm : tensor<8xbf16>
  moe.param @q : tensor<8x8xbf16>
  moe.param @k : tensor<4x8xbf16>
  moe.param @router : tensor<4x8xbf16>
  moe.param @gate : tensor<4x6x8xbf16>
  moe.param @down : tensor<4x8x6xbf16>
  func.func @forward(%ids: tensor<?xi32>) -> tensor<?x16xf32> {
    %x = moe.embedding %ids, @embed : tensor<?xi32> -> tensor<?x8xf32>
    %h = moe.rms_norm %x, @norm {eps = 1.0e-6 : f64, layer = 0 : i64} : tensor<?x8xf32>
    %a = moe.attention %h {layer = 0 : i64, num_heads = 2 : i64, num_kv_heads = 1 : i64, head_dim = 4 : i64, rope = #rope, scale = 0.5 : f64, q = @q, k = @k, v = @k, o = @q} : tensor<?x8xf32>
    %w, %i = moe.router %a {layer = 0 : i64, num_experts = 4 : i64, top_k = 2 : i64, scoring = #moe<scoring softmax>, selection = #moe<selection greedy>, normalize = true, weight = @router} : tensor<?x8xf32> -> tensor<?x2xf32>, tensor<?x2xi32>
    %e = moe.experts %a, %w, %i {layer = 0 : i64, num_experts = 4 : i64, intermediate_size = 6 : i64, activation = #moe<activation silu_gated>, gate = @gate, up = @gate, down = @down} : tensor<?x8xf32>, tensor<?x2xf32>, tensor<?x2xi32> -> tensor<?x8xf32>
    %logits = moe.lm_head %e, @embed : tensor<?x8xf32> -> tensor<?x16xf32>
    return %logits : tensor<?x16xf32>
  }
}

// params: 128 + 8 + 64 + 32 + 32 + 192 + 192 = 648; the experts hold 576 of
// them and a token reads half: 648 - 288 = 360 active.
// CHECK: model test: 1 layers, hidden 8, vocab 16
// CHECK-NEXT: total parameters 0.65 K (648)
// CHECK-NEXT: active parameters per token 0.36 K (360)
// CHECK-NEXT: active without embedding/head 0.23 K
// KV: 2 (K and V) × 1 head × 4 dims × 2 bytes.
// CHECK: KV bytes per token (bf16) 16
// CHECK: attention FLOP per context token 32
// fp8: 4 codes, the scale from byte 16, the row padded to 32 bytes: 2 × 32.
// FP8: KV bytes per token (fp8) 64
// JSON-DAG: "total_params": 648,
// JSON-DAG: "active_params": 360,
// 2 × (attention 192 + norm 8 + router 32 + active experts 288 + head 128)
// JSON-DAG: {{^}}  "flops_per_token": 1312,
// The pass leaves the IR alone.
// IR: moe.lm_head %{{.+}}, @embed
// NOMODEL: error: module has no 'moe.model' attribute; import a model first
