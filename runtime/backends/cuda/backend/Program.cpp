#include "runtime/backends/cuda/backend/Program.h"

#include "runtime/model/ActivationBytes.h"

#include "runtime/trace/ChromeTrace.h"

#include <algorithm>

namespace moe::cuda {
namespace {

template <typename K> Result<Op> asOp(Result<K> bound) {
  if (!bound)
    return bound.error();
  return Op(std::move(*bound));
}

Result<Op> bindOp(const model::ResolvedOp &op, WeightPlacement &placement,
                  const KvCaches &kv, model::WeightDtype expertDtype) {
  return std::visit(
      [&](const auto &spec) -> Result<Op> {
        using S = std::decay_t<decltype(spec)>;
        if constexpr (std::is_same_v<S, model::EmbeddingSpec>)
          return asOp(bindEmbeddingOp(placement, spec));
        else if constexpr (std::is_same_v<S, model::NormSpec>)
          return asOp(bindNormOp(placement, spec));
        else if constexpr (std::is_same_v<S, model::AttentionSpec>)
          return asOp(bindAttentionOp(placement, spec, fp32Params(op), kv));
        else if constexpr (std::is_same_v<S, model::LatentAttentionSpec>)
          return asOp(bindMlaOp(placement, spec, kv));
        else if constexpr (std::is_same_v<S, model::LightningSpec>)
          return asOp(bindLightningOp(placement, spec));
        else if constexpr (std::is_same_v<S, model::RouterSpec>)
          return asOp(bindRouterOp(placement, spec, fp32Params(op)));
        else if constexpr (std::is_same_v<S, model::ExpertsSpec>)
          return asOp(bindExpertsOp(placement, spec, expertDtype));
        else if constexpr (std::is_same_v<S, model::MlpSpec>)
          return asOp(bindMlpOp(placement, spec));
        else if constexpr (std::is_same_v<S, model::ResidualSpec>)
          return Op(residualOp(spec));
        else
          return asOp(bindHeadOp(placement, spec));
      },
      op.spec);
}

} // namespace

int64_t Program::chunkRowBytes(bool parks) const {
  int64_t perRow = std::max<int64_t>(rowBytes, 1);
  if (parks)
    perRow += parkRowBytes + restoreRowBytes;
  return perRow + perRow / 16;
}

int64_t Program::chunkRowLimit(int64_t rows, size_t limit) const {
  bool parks = size_t(rows * std::max<int64_t>(rowBytes, 1)) > limit;
  return std::max<int64_t>(1, int64_t(limit / size_t(chunkRowBytes(parks))));
}

bool Program::waitsForHost(int64_t rows, int64_t perExpertGemmRows) const {
  return std::any_of(ops.begin(), ops.end(), [&](const CompiledOp &op) {
    const auto *experts = std::get_if<ExpertsOp>(&op.op);
    return experts && expertsWaitForHost(*experts, rows, perExpertGemmRows);
  });
}

Status compileProgram(const plan::Model &plan,
                      const model::ResolvedModel &model,
                      WeightPlacement &placement, KvCaches &kv,
                      const model::RingSchedule &ring,
                      const std::function<void(double)> &progress,
                      Program &program) {
  Program &p = program;
  p.numValues = static_cast<int>(model.values.size());
  p.embeddingVocab = model.embeddingVocab;
  p.vocab = model.headVocab;
  p.gptOssNorm = model.modelType == "gpt_oss";
  kv.describe(model);
  for (size_t index = 0; index < model.ops.size(); ++index) {
    const model::ResolvedOp &op = model.ops[index];
    if (progress)
      progress(double(index) / double(model.ops.size()));
    placement.beginOp(int(index));
    Result<Op> bound = bindOp(op, placement, kv, model.expertDtype);
    if (!bound.ok()) {
      const plan::Op &planOp = *plan.ops()->Get(index);
      return bound.error().withContext(
          fmt::format("op {} ({}, layer {})", index,
                      plan::EnumNameModule(planOp.spec_type()), op.layer));
    }
    placement.endOp(layerSpanName(op.layer, costmodel::stageName(op.stage)));
    p.ops.push_back({std::move(*bound), op.operands, op.results,
                     ring.bufferOf[index] >= 0, op.layer, op.stage});
    p.streamsWeights = p.streamsWeights || p.ops.back().streams;
  }
  for (const model::ValueInfo &value : model.values) {
    p.valueWidths.push_back(value.width);
    p.definedBy.push_back(value.definedBy);
    p.lastUse.push_back(value.kind == model::ValueKind::logits ? -1
                                                               : value.lastUse);
  }
  // Ops of no layer (residual adds, the final norm and head) stay in the
  // segment of the layer before them: a segment of their own would park and
  // restore every value crossing it, several hidden states a layer.
  // Per op: the last op its weights' copy waits for.
  std::vector<int> copyWaitsFor(p.ops.size(), -1);
  for (const model::RingStep *step : {&ring.decode, &ring.prefill})
    for (const model::RingLoad &load : step->loads)
      if (!load.after.empty())
        copyWaitsFor[size_t(load.op)] =
            std::max(copyWaitsFor[size_t(load.op)], load.after.back());
  int segmentLayer = -1;
  for (size_t index = 0; index < p.ops.size(); ++index) {
    int layer = p.ops[index].layer;
    if (p.segments.empty() || (layer >= 0 && layer != segmentLayer) ||
        copyWaitsFor[index] >= int(p.segments.back().first))
      p.segments.push_back({index, index});
    p.segments.back().second = index + 1;
    if (layer >= 0)
      segmentLayer = layer;
  }
  p.rowBytes = model::stepRowBytes(model);
  for (const auto &[begin, stop] : p.segments) {
    int64_t parkedHere = 0, restoredHere = 0;
    for (int value = 1; value < p.numValues; ++value) {
      if (p.crossesSegment(value, begin, stop))
        parkedHere += 6 * p.valueWidths[value];
      if (p.restoredIn(value, begin))
        restoredHere += 4 * p.valueWidths[value];
    }
    p.parkRowBytes = std::max(p.parkRowBytes, parkedHere);
    p.restoreRowBytes = std::max(p.restoreRowBytes, restoredHere);
  }
  return Status::success();
}

} // namespace moe::cuda
