#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/backend/ops/Ops.h"

namespace moe::cuda {

Result<float *> Step::attentionPartials(size_t bytes) {
  if (bytes > partialBytes) {
    auto more =
        alloc<float>(int64_t(bytes / sizeof(float)), "attention partials");
    if (!more)
      return more.error();
    partials = *more;
    partialBytes = bytes;
  }
  return bytes > 0 ? partials : nullptr;
}

Result<const bf16 *> Step::bf16Of(DeviceValue &value) {
  if (!value.a) {
    auto out = alloc<bf16>(rows * value.width, "bf16 activation");
    if (!out)
      return out.error();
    MOE_CUDA_TRY(
        kernels::floatToBf16(value.f, rows * value.width, *out, stream));
    value.a = *out;
  }
  return static_cast<const bf16 *>(value.a);
}

Result<const float *> Step::f32Of(DeviceValue &value) {
  if (!value.f) {
    auto out = alloc<float>(rows * value.width, "fp32 activation");
    if (!out)
      return out.error();
    MOE_CUDA_TRY(
        kernels::bf16ToFloat(value.a, rows * value.width, *out, stream));
    value.f = *out;
  }
  return static_cast<const float *>(value.f);
}

Status Step::linear(const bf16 *x, int64_t m, int64_t k, const bf16 *w,
                    int64_t n, const bf16 *bias, bf16 *y) {
  return gemm.run(
      {.x = x, .w = w, .bias = bias, .y = y, .m = m, .n = n, .k = k}, stream);
}

Status Step::normInPlace(bf16 *x, const bf16 *weight, int64_t count,
                         int64_t width, float eps, bool weightAfterCast) {
  kernels::RmsNormArgs norm;
  norm.x = x;
  norm.weight = weight;
  norm.out = x;
  norm.rows = count;
  norm.width = width;
  norm.eps = eps;
  norm.weightAfterCast = weightAfterCast;
  MOE_CUDA_TRY(kernels::rmsNorm(norm, stream));
  return Status::success();
}

} // namespace moe::cuda
