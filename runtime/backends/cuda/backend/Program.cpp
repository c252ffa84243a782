#include "runtime/backends/cuda/backend/Program.h"

#include <algorithm>

namespace moe::cuda {
namespace {

enum class ValueKind {
  undefined,
  tokens,
  activations,
  routeWeights,
  routeIndices,
  logits
};

struct ValueInfo {
  ValueKind kind = ValueKind::undefined;
  int64_t width = 0;
  int64_t experts = 0;
};

template <typename K> Result<Op> asOp(Result<K> bound) {
  if (!bound)
    return bound.error();
  return Op(std::move(*bound));
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

Status compileProgram(const plan::Model &model, WeightPlacement &placement,
                      KvCaches &kv, std::vector<int64_t> &lightningStateFloats,
                      int ringSlots,
                      const std::function<void(double)> &progress,
                      Program &program) {
  Program &p = program;
  p.numValues = model.num_values();
  p.logitsValue = model.logits();
  p.gptOssNorm = model.model_type()->str() == "gpt_oss";
  std::vector<ValueInfo> infos(p.numValues);
  if (p.numValues <= 0)
    return makeError("the plan defines no values");
  infos[0] = {ValueKind::tokens, 1, 0};
  bool logitsFromHead = false;
  const auto &planOps = *model.ops();
  for (uint32_t index = 0; index < planOps.size(); ++index) {
    const plan::Op &op = *planOps.Get(index);
    if (progress)
      progress(double(index) / double(planOps.size()));
    CompiledOp compiled;
    placement.beginOp();
    compiled.layer = op.layer();
    compiled.operands.assign(op.operands()->begin(), op.operands()->end());
    compiled.results.assign(op.results()->begin(), op.results()->end());
    auto fail = [&](const Error &error) {
      return error.withContext(fmt::format("op {} ({}, layer {})", index,
                                           plan::EnumNameModule(op.spec_type()),
                                           op.layer()));
    };
    size_t operands = 1, results = 1;
    std::vector<ValueKind> wanted{ValueKind::activations};
    switch (op.spec_type()) {
    case plan::Module::Embedding:
      wanted = {ValueKind::tokens};
      break;
    case plan::Module::Router:
      results = 2;
      break;
    case plan::Module::Experts:
      operands = 3;
      wanted = {ValueKind::activations, ValueKind::routeWeights,
                ValueKind::routeIndices};
      break;
    case plan::Module::Residual:
      operands = 2;
      wanted = {ValueKind::activations, ValueKind::activations};
      break;
    default:
      break;
    }
    if (compiled.operands.size() != operands ||
        compiled.results.size() != results)
      return fail(
          makeError("expects {} operands and {} results", operands, results));
    for (int value : compiled.operands)
      if (value < 0 || value >= p.numValues)
        return fail(makeError("operand value {} does not exist", value));
    for (int value : compiled.results)
      if (value <= 0 || value >= p.numValues)
        return fail(makeError("result value {} is invalid", value));
    for (size_t i = 0; i < wanted.size(); ++i)
      if (infos[compiled.operands[i]].kind != wanted[i])
        return fail(makeError(
            "operand {} (value {}) is not {}", i, compiled.operands[i],
            wanted[i] == ValueKind::tokens        ? "the token ids"
            : wanted[i] == ValueKind::activations ? "an activation"
                                                  : "a router result"));
    int64_t in = infos[compiled.operands[0]].width;
    Result<Op> kernel = makeError("unsupported module");
    std::vector<ValueInfo> resultInfos{{ValueKind::activations, in, 0}};
    switch (op.spec_type()) {
    case plan::Module::Embedding: {
      auto bound = bindEmbeddingOp(placement, *op.spec_as_Embedding());
      if (bound) {
        resultInfos = {{ValueKind::activations, bound->hidden, 0}};
        p.embeddingVocab = bound->vocab;
      }
      kernel = asOp(std::move(bound));
      break;
    }
    case plan::Module::RMSNorm:
      kernel = asOp(bindNormOp(placement, *op.spec_as_RMSNorm(), in));
      break;
    case plan::Module::Attention:
      kernel = asOp(bindAttentionOp(placement, *op.spec_as_Attention(),
                                    fp32Params(op), in, op.layer(), kv));
      break;
    case plan::Module::Router: {
      const plan::Router &r = *op.spec_as_Router();
      kernel = asOp(bindRouterOp(placement, r, fp32Params(op), in));
      resultInfos = {{ValueKind::routeWeights, r.top_k(), 0},
                     {ValueKind::routeIndices, r.top_k(), r.num_experts()}};
      break;
    }
    case plan::Module::Experts: {
      const ValueInfo &routeWeights = infos[compiled.operands[1]];
      const ValueInfo &indices = infos[compiled.operands[2]];
      const plan::Experts &e = *op.spec_as_Experts();
      if (routeWeights.width != indices.width ||
          indices.experts > e.num_experts()) {
        kernel = makeError("the routing weights and indices do not match "
                           "{} experts",
                           e.num_experts());
        break;
      }
      kernel = asOp(bindExpertsOp(placement, e, in, routeWeights.width));
      break;
    }
    case plan::Module::MLP:
      kernel = asOp(bindMlpOp(placement, *op.spec_as_MLP(), in));
      break;
    case plan::Module::Residual: {
      const plan::Residual &r = *op.spec_as_Residual();
      if (infos[compiled.operands[1]].width != in) {
        kernel = makeError("skip and update differ in width");
        break;
      }
      kernel = Op(ResidualOp{static_cast<float>(r.skip_scale()),
                             static_cast<float>(r.update_scale()), in});
      break;
    }
    case plan::Module::LMHead: {
      auto bound = bindHeadOp(placement, *op.spec_as_LMHead(), in);
      if (bound) {
        resultInfos = {{ValueKind::logits, bound->vocab, 0}};
        logitsFromHead |= compiled.results[0] == p.logitsValue;
        p.vocab = std::max(p.vocab, bound->vocab);
      }
      kernel = asOp(std::move(bound));
      break;
    }
    case plan::Module::MLAttention:
      kernel = asOp(bindMlaOp(placement, *op.spec_as_MLAttention(), in, kv));
      break;
    case plan::Module::LightningAttention:
      kernel = asOp(bindLightningOp(placement, *op.spec_as_LightningAttention(),
                                    in, lightningStateFloats));
      break;
    case plan::Module::NONE:
      break;
    }
    if (!kernel.ok())
      return fail(kernel.error());
    compiled.op = std::move(*kernel);
    compiled.streamIndex = placement.endOp();
    for (size_t r = 0; r < compiled.results.size(); ++r)
      infos[compiled.results[r]] = resultInfos[r];
    p.ops.push_back(std::move(compiled));
  }
  for (const ValueInfo &info : infos)
    p.valueWidths.push_back(info.width);
  p.lastUse.assign(p.numValues, -1);
  p.definedBy.assign(p.numValues, -1);
  for (size_t index = 0; index < p.ops.size(); ++index) {
    for (int value : p.ops[index].operands)
      p.lastUse[value] = static_cast<int>(index);
    for (int value : p.ops[index].results)
      p.definedBy[value] = static_cast<int>(index);
  }
  // Ops of no layer (residual adds, the final norm and head) stay in the
  // segment of the layer before them: a segment of their own would park and
  // restore every value crossing it, several hidden states a layer.
  int segmentLayer = -1;
  for (size_t index = 0, streamedInSegment = 0; index < p.ops.size(); ++index) {
    bool streams = p.ops[index].streamIndex >= 0;
    int layer = p.ops[index].layer;
    if (p.segments.empty() || (layer >= 0 && layer != segmentLayer) ||
        (streams && streamedInSegment == size_t(ringSlots))) {
      p.segments.push_back({index, index});
      streamedInSegment = 0;
    }
    p.segments.back().second = index + 1;
    streamedInSegment += streams;
    if (layer >= 0)
      segmentLayer = layer;
  }
  // Per row at each op: the values alive across it in both forms (bf16 and
  // fp32) and the op's own bytes. The LM head's logits are made a chunk of
  // rows at a time (runHead), not per row. The planner's decodeRowBytes
  // (costmodel/Plan.cpp) reserves at least this for every decode row.
  for (size_t index = 0; index < p.ops.size(); ++index) {
    int at = static_cast<int>(index);
    int64_t live = 0;
    for (int value = 1; value < p.numValues; ++value)
      if (p.definedBy[value] < at && p.lastUse[value] >= at)
        live += 6 * p.valueWidths[value];
    const Op &op = p.ops[index].op;
    if (!std::holds_alternative<HeadOp>(op))
      for (int value : p.ops[index].results)
        live += 6 * p.valueWidths[value];
    p.rowBytes = std::max(p.rowBytes, live + opRowBytes(op));
  }
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
  if (!logitsFromHead)
    return makeError("the logits value {} is not an LM head's result",
                     p.logitsValue);
  return Status::success();
}

} // namespace moe::cuda
