#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/kernels/MlaAttention.h"

#include <algorithm>
#include <tuple>

namespace moe::cuda {

Result<MlaOp> bindMlaOp(WeightPlacement &placement,
                        const model::LatentAttentionSpec &a,
                        const KvCaches &kv) {
  MlaOp k{};
  k.hidden = a.hidden;
  k.heads = a.heads;
  k.qLoraRank = a.qLoraRank;
  k.latent = a.kvLoraRank;
  k.nope = a.nope;
  k.ropeDim = a.ropeDim;
  k.vDim = a.vDim;
  k.fp8 = kv.dtype == model::KvDtype::fp8;
  if (k.nope <= 0)
    return makeError("MLA dimensions are invalid");
  if (!kernels::mlaAttentionSupports(static_cast<int>(k.heads),
                                     static_cast<int>(k.latent),
                                     static_cast<int>(k.ropeDim), k.fp8))
    return makeError("the MLA kernel does not support {} heads with "
                     "kv_lora_rank {} and qk_rope_head_dim {} ({} cache)",
                     k.heads, k.latent, k.ropeDim,
                     model::kvDtypeName(kv.dtype));
  std::tie(k.cos, k.sin) = placement.ropeTables(a.rope);
  k.style = static_cast<kernels::RopeStyle>(a.rope.style);
  k.scale = static_cast<float>(a.scale);
  k.eps = static_cast<float>(a.eps);
  MOE_RETURN_IF_ERROR(placement.bind(k.qA, a.qA, "q_a"));
  MOE_RETURN_IF_ERROR(placement.bind(k.qANorm, a.qANorm, "q_a_norm"));
  MOE_RETURN_IF_ERROR(placement.bind(k.qB, a.qB, "q_b"));
  MOE_RETURN_IF_ERROR(placement.bind(k.q, a.q, "q"));
  MOE_RETURN_IF_ERROR(placement.bind(k.kvA, a.kvA, "kv_a"));
  MOE_RETURN_IF_ERROR(placement.bind(k.kvANorm, a.kvANorm, "kv_a_norm"));
  MOE_RETURN_IF_ERROR(placement.bind(k.o, a.o, "o"));
  // kv_b [heads·(nope + vDim), latent] split per head into W_UK,hᵀ
  // [latent, nope] (transposed: the GEMMs take [out, in]) and W_UV,h
  // [vDim, latent], in one buffer placed where the plan put kv_b.
  int64_t perHead = (k.nope + k.vDim) * k.latent;
  HostBf16 kvB = placement.readBf16(a.kvB);
  HostBf16 split(kvB.size);
  bf16 *wUkT = split.data.get(), *wUv = wUkT + k.heads * k.latent * k.nope;
  for (int64_t h = 0; h < k.heads; ++h) {
    const bf16 *block = kvB.data.get() + h * perHead;
    for (int64_t d = 0; d < k.nope; ++d)
      for (int64_t c = 0; c < k.latent; ++c)
        wUkT[(h * k.latent + c) * k.nope + d] = block[d * k.latent + c];
    std::copy_n(block + k.nope * k.latent, k.vDim * k.latent,
                wUv + h * k.vDim * k.latent);
  }
  auto device = placement.isStreamed(a.kvB) ? placement.stream(split, "kv_b")
                                            : placement.upload(split, "kv_b");
  if (!device)
    return device.error();
  k.wUkT = *device;
  k.wUv = *device + k.heads * k.latent * k.nope;
  k.cache = kv.latentCache(a.cache);
  return k;
}

Status runMla(Step &step, const MlaOp &k, const KvCache &cache, DeviceValue &in,
              DeviceValue &out) {
  MOE_ASSIGN_OR_RETURN(auto x, step.bf16Of(in));
  int64_t rows = step.rows, heads = k.heads, r = k.latent;
  int64_t qkDim = k.nope + k.ropeDim, qw = heads * qkDim;
  int64_t cw = r + k.ropeDim;
  auto copyColumns = [&](bf16 *to, int64_t toWidth, const bf16 *from,
                         int64_t fromWidth, int64_t width, int64_t count) {
    return cudaMemcpy2DAsync(to, toWidth * sizeof(bf16), from,
                             fromWidth * sizeof(bf16), width * sizeof(bf16),
                             count, cudaMemcpyDeviceToDevice, step.stream);
  };
  MOE_ASSIGN_OR_RETURN(bf16 * q, step.alloc<bf16>(rows * qw, "mla q"));
  if (k.qLoraRank > 0) {
    MOE_ASSIGN_OR_RETURN(bf16 * qa,
                         step.alloc<bf16>(rows * k.qLoraRank, "mla q_a"));
    MOE_RETURN_IF_ERROR(
        step.linear(x, rows, k.hidden, k.qA, k.qLoraRank, nullptr, qa));
    MOE_RETURN_IF_ERROR(
        step.normInPlace(qa, k.qANorm, rows, k.qLoraRank, k.eps, true));
    MOE_RETURN_IF_ERROR(
        step.linear(qa, rows, k.qLoraRank, k.qB, qw, nullptr, q));
  } else {
    MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.q, qw, nullptr, q));
  }
  // The cache rows [normed latent | roped k_pe] and the roped q_pe.
  MOE_ASSIGN_OR_RETURN(bf16 * kvA, step.alloc<bf16>(rows * cw, "mla kv_a"));
  MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.kvA, cw, nullptr, kvA));
  MOE_ASSIGN_OR_RETURN(bf16 * latent, step.alloc<bf16>(rows * r, "mla latent"));
  MOE_ASSIGN_OR_RETURN(bf16 * kPe,
                       step.alloc<bf16>(rows * k.ropeDim, "mla k_pe"));
  MOE_ASSIGN_OR_RETURN(bf16 * qPe,
                       step.alloc<bf16>(rows * heads * k.ropeDim, "mla q_pe"));
  MOE_CUDA_TRY(copyColumns(latent, r, kvA, cw, r, rows));
  MOE_CUDA_TRY(copyColumns(kPe, k.ropeDim, kvA + r, cw, k.ropeDim, rows));
  MOE_CUDA_TRY(
      copyColumns(qPe, k.ropeDim, q + k.nope, qkDim, k.ropeDim, rows * heads));
  MOE_RETURN_IF_ERROR(
      step.normInPlace(latent, k.kvANorm, rows, r, k.eps, true));
  kernels::RopeArgs rope;
  rope.q = qPe;
  rope.k = kPe;
  rope.rows = rows;
  rope.heads = static_cast<int>(heads);
  rope.kvHeads = 1;
  rope.headDim = static_cast<int>(k.ropeDim);
  rope.rotaryDim = static_cast<int>(k.ropeDim);
  rope.style = k.style;
  rope.positions = step.positions;
  rope.cos = step.floatArray(k.cos);
  rope.sin = step.floatArray(k.sin);
  MOE_CUDA_TRY(kernels::applyRope(rope, step.stream));
  MOE_ASSIGN_OR_RETURN(bf16 * rowsOut,
                       step.alloc<bf16>(rows * cw, "mla cache rows"));
  MOE_CUDA_TRY(copyColumns(rowsOut, cw, latent, r, r, rows));
  MOE_CUDA_TRY(copyColumns(rowsOut + r, cw, kPe, k.ropeDim, k.ropeDim, rows));
  // The new rows in the cache's format: fp8 scales each ropeDim values.
  const uint8_t *cacheRowsOut = reinterpret_cast<const uint8_t *>(rowsOut);
  if (k.fp8) {
    MOE_ASSIGN_OR_RETURN(
        uint8_t * encoded,
        step.alloc<uint8_t>(rows * cache.rowBytes, "mla fp8 cache rows"));
    int vectors = static_cast<int>(cw / k.ropeDim);
    MOE_CUDA_TRY(kernels::encodeFp8Rows(
        rowsOut, rows, vectors, static_cast<int>(k.ropeDim),
        model::fp8ScalesOffset(vectors, k.ropeDim), cache.rowBytes, encoded,
        step.stream));
    cacheRowsOut = encoded;
  }

  // Absorbed query q̃_h = W_UK,hᵀ q_nope,h: one batched GEMM over the heads,
  // head h reading q's columns [h·qkDim, h·qkDim + nope) and writing
  // q̃'s [h·r, (h + 1)·r), so q̃ comes out [rows, heads, r].
  MOE_ASSIGN_OR_RETURN(bf16 * qLatent, step.alloc<bf16>(rows * heads * r,
                                                        "mla absorbed q rows"));
  MOE_RETURN_IF_ERROR(step.gemm.run({.x = q,
                                     .w = k.wUkT,
                                     .y = qLatent,
                                     .m = rows,
                                     .n = r,
                                     .k = k.nope,
                                     .ldy = heads * r,
                                     .ldx = qw,
                                     .batch = heads,
                                     .xStride = qkDim,
                                     .wStride = r * k.nope,
                                     .yStride = r},
                                    step.stream));

  MOE_ASSIGN_OR_RETURN(bf16 * mixed,
                       step.alloc<bf16>(rows * heads * r, "mla attention"));
  kernels::MlaAttentionArgs args;
  args.heads = static_cast<int>(heads);
  args.latentDim = static_cast<int>(r);
  args.ropeDim = static_cast<int>(k.ropeDim);
  args.fp8 = k.fp8;
  args.rowBytes = cache.rowBytes;
  args.scalesOffset = model::fp8ScalesOffset(cw / k.ropeDim, k.ropeDim);
  args.seqStride = int64_t(step.maxContext) * cache.rowBytes;
  args.maxSpan = step.maxSpan;
  args.scale = k.scale;
  auto attend = [&](int64_t first, int64_t count, const uint8_t *kCache,
                    const uint8_t *) -> Status {
    args.qLatent = qLatent + first * heads * r;
    args.qRope = qPe + first * heads * k.ropeDim;
    args.cache = kCache;
    args.out = mixed + first * heads * r;
    args.sequences = step.attnSlots + first;
    args.positions = step.positions + first;
    args.rows = count;
    MOE_ASSIGN_OR_RETURN(
        auto partials,
        step.attentionPartials(kernels::mlaAttentionWorkspaceBytes(
            count, args.heads, args.latentDim, args.maxSpan, step.smCount)));
    args.workspace = partials;
    MOE_CUDA_TRY(kernels::mlaAttention(args, step.smCount, step.stream));
    return Status::success();
  };
  int64_t gpuRows = step.kvPass.gpuRows;
  if (gpuRows > 0) {
    MOE_CUDA_TRY(kernels::appendKv(cacheRowsOut, nullptr, step.cacheRows,
                                   gpuRows, cache.rowBytes, cache.k, nullptr,
                                   step.stream));
    MOE_RETURN_IF_ERROR(attend(0, gpuRows, cache.k, nullptr));
  }
  if (rows > gpuRows)
    MOE_RETURN_IF_ERROR(step.kv.attendHostSlots(
        step.stream, step.kvPass, step.maxContext, step.cacheRows,
        step.poolRows, step.hostPages, step.layer, cache, cacheRowsOut, nullptr,
        step.counters, attend,
        [](const Event *) -> Result<HostAttention::Outputs> {
          // prepare refuses plans that would give MLA rows to the host.
          return makeError("the host's cores do not attend MLA");
        }));

  // o_h = W_UV,h · mixed_h, batched over the heads as the absorption is:
  // o comes out [rows, heads·vDim] for the output projection.
  MOE_ASSIGN_OR_RETURN(bf16 * o,
                       step.alloc<bf16>(rows * heads * k.vDim, "mla values"));
  MOE_RETURN_IF_ERROR(step.gemm.run({.x = mixed,
                                     .w = k.wUv,
                                     .y = o,
                                     .m = rows,
                                     .n = k.vDim,
                                     .k = r,
                                     .ldy = heads * k.vDim,
                                     .ldx = heads * r,
                                     .batch = heads,
                                     .xStride = r,
                                     .wStride = k.vDim * r,
                                     .yStride = k.vDim},
                                    step.stream));
  MOE_ASSIGN_OR_RETURN(bf16 * y, step.alloc<bf16>(rows * k.hidden, "mla out"));
  MOE_RETURN_IF_ERROR(
      step.linear(o, rows, heads * k.vDim, k.o, k.hidden, nullptr, y));
  out.a = y;
  return Status::success();
}

} // namespace moe::cuda
