// RUN: moe-opt %s | moe-opt | FileCheck %s
// RUN: moe-opt %s --mlir-print-op-generic | moe-opt | FileCheck %s

// CHECK: sched.stream @compute compute
sched.stream @compute compute
sched.stream @h2d h2d
sched.stream @d2h d2h
// CHECK: sched.buffer_pool @ring weight_ring x 2, 1024 bytes
sched.buffer_pool @ring weight_ring x 2, 1024 bytes
sched.buffer_pool @kv kv_staging x 2, 512 bytes
sched.buffer_pool @hidden hidden x 2, 256 bytes
// CHECK: sched.step @decode attributes {predicted_seconds = 1.000000e-03 : f64} {
sched.step @decode attributes {predicted_seconds = 1.0e-3 : f64} {
  // CHECK: %[[W:.+]] = sched.copy weights on @h2d {buffer = 0 : i64, bytes = 1.024000e+03 : f64, layer = 1 : i64, module = 2 : i64, pool = @ring, seconds = 9.9999999999999995E-7 : f64}
  %w = sched.copy weights on @h2d {layer = 1 : i64, module = 2 : i64, pool = @ring, buffer = 0 : i64, bytes = 1024.0 : f64, seconds = 1.0e-6 : f64}
  // CHECK: %[[KV:.+]] = sched.copy kv_load on @h2d {buffer = 1 : i64,
  %kv = sched.copy kv_load on @h2d {layer = 1 : i64, module = 0 : i64, micro_batch = 0 : i64, sequences = 4 : i64, pool = @kv, buffer = 1 : i64, bytes = 512.0 : f64, seconds = 1.0e-6 : f64}
  // CHECK: %[[A:.+]] = sched.compute "attention" on @compute after(%[[KV]]) {
  %a = sched.compute "attention" on @compute after(%kv) {layer = 1 : i64, module = 0 : i64, micro_batch = 0 : i64, sequences = 4 : i64, pool = @kv, buffer = 1 : i64, seconds = 2.0e-6 : f64}
  // CHECK: sched.copy kv_store on @d2h after(%[[A]])
  %s = sched.copy kv_store on @d2h after(%a) {layer = 1 : i64, module = 0 : i64, pool = @kv, buffer = 1 : i64, bytes = 16.0 : f64, seconds = 1.0e-8 : f64}
  // CHECK: sched.compute "routed experts" on @compute after(%[[W]], %[[A]]) {experts = #sched<experts streamed>,
  %e = sched.compute "routed experts" on @compute after(%w, %a) {layer = 1 : i64, module = 2 : i64, experts = #sched<experts streamed>, seconds = 3.0e-6 : f64}
}
