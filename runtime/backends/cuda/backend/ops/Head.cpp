#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include <algorithm>

static_assert(moe::cuda::kernels::kArgmaxNotFinite == moe::kNotFinite,
              "the GPU's greedy pick reports a non-finite row as the engine "
              "expects");

namespace moe::cuda {

Result<HeadOp> bindHeadOp(WeightPlacement &placement,
                          const model::HeadSpec &spec) {
  HeadOp k{nullptr, spec.vocab, spec.hidden};
  MOE_RETURN_IF_ERROR(placement.bind(k.weight, spec.weight, "weight"));
  return k;
}

// Its logits are made a chunk of rows at a time, not per row.

Status runHead(Step &step, const HeadOp &k, DeviceValue &in) {
  MOE_ASSIGN_OR_RETURN(auto x, step.bf16Of(in));
  bool greedy = step.head.tokens != nullptr;
  constexpr int64_t kChunkBytes = int64_t{64} << 20;
  int64_t chunk = std::clamp<int64_t>(kChunkBytes / (6 * k.vocab), 1,
                                      std::max<int64_t>(step.logitCount, 1));
  MOE_ASSIGN_OR_RETURN(bf16 * picked,
                       step.alloc<bf16>(chunk * k.hidden, "head rows"));
  MOE_ASSIGN_OR_RETURN(bf16 * logits,
                       step.alloc<bf16>(chunk * k.vocab, "logits"));
  float *logits32 = nullptr;
  int32_t *ids = nullptr;
  if (greedy) {
    MOE_ASSIGN_OR_RETURN(
        int32_t * chosen,
        step.alloc<int32_t>(std::max<int64_t>(step.logitCount, 1),
                            "greedy tokens"));
    ids = chosen;
  } else {
    MOE_ASSIGN_OR_RETURN(float *wide,
                         step.alloc<float>(chunk * k.vocab, "logits fp32"));
    logits32 = wide;
  }
  for (int64_t first = 0; first < step.logitCount; first += chunk) {
    int64_t n = std::min(chunk, step.logitCount - first);
    // gatherRows with topK 1 picks rows by index.
    MOE_CUDA_TRY(kernels::gatherRows(x, step.logitRows + first, n, 1, k.hidden,
                                     picked, step.stream));
    MOE_RETURN_IF_ERROR(
        step.linear(picked, n, k.hidden, k.weight, k.vocab, nullptr, logits));
    if (greedy) {
      MOE_CUDA_TRY(
          kernels::argmaxRows(logits, n, k.vocab, ids + first, step.stream));
      continue;
    }
    MOE_CUDA_TRY(
        kernels::bf16ToFloat(logits, n * k.vocab, logits32, step.stream));
    MOE_CUDA_TRY(cudaMemcpyAsync(step.head.logits + first * k.vocab, logits32,
                                 size_t(n * k.vocab) * sizeof(float),
                                 cudaMemcpyDeviceToHost, step.stream));
  }
  if (greedy && step.logitCount > 0)
    MOE_CUDA_TRY(cudaMemcpyAsync(step.head.tokens, ids,
                                 size_t(step.logitCount) * sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, step.stream));
  return Status::success();
}

} // namespace moe::cuda
