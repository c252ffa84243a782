// The tensor-core MLA kernel behind kernels::mlaAttention (MlaAttention.h),
// which plans the context splits, merges them and picks this kernel where
// it applies. nvcc compiles this header.
#pragma once

#include "runtime/backends/cuda/kernels/MlaAttention.h"

namespace moe::cuda::kernels::detail {

// Cache rows per tile; context splits are multiples of it.
constexpr int kMlaMmaTile = 32;

// latentDim ∈ {128, 256, 512}, ropeDim ∈ {32, 64}, and an fp8 row as stored
// no wider than a bf16 one.
bool mlaMmaApplies(int latentDim, int ropeDim, int64_t rowBytes, bool fp8);

// One launch over rows × groups blocks (16 heads a group) and `splits`
// context ranges of tokensPerSplit; with splits > 1 the partials go to
// a.workspace in the merge kernel's format. Shapes as mlaMmaApplies.
cudaError_t launchMlaMma(const MlaAttentionArgs &a, int groups,
                         int tokensPerSplit, int splits, cudaStream_t stream);

} // namespace moe::cuda::kernels::detail
