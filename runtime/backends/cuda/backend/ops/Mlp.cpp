#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"

namespace moe::cuda {

Result<MlpOp> bindMlpOp(WeightPlacement &placement, const model::MlpSpec &m) {
  MlpOp k{};
  k.hidden = m.hidden;
  k.width = m.width;
  int64_t h = k.hidden, w = k.width;
  HostBf16 gateUp(size_t(2 * w * h));
  placement.weights().toBf16(size_t(m.gate), gateUp.bits(0, size_t(w * h)));
  placement.weights().toBf16(size_t(m.up),
                             gateUp.bits(size_t(w * h), size_t(w * h)));
  auto device = placement.place(gateUp, 1, placement.residentExperts(m.gate, 1),
                                "mlp gate|up");
  if (!device)
    return device.error();
  k.gateUp = expertBlock(*device, 0);
  MOE_RETURN_IF_ERROR(placement.bind(k.down, m.down, "down"));
  MOE_RETURN_IF_ERROR(
      placement.bind(k.outputGate, m.outputGate, "output_gate"));
  return k;
}

Status runMlp(Step &step, const MlpOp &k, DeviceValue &in, DeviceValue &out) {
  MOE_ASSIGN_OR_RETURN(auto x, step.bf16Of(in));
  int64_t rows = step.rows, h = k.hidden, w = k.width;
  MOE_ASSIGN_OR_RETURN(bf16 * gu,
                       step.alloc<bf16>(rows * 2 * w, "mlp gate|up"));
  MOE_ASSIGN_OR_RETURN(bf16 * act,
                       step.alloc<bf16>(rows * w, "mlp activations"));
  MOE_ASSIGN_OR_RETURN(bf16 * y, step.alloc<bf16>(rows * h, "mlp out"));
  MOE_RETURN_IF_ERROR(step.linear(x, rows, h, k.gateUp, 2 * w, nullptr, gu));
  MOE_CUDA_TRY(kernels::siluMul(gu, act, rows, w, step.stream));
  MOE_RETURN_IF_ERROR(step.linear(act, rows, w, k.down, h, nullptr, y));
  if (k.outputGate) {
    MOE_ASSIGN_OR_RETURN(bf16 * gate,
                         step.alloc<bf16>(rows, "mlp output gate"));
    MOE_RETURN_IF_ERROR(
        step.linear(x, rows, h, k.outputGate, 1, nullptr, gate));
    MOE_CUDA_TRY(kernels::sigmoidGate(gate, 1, rows, h, y, step.stream));
  }
  out.a = y;
  return Status::success();
}

} // namespace moe::cuda
