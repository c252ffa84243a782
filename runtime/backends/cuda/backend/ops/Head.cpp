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

namespace {

// Logits for the rows asked for are made within kLogitsBytes of step
// memory. A greedy pick takes every row at once, a slice of the vocabulary
// at a time, so the head's weight is read once; logits for the host take a
// chunk of rows at a time, all of the vocabulary each, since they cross
// PCIe whole anyway.
constexpr int64_t kLogitsBytes = int64_t{64} << 20;

Status greedyHead(Step &step, const HeadOp &k, const bf16 *x) {
  const int64_t rows = step.logitCount;
  MOE_ASSIGN_OR_RETURN(bf16 * picked,
                       step.alloc<bf16>(rows * k.hidden, "head rows"));
  // gatherRows with topK 1 picks rows by index.
  MOE_CUDA_TRY(kernels::gatherRows(x, step.logitRows, rows, 1, k.hidden, picked,
                                   step.stream));
  // Slices of a multiple of 8 columns keep each slice of the weight and of
  // the logits 16-byte aligned.
  const int64_t slice = std::min<int64_t>(
      k.vocab, std::max<int64_t>(8, kLogitsBytes / (2 * rows) / 8 * 8));
  MOE_ASSIGN_OR_RETURN(bf16 * logits, step.alloc<bf16>(rows * slice, "logits"));
  MOE_ASSIGN_OR_RETURN(float *best, step.alloc<float>(rows, "greedy maxima"));
  MOE_ASSIGN_OR_RETURN(int32_t * ids,
                       step.alloc<int32_t>(rows, "greedy tokens"));
  for (int64_t first = 0; first < k.vocab; first += slice) {
    int64_t width = std::min(slice, k.vocab - first);
    MOE_RETURN_IF_ERROR(step.linear(picked, rows, k.hidden,
                                    k.weight + first * k.hidden, width, nullptr,
                                    logits));
    MOE_CUDA_TRY(kernels::argmaxRowsOfSlice(logits, rows, width, first, best,
                                            ids, step.stream));
  }
  MOE_CUDA_TRY(cudaMemcpyAsync(step.head.tokens, ids,
                               size_t(rows) * sizeof(int32_t),
                               cudaMemcpyDeviceToHost, step.stream));
  return Status::success();
}

} // namespace

Status runHead(Step &step, const HeadOp &k, DeviceValue &in) {
  MOE_ASSIGN_OR_RETURN(auto x, step.bf16Of(in));
  if (step.logitCount == 0)
    return Status::success();
  if (step.head.tokens)
    return greedyHead(step, k, x);
  int64_t chunk =
      std::clamp<int64_t>(kLogitsBytes / (6 * k.vocab), 1, step.logitCount);
  MOE_ASSIGN_OR_RETURN(bf16 * picked,
                       step.alloc<bf16>(chunk * k.hidden, "head rows"));
  MOE_ASSIGN_OR_RETURN(bf16 * logits,
                       step.alloc<bf16>(chunk * k.vocab, "logits"));
  MOE_ASSIGN_OR_RETURN(float *logits32,
                       step.alloc<float>(chunk * k.vocab, "logits fp32"));
  for (int64_t first = 0; first < step.logitCount; first += chunk) {
    int64_t n = std::min(chunk, step.logitCount - first);
    MOE_CUDA_TRY(kernels::gatherRows(x, step.logitRows + first, n, 1, k.hidden,
                                     picked, step.stream));
    MOE_RETURN_IF_ERROR(
        step.linear(picked, n, k.hidden, k.weight, k.vocab, nullptr, logits));
    MOE_CUDA_TRY(
        kernels::bf16ToFloat(logits, n * k.vocab, logits32, step.stream));
    MOE_CUDA_TRY(cudaMemcpyAsync(step.head.logits + first * k.vocab, logits32,
                                 size_t(n * k.vocab) * sizeof(float),
                                 cudaMemcpyDeviceToHost, step.stream));
  }
  return Status::success();
}

} // namespace moe::cuda
