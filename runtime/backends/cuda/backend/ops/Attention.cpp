#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include <algorithm>
#include <tuple>

namespace moe::cuda {

Result<AttentionOp> bindAttentionOp(WeightPlacement &placement,
                                    const model::AttentionSpec &a,
                                    const Fp32Params &fp32,
                                    const KvCaches &kv) {
  AttentionOp k{};
  k.hidden = a.hidden;
  k.heads = a.heads;
  k.kvHeads = a.kvHeads;
  k.headDim = a.headDim;
  if (!kernels::attentionSupports(static_cast<int>(k.heads),
                                  static_cast<int>(k.kvHeads),
                                  static_cast<int>(k.headDim)))
    return makeError("the attention kernel does not support {} heads over "
                     "{} kv heads of head_dim {} (head_dim 16..256, a power "
                     "of 2; at most 16 heads per kv head, 8 at head_dim 256)",
                     k.heads, k.kvHeads, k.headDim);
  std::tie(k.cos, k.sin) = placement.ropeTables(a.rope);
  k.rotaryDim = a.rope.rotaryDim;
  k.style = static_cast<kernels::RopeStyle>(a.rope.style);
  k.scale = static_cast<float>(a.scale);
  k.ownsKv = a.ownsKv;
  MOE_RETURN_IF_ERROR(placement.bind(k.q, a.q, "q"));
  MOE_RETURN_IF_ERROR(placement.bind(k.o, a.o, "o"));
  MOE_RETURN_IF_ERROR(placement.bind(k.qBias, a.qBias, "q_bias"));
  MOE_RETURN_IF_ERROR(placement.bind(k.oBias, a.oBias, "o_bias"));
  k.sinks = placement.bindFloat(fp32.sinks);
  k.hostSinks = placement.floatValues(k.sinks);
  k.qkNorm = a.qkNorm;
  k.qkEps = static_cast<float>(a.qkEps);
  MOE_RETURN_IF_ERROR(placement.bind(k.qNorm, a.qNorm, "q_norm"));
  k.window = a.window;
  MOE_RETURN_IF_ERROR(placement.bind(k.k, a.k, "k"));
  MOE_RETURN_IF_ERROR(placement.bind(k.v, a.v, "v"));
  MOE_RETURN_IF_ERROR(placement.bind(k.kBias, a.kBias, "k_bias"));
  MOE_RETURN_IF_ERROR(placement.bind(k.vBias, a.vBias, "v_bias"));
  MOE_RETURN_IF_ERROR(placement.bind(k.kNorm, a.kNorm, "k_norm"));
  k.cache = a.cache;
  k.fp8RowBytes =
      kv.dtype == model::KvDtype::fp8 ? kv.caches[a.cache].rowBytes : 0;
  return k;
}

Status runAttention(Step &step, const AttentionOp &k, const KvCache &cache,
                    DeviceValue &in, DeviceValue &out) {
  MOE_ASSIGN_OR_RETURN(auto x, step.bf16Of(in));
  int64_t rows = step.rows, qw = k.heads * k.headDim;
  int64_t kvw = k.kvHeads * k.headDim;
  MOE_ASSIGN_OR_RETURN(bf16 * q, step.alloc<bf16>(rows * qw, "attention q"));
  MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.q, qw, k.qBias, q));
  bf16 *key = nullptr, *value = nullptr;
  if (k.ownsKv) {
    MOE_ASSIGN_OR_RETURN(bf16 * kk,
                         step.alloc<bf16>(rows * kvw, "attention k"));
    MOE_ASSIGN_OR_RETURN(bf16 * vv,
                         step.alloc<bf16>(rows * kvw, "attention v"));
    MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.k, kvw, k.kBias, kk));
    MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.v, kvw, k.vBias, vv));
    key = kk;
    value = vv;
    if (k.qkNorm == plan::QKNorm::full_width) {
      MOE_RETURN_IF_ERROR(
          step.normInPlace(kk, k.kNorm, rows, kvw, k.qkEps, false));
    }
  }
  if (k.qkNorm == plan::QKNorm::full_width) {
    MOE_RETURN_IF_ERROR(step.normInPlace(q, k.qNorm, rows, qw, k.qkEps, false));
  }
  bool perHead = k.qkNorm == plan::QKNorm::per_head;
  if (k.rotaryDim > 0 || perHead) {
    kernels::RopeArgs rope;
    rope.q = q;
    rope.k = key;
    rope.rows = rows;
    rope.heads = static_cast<int>(k.heads);
    rope.kvHeads = key ? static_cast<int>(k.kvHeads) : 0;
    rope.headDim = static_cast<int>(k.headDim);
    rope.rotaryDim = static_cast<int>(k.rotaryDim);
    rope.style = k.style;
    rope.positions = k.rotaryDim > 0 ? step.positions : nullptr;
    rope.cos = step.floatArray(k.cos);
    rope.sin = step.floatArray(k.sin);
    rope.qNorm = perHead ? k.qNorm : nullptr;
    rope.kNorm = perHead && key ? k.kNorm : nullptr;
    rope.normEps = k.qkEps;
    MOE_CUDA_TRY(kernels::applyRope(rope, step.stream));
  }
  // The new rows in the cache's format: bf16 as projected, fp8 encoded.
  const uint8_t *keyRows = reinterpret_cast<const uint8_t *>(key);
  const uint8_t *valueRows = reinterpret_cast<const uint8_t *>(value);
  if (key && k.fp8RowBytes > 0) {
    MOE_ASSIGN_OR_RETURN(uint8_t * kRows,
                         step.alloc<uint8_t>(rows * k.fp8RowBytes, "fp8 k"));
    MOE_ASSIGN_OR_RETURN(uint8_t * vRows,
                         step.alloc<uint8_t>(rows * k.fp8RowBytes, "fp8 v"));
    int64_t scales = model::fp8ScalesOffset(k.kvHeads, k.headDim);
    for (auto [from, to] : {std::pair{key, kRows}, std::pair{value, vRows}})
      MOE_CUDA_TRY(kernels::encodeFp8Rows(
          from, rows, static_cast<int>(k.kvHeads), static_cast<int>(k.headDim),
          scales, k.fp8RowBytes, to, step.stream));
    keyRows = kRows;
    valueRows = vRows;
  }
  MOE_ASSIGN_OR_RETURN(bf16 * o, step.alloc<bf16>(rows * qw, "attention o"));
  kernels::AttentionArgs args;
  args.sinks = step.floatArray(k.sinks);
  args.heads = static_cast<int>(k.heads);
  args.kvHeads = static_cast<int>(k.kvHeads);
  args.headDim = static_cast<int>(k.headDim);
  args.fp8 = k.fp8RowBytes > 0;
  args.rowBytes = cache.rowBytes;
  args.seqStride = int64_t(step.maxContext) * cache.rowBytes;
  args.window = k.window;
  args.maxSpan = k.window > 0
                     ? int32_t(std::min<int64_t>(step.maxSpan, k.window))
                     : step.maxSpan;
  args.scale = k.scale;
  args.rowsPerSequence = step.rowsPerSlot;
  // Rows [first, first + count) against the K/V array kCache / vCache.
  auto attend = [&](int64_t first, int64_t count, const uint8_t *kCache,
                    const uint8_t *vCache) -> Status {
    args.q = q + first * qw;
    args.out = o + first * qw;
    args.k = kCache;
    args.v = vCache;
    args.sequences = step.attnSlots + first;
    args.positions = step.positions + first;
    args.rows = count;
    MOE_ASSIGN_OR_RETURN(
        auto partials, step.attentionPartials(kernels::attentionWorkspaceBytes(
                           count, args.heads, args.kvHeads, args.headDim,
                           args.maxSpan, step.smCount)));
    args.workspace = partials;
    MOE_CUDA_TRY(kernels::attention(args, step.smCount, step.stream));
    return Status::success();
  };
  int64_t gpuRows = step.kvPass.gpuRows;
  if (gpuRows > 0) {
    if (k.ownsKv)
      MOE_CUDA_TRY(kernels::appendKv(keyRows, valueRows, step.cacheRows,
                                     gpuRows, cache.rowBytes, cache.k, cache.v,
                                     step.stream));
    MOE_RETURN_IF_ERROR(attend(0, gpuRows, cache.k, cache.v));
  }
  // Decode rows of the plan's host-attended slots: the host's cores attend
  // them over the host KV, the GPU the rest.
  auto hostAttend = [&](const Event *kvStored) {
    HostAttention::Layer layer;
    layer.cache = {cache.hostK,
                   cache.hostV,
                   step.kv.dtype,
                   cache.rowBytes,
                   step.hostPages.pageTokens,
                   step.hostPages.pages.data(),
                   step.hostPages.pagesPerSlot};
    layer.heads = k.heads;
    layer.kvHeads = k.kvHeads;
    layer.headDim = k.headDim;
    layer.window = k.window;
    layer.scale = k.scale;
    layer.sinks = k.hostSinks.empty() ? nullptr : k.hostSinks.data();
    return step.host.attend(step.stream, kvStored, step.kvPass.host, layer, q,
                            o, step.layer, step.counters);
  };
  if (rows > gpuRows)
    MOE_RETURN_IF_ERROR(
        step.kv.attendHostSlots(step.stream, step.kvPass, step.maxContext,
                                step.cacheRows, step.poolRows, step.hostPages,
                                step.layer, cache, k.ownsKv ? keyRows : nullptr,
                                valueRows, step.counters, attend, hostAttend));
  MOE_ASSIGN_OR_RETURN(bf16 * y,
                       step.alloc<bf16>(rows * k.hidden, "attention out"));
  MOE_RETURN_IF_ERROR(step.linear(o, rows, qw, k.o, k.hidden, k.oBias, y));
  out.a = y;
  return Status::success();
}

} // namespace moe::cuda
