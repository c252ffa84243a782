#include "runtime/backends/cuda/backend/ops/Ops.h"

namespace moe::cuda {

Status runOp(Step &step, const Op &op, std::span<const int> operands,
             std::span<const int> results, std::vector<DeviceValue> &values) {
  DeviceValue &in = values[operands[0]];
  return std::visit(
      [&](const auto &k) -> Status {
        DeviceValue &out = values[results[0]];
        using K = std::decay_t<decltype(k)>;
        if constexpr (std::is_same_v<K, EmbeddingOp>)
          return runEmbedding(step, k, in, out);
        else if constexpr (std::is_same_v<K, NormOp>)
          return runNorm(step, k, in, out);
        else if constexpr (std::is_same_v<K, AttentionOp>)
          return runAttention(step, k, step.kv.caches[k.cache], in, out);
        else if constexpr (std::is_same_v<K, MlaOp>)
          return runMla(step, k, step.kv.caches[k.cache], in, out);
        else if constexpr (std::is_same_v<K, LightningOp>)
          return runLightning(step, k, step.lightningStates[k.state], in, out);
        else if constexpr (std::is_same_v<K, RouterOp>)
          return runRouter(step, k, in, out, values[results[1]]);
        else if constexpr (std::is_same_v<K, ExpertsOp>)
          return runExperts(step, k, in, values[operands[1]],
                            values[operands[2]], out);
        else if constexpr (std::is_same_v<K, MlpOp>)
          return runMlp(step, k, in, out);
        else if constexpr (std::is_same_v<K, ResidualOp>)
          return runResidual(step, k, in, values[operands[1]], out);
        else
          return runHead(step, k, in);
      },
      op);
}

} // namespace moe::cuda
