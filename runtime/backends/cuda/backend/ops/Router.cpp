#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {

Result<RouterOp> bindRouterOp(WeightPlacement &placement,
                              const model::RouterSpec &r,
                              const Fp32Params &fp32) {
  RouterOp k{};
  k.hidden = r.hidden;
  k.experts = r.experts;
  k.topK = r.topK;
  k.groups = static_cast<int>(r.groups);
  k.keptGroups = static_cast<int>(r.keptGroups);
  if (k.experts > 256 || k.topK > 8)
    return makeError("router of {} experts, top {}: the CUDA router takes "
                     "at most 256 experts and top 8",
                     k.experts, k.topK);
  if (k.groups > 8)
    return makeError("router groups {} / kept {} do not fit {} experts",
                     k.groups, k.keptGroups, k.experts);
  k.scoring = static_cast<kernels::RouterScoring>(r.scoring);
  k.selection = static_cast<kernels::RouterSelection>(r.selection);
  k.normalize = r.normalize;
  k.scaling = static_cast<float>(r.scaling);
  k.weight = placement.bindFloat(fp32.routerWeight);
  k.bias = placement.bindFloat(fp32.routerBias);
  k.correction = placement.bindFloat(fp32.correctionBias);
  return k;
}

Status runRouter(Step &step, const RouterOp &k, DeviceValue &in,
                 DeviceValue &weights, DeviceValue &indices) {
  MOE_ASSIGN_OR_RETURN(auto x, step.f32Of(in));
  int64_t rows = step.rows;
  MOE_ASSIGN_OR_RETURN(float *logits32,
                       step.alloc<float>(rows * k.experts, "router logits"));
  MOE_ASSIGN_OR_RETURN(float *w,
                       step.alloc<float>(rows * k.topK, "route weights"));
  MOE_ASSIGN_OR_RETURN(int32_t * idx,
                       step.alloc<int32_t>(rows * k.topK, "route indices"));
  MOE_CUDA_TRY(kernels::routerLogits(x, step.floatArray(k.weight),
                                     step.floatArray(k.bias), rows, k.hidden,
                                     k.experts, logits32, step.stream));
  kernels::RouterArgs args;
  args.logits = logits32;
  args.correctionBias = step.floatArray(k.correction);
  args.weights = w;
  args.indices = idx;
  args.rows = rows;
  args.experts = static_cast<int>(k.experts);
  args.topK = static_cast<int>(k.topK);
  args.scoring = k.scoring;
  args.selection = k.selection;
  args.groups = k.groups;
  args.keptGroups = k.keptGroups;
  args.normalize = k.normalize;
  args.scaling = k.scaling;
  MOE_CUDA_TRY(kernels::routeTopK(args, step.stream));
  weights.f = w;
  indices.i = idx;
  return Status::success();
}

} // namespace moe::cuda
