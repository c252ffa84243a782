#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {

ResidualOp residualOp(const model::ResidualSpec &spec) {
  return {static_cast<float>(spec.skipScale),
          static_cast<float>(spec.updateScale), spec.width};
}

Status runResidual(Step &step, const ResidualOp &k, DeviceValue &skipValue,
                   DeviceValue &updateValue, DeviceValue &out) {
  MOE_ASSIGN_OR_RETURN(auto skip, step.f32Of(skipValue));
  MOE_ASSIGN_OR_RETURN(auto update, step.f32Of(updateValue));
  MOE_ASSIGN_OR_RETURN(float *y,
                       step.alloc<float>(step.rows * k.width, "residual"));
  MOE_CUDA_TRY(kernels::scaledAdd(skip, update, k.skipScale, k.updateScale,
                                  step.rows * k.width, y, step.stream));
  out.f = y;
  return Status::success();
}

} // namespace moe::cuda
