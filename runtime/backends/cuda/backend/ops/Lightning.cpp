#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/kernels/LightningAttention.h"

namespace moe::cuda {

Result<LightningOp> bindLightningOp(WeightPlacement &placement,
                                    const model::LightningSpec &a) {
  LightningOp k{};
  k.hidden = a.hidden;
  k.heads = a.heads;
  k.headDim = a.headDim;
  k.eps = static_cast<float>(a.eps);
  if (!kernels::lightningAttentionSupports(static_cast<int>(k.heads),
                                           static_cast<int>(k.headDim)))
    return makeError("the lightning attention kernel does not support {} "
                     "heads of head_dim {} (head_dim 16, 32, 64 or 128)",
                     k.heads, k.headDim);
  MOE_RETURN_IF_ERROR(placement.bind(k.qkv, a.qkv, "qkv"));
  MOE_RETURN_IF_ERROR(placement.bind(k.gate, a.gate, "gate"));
  MOE_RETURN_IF_ERROR(placement.bind(k.norm, a.norm, "norm"));
  MOE_RETURN_IF_ERROR(placement.bind(k.out, a.out, "out"));
  k.decay = placement.addFloats(a.decays);
  k.state = a.state;
  return k;
}

Status runLightning(Step &step, const LightningOp &k, float *state,
                    DeviceValue &in, DeviceValue &out) {
  MOE_ASSIGN_OR_RETURN(auto x, step.bf16Of(in));
  int64_t rows = step.rows, w = k.heads * k.headDim;
  MOE_ASSIGN_OR_RETURN(bf16 * qkv,
                       step.alloc<bf16>(rows * 3 * w, "lightning qkv"));
  MOE_ASSIGN_OR_RETURN(bf16 * mixed,
                       step.alloc<bf16>(rows * w, "lightning attention"));
  MOE_ASSIGN_OR_RETURN(bf16 * gate,
                       step.alloc<bf16>(rows * w, "lightning gate"));
  MOE_ASSIGN_OR_RETURN(bf16 * y,
                       step.alloc<bf16>(rows * k.hidden, "lightning out"));
  MOE_RETURN_IF_ERROR(
      step.linear(x, rows, k.hidden, k.qkv, 3 * w, nullptr, qkv));
  kernels::LightningAttentionArgs a;
  a.qkv = qkv;
  a.state = state;
  a.decay = step.floatArray(k.decay);
  a.sequences = step.attnSlots; // every slot's state is on the GPU
  a.positions = step.positions;
  a.out = mixed;
  a.rows = rows;
  a.heads = static_cast<int>(k.heads);
  a.headDim = static_cast<int>(k.headDim);
  MOE_CUDA_TRY(kernels::lightningAttention(a, step.stream));
  // HF normalises the fp32 attention output: one rounding, after the weight.
  MOE_RETURN_IF_ERROR(step.normInPlace(mixed, k.norm, rows, w, k.eps, false));
  MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.gate, w, nullptr, gate));
  MOE_CUDA_TRY(kernels::sigmoidGate(gate, w, rows, w, mixed, step.stream));
  MOE_RETURN_IF_ERROR(step.linear(mixed, rows, w, k.out, k.hidden, nullptr, y));
  out.a = y;
  return Status::success();
}

} // namespace moe::cuda
