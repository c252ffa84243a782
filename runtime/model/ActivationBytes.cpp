#include "runtime/model/ActivationBytes.h"

#include "runtime/model/ResolvedModel.h"

#include <algorithm>
#include <type_traits>

namespace moe::model {

int64_t opRowBytes(const ResolvedOp &op, KvDtype kv) {
  return std::visit(
      [&](const auto &s) -> int64_t {
        using S = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<S, AttentionSpec>)
          return attentionRowBytes(s.hidden, s.heads, s.kvHeads, s.headDim, kv);
        else if constexpr (std::is_same_v<S, LatentAttentionSpec>)
          return latentAttentionRowBytes(s.hidden, s.heads, s.qLoraRank,
                                         s.kvLoraRank, s.nope, s.ropeDim,
                                         s.vDim, kv);
        else if constexpr (std::is_same_v<S, LightningSpec>)
          return lightningRowBytes(s.hidden, s.heads, s.headDim);
        else if constexpr (std::is_same_v<S, RouterSpec>)
          return routerRowBytes(s.experts, s.topK);
        else if constexpr (std::is_same_v<S, ExpertsSpec>)
          return routedExpertsRowBytes(s.hidden, s.width, s.topK);
        else if constexpr (std::is_same_v<S, MlpSpec>)
          return mlpRowBytes(s.hidden, s.width);
        else if constexpr (std::is_same_v<S, NormSpec> ||
                           std::is_same_v<S, ResidualSpec>)
          return rowOfWidthBytes(s.width);
        else
          return rowOfWidthBytes(s.hidden); // embedding, LM head
      },
      op.spec);
}

int64_t stepRowBytes(const ResolvedModel &model) {
  int64_t most = 0;
  for (size_t index = 0; index < model.ops.size(); ++index) {
    const ResolvedOp &op = model.ops[index];
    int at = static_cast<int>(index);
    int64_t live = 0;
    // Value 0, the token ids, is not a row of activations; the logits go
    // to the host a block of rows at a time.
    for (size_t value = 1; value < model.values.size(); ++value) {
      const ValueInfo &info = model.values[value];
      if (info.kind != ValueKind::logits && info.definedBy < at &&
          info.lastUse >= at)
        live += kBothFormsBytes * info.width;
    }
    if (op.kind() != OpKind::head)
      for (int result : op.results)
        live += kBothFormsBytes * model.values[size_t(result)].width;
    most = std::max(most, live + opRowBytes(op, model.kvDtype));
  }
  return most;
}

} // namespace moe::model
