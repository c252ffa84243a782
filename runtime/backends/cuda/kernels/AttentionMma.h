// The tensor-core GQA kernel behind kernels::attention (Kernels.h), which
// plans the context splits, merges them and picks this kernel where it
// applies. nvcc compiles this header.
#pragma once

#include "runtime/backends/cuda/kernels/Kernels.h"

namespace moe::cuda::kernels::detail {

// Cache tokens per tile; context splits are multiples of it.
constexpr int kAttentionMmaTile = 64;

// head_dim 64 or 128, up to 64 query heads per kv head.
bool attentionMmaApplies(int heads, int kvHeads, int headDim);

// One launch over row blocks × kv heads × `splits` context ranges of
// tokensPerSplit (the last range takes the rest); with splits > 1 the
// partials go to a.workspace in combineSplits' format. Shapes as
// attentionMmaApplies.
cudaError_t launchAttentionMma(const AttentionArgs &a, int tokensPerSplit,
                               int splits, cudaStream_t stream);

} // namespace moe::cuda::kernels::detail
