// RUN: moe-opt %s -split-input-file -verify-diagnostics

sched.stream @compute compute
sched.step @decode attributes {predicted_seconds = 0.0 : f64} {
  // expected-error @+1 {{runs on @compute (compute) but belongs on a h2d stream}}
  %w = sched.copy weights on @compute {layer = 1 : i64, module = 0 : i64, bytes = 8.0 : f64, seconds = 0.0 : f64}
}

// -----

sched.stream @h2d h2d
sched.step @decode attributes {predicted_seconds = 0.0 : f64} {
  // expected-error @+1 {{runs on @h2d (h2d) but belongs on a compute stream}}
  %a = sched.compute "attention" on @h2d {layer = 1 : i64, module = 0 : i64, seconds = 0.0 : f64}
}

// -----

sched.stream @h2d h2d
sched.buffer_pool @kv kv_staging x 2, 512 bytes
sched.step @decode attributes {predicted_seconds = 0.0 : f64} {
  // expected-error @+1 {{buffer 2 is not one of the 2 in @kv}}
  %kv = sched.copy kv_load on @h2d {layer = 1 : i64, module = 0 : i64, pool = @kv, buffer = 2 : i64, bytes = 8.0 : f64, seconds = 0.0 : f64}
}

// -----

sched.stream @h2d h2d
sched.step @decode attributes {predicted_seconds = 0.0 : f64} {
  // expected-error @+1 {{needs a 'kv_staging' buffer pool}}
  %kv = sched.copy kv_load on @h2d {layer = 1 : i64, module = 0 : i64, bytes = 8.0 : f64, seconds = 0.0 : f64}
}

// -----

sched.stream @h2d h2d
sched.buffer_pool @ring weight_ring x 2, 512 bytes
sched.step @decode attributes {predicted_seconds = 0.0 : f64} {
  // expected-error @+1 {{uses @ring (weight_ring), expected a kv_staging pool}}
  %kv = sched.copy kv_load on @h2d {layer = 1 : i64, module = 0 : i64, pool = @ring, buffer = 0 : i64, bytes = 8.0 : f64, seconds = 0.0 : f64}
}

// -----

sched.step @decode attributes {predicted_seconds = 0.0 : f64} {
  // expected-error @+1 {{@missing is not a sched.stream}}
  %w = sched.copy weights on @missing {layer = 1 : i64, module = 0 : i64, bytes = 8.0 : f64, seconds = 0.0 : f64}
}

// -----

sched.stream @h2d h2d
sched.step @decode attributes {predicted_seconds = 0.0 : f64} {
  // expected-error @+1 {{a copy moves a positive number of bytes}}
  %w = sched.copy weights on @h2d {layer = 1 : i64, module = 0 : i64, bytes = 0.0 : f64, seconds = 0.0 : f64}
}

// -----

sched.step @decode attributes {predicted_seconds = 0.0 : f64} {
  // expected-error @+1 {{is not a job; a sched.step holds only sched.copy and sched.compute}}
  %x = builtin.unrealized_conversion_cast to i32
}
