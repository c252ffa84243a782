// Device kernels used by the hardware profiler, behind plain launch functions
// that return cudaError_t. This header is included by nvcc-compiled code, so it
// must not pull in fmt (its consteval format strings break nvcc's front end);
// HardwareProfiler.cpp turns these codes into moe::Error values.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace moe::cuda {

// Fills `count` bf16 values with uniform random numbers in [-scale, scale),
// a pure function of (seed, index).
cudaError_t fillRandomBf16(__nv_bfloat16 *data, std::size_t count,
                           std::uint64_t seed, float scale,
                           cudaStream_t stream);

// Keeps the GPU busy for about `nanoseconds` (one thread spinning on the
// global timer): enqueued before a timed batch, it lets the host queue the
// whole batch so the batch runs back to back, without launch gaps.
cudaError_t spinFor(std::uint64_t nanoseconds, cudaStream_t stream);

} // namespace moe::cuda
