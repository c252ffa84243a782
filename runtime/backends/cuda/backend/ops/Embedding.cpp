#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {

Result<EmbeddingOp> bindEmbeddingOp(WeightPlacement &placement,
                                    const model::EmbeddingSpec &spec) {
  EmbeddingOp k{nullptr, spec.vocab, spec.hidden};
  MOE_RETURN_IF_ERROR(
      placement.bindTable(k.table, spec.table, k.vocab * k.hidden));
  return k;
}

Status runEmbedding(Step &step, const EmbeddingOp &k, const DeviceValue &ids,
                    DeviceValue &out) {
  MOE_ASSIGN_OR_RETURN(float *y,
                       step.alloc<float>(step.rows * k.hidden, "embedding"));
  MOE_CUDA_TRY(
      kernels::embedRows(k.table, ids.i, step.rows, k.hidden, y, step.stream));
  out.f = y;
  return Status::success();
}

} // namespace moe::cuda
