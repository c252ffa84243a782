#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {

Result<NormOp> bindNormOp(WeightPlacement &placement,
                          const model::NormSpec &spec) {
  NormOp k{nullptr, spec.width, static_cast<float>(spec.eps)};
  MOE_RETURN_IF_ERROR(placement.bind(k.weight, spec.weight, "weight"));
  return k;
}

Status runNorm(Step &step, const NormOp &k, const DeviceValue &x,
               DeviceValue &out) {
  MOE_ASSIGN_OR_RETURN(bf16 * y, step.alloc<bf16>(step.rows * k.width, "norm"));
  out.a = y;
  if (x.f) {
    MOE_ASSIGN_OR_RETURN(float *y32,
                         step.alloc<float>(step.rows * k.width, "norm fp32"));
    MOE_CUDA_TRY(kernels::rmsNormF32(x.f, k.weight, step.rows, k.width, k.eps,
                                     y, y32, step.stream));
    out.f = y32;
    return Status::success();
  }
  kernels::RmsNormArgs args;
  args.x = x.a;
  args.weight = k.weight;
  args.out = y;
  args.rows = step.rows;
  args.width = k.width;
  args.eps = k.eps;
  args.weightAfterCast = !step.gptOssNorm;
  MOE_CUDA_TRY(kernels::rmsNorm(args, step.stream));
  return Status::success();
}

} // namespace moe::cuda
