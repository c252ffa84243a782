#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/kernels/GroupedGemm.h"

#include <algorithm>
#include <functional>
#include <vector>

namespace moe::cuda {
namespace {

// How the GPU holds an experts op's gate|up (separate layouts: gate rows,
// then up rows) and down: `parts` matrices [partRows, cols] a Linear's
// [out, in].
struct MatrixShape {
  int64_t parts, partRows, cols;
};
MatrixShape gateUpShape(const model::ExpertsSpec &e) {
  return e.layout == plan::ExpertLayout::separate
             ? MatrixShape{2, e.width, e.hidden}
             : MatrixShape{1, 2 * e.width, e.hidden};
}
MatrixShape downShape(const model::ExpertsSpec &e) {
  return {1, e.hidden, e.width};
}

// Whether an optional per-expert param (a bias) is bound.
bool hasExperts(const ExpertWeight &weight) {
  return weight.resident || weight.streamed;
}

// Rows [row, row + rows) of one part of one expert as fp32 [rows, cols] (a
// Linear's [out, in]) into `out`; `scratch` is the calling thread's.
using RowsOf =
    std::function<void(int64_t expert, int64_t part, int64_t row, int64_t rows,
                       float *out, std::vector<float> &scratch)>;

// A stacked expert weight quantized expert by expert (WeightFormat.h), each
// expert one block of codes and scales, placed as the plan placed the
// param. Units of `unitRows` rows of one part (a multiple of fp8's 128-row
// blocks, or the whole part) are read and quantized in parallel, so no
// copy of the whole weight is made in fp32: a layer of Mixtral's has 8
// experts, one of GPT-OSS-120B's 8.5 GB of fp32, and all cores are wanted.
Result<kernels::QuantizedExpertMatrix>
placeQuantized(WeightPlacement &placement, model::WeightDtype dtype,
               int64_t experts, int64_t residentExperts, MatrixShape shape,
               int64_t unitRows, const RowsOf &rowsOf, const char *what) {
  int64_t parts = shape.parts, partRows = shape.partRows, cols = shape.cols;
  if (const char *why = model::unsupportedExpertColumns(dtype, cols))
    return makeError("{}: {}, not {}; plan with weight-dtype=bf16", what, why,
                     cols);
  model::QuantizedExpertLayout layout =
      model::quantizedExpertLayout(dtype, parts, partRows, cols);
  auto blocks =
      std::make_unique<std::byte[]>(size_t(experts * layout.bytes)); // zeroed
  constexpr int64_t kSlab = model::kFp8WeightBlock;
  int64_t units = (partRows + unitRows - 1) / unitRows;
  placement.threads().parallelFor(experts * parts * units, [&](int64_t first,
                                                               int64_t last) {
    std::vector<float> values(size_t(std::min(unitRows, partRows) * cols)),
        scratch;
    for (int64_t unit = first; unit < last; ++unit) {
      int64_t at = unit / units, row = unit % units * unitRows;
      int64_t expert = at / parts, part = at % parts;
      int64_t rows = std::min(unitRows, partRows - row);
      rowsOf(expert, part, row, rows, values.data(), scratch);
      auto *block =
          reinterpret_cast<uint8_t *>(blocks.get()) + expert * layout.bytes;
      for (int64_t slab = 0; slab < rows; slab += kSlab)
        model::quantizeExpertRows(dtype, layout, values.data() + slab * cols,
                                  part, row + slab,
                                  std::min(kSlab, rows - slab), cols, block);
    }
  });
  MOE_ASSIGN_OR_RETURN(
      auto at, placement.place({blocks.get(), size_t(experts * layout.bytes)},
                               experts, residentExperts, what));
  kernels::QuantizedExpertMatrix m;
  m.format = dtype == model::WeightDtype::fp8 ? kernels::ExpertFormat::fp8
                                              : kernels::ExpertFormat::mxfp4;
  m.resident = static_cast<const uint8_t *>(at.first);
  m.streamed = static_cast<const uint8_t *>(at.second);
  m.residentExperts = residentExperts;
  m.parts = parts;
  m.partRows = partRows;
  m.cols = cols;
  m.scaleOffset = layout.scaleOffset;
  m.stride = layout.bytes;
  return m;
}

// gate|up and down of quantized experts from the checkpoint's values, laid
// out as the bf16 path lays them out.
Status bindQuantizedExperts(WeightPlacement &placement,
                            const model::ExpertsSpec &e,
                            model::WeightDtype dtype, ExpertsOp &k) {
  const WeightSet &weights = placement.weights();
  int64_t n = e.experts;
  bool separate = e.layout == plan::ExpertLayout::separate;
  k.dtype = dtype;
  k.widened = placement.widenedExperts();
  // A matrix of the stacked params `partParams` (one per part) as the GPU
  // holds it. Separate layouts store each expert's [out, in]: units of
  // 128 rows are read as they are. The fused layout stores [in, out]: an
  // expert is read whole and transposed.
  auto place = [&](std::initializer_list<int> partParams, MatrixShape shape,
                   const char *what) {
    std::vector<int> params(partParams);
    int64_t rows = shape.partRows, cols = shape.cols;
    RowsOf rowsOf = [&](int64_t x, int64_t part, int64_t row, int64_t count,
                        float *out, std::vector<float> &stored) {
      size_t index = size_t(params[size_t(part)]);
      if (separate) {
        weights.readFloat32(index, (x * rows + row) * cols, count * cols, out);
        return;
      }
      stored.resize(size_t(rows * cols));
      weights.readFloat32(index, x * rows * cols, rows * cols, stored.data());
      constexpr int64_t kTile = 64; // transposed a tile at a time
      for (int64_t i0 = 0; i0 < cols; i0 += kTile)
        for (int64_t o0 = 0; o0 < rows; o0 += kTile)
          for (int64_t i = i0; i < std::min(cols, i0 + kTile); ++i)
            for (int64_t o = o0; o < std::min(rows, o0 + kTile); ++o)
              out[o * cols + i] = stored[size_t(i * rows + o)];
    };
    return placeQuantized(
        placement, dtype, n, placement.residentExperts(params[0], n), shape,
        separate ? model::kFp8WeightBlock : rows, rowsOf, what);
  };
  if (separate) {
    MOE_ASSIGN_OR_RETURN(
        k.gateUpQuantized,
        place({e.gate, e.up}, gateUpShape(e), "experts gate|up"));
  } else {
    MOE_ASSIGN_OR_RETURN(k.gateUpQuantized,
                         place({e.gateUp}, gateUpShape(e), "experts gate|up"));
  }
  MOE_ASSIGN_OR_RETURN(k.downQuantized,
                       place({e.down}, downShape(e), "experts down"));
  return Status::success();
}

} // namespace

int64_t widenedExpertElements(const model::ResolvedModel &model) {
  int64_t elements = 0;
  if (model.expertDtype == model::WeightDtype::bf16)
    return 0;
  for (const model::ResolvedOp &op : model.ops)
    if (const auto *e = std::get_if<model::ExpertsSpec>(&op.spec))
      elements = std::max(elements, e->experts * 2 * e->width * e->hidden);
  return elements;
}

QuantizedExpertBytes quantizedExpertBytes(const plan::Model &model,
                                          const model::ExpertsSpec &e,
                                          model::WeightDtype dtype) {
  int gateUpParam =
      e.layout == plan::ExpertLayout::separate ? e.gate : e.gateUp;
  QuantizedExpertBytes bytes;
  for (auto [param, shape] : {std::pair{gateUpParam, gateUpShape(e)},
                              std::pair{e.down, downShape(e)}}) {
    int64_t expert = model::quantizedExpertLayout(dtype, shape.parts,
                                                  shape.partRows, shape.cols)
                         .bytes;
    int64_t resident = residentExperts(*model.params()->Get(param), e.experts);
    bytes.resident += resident * expert;
    bytes.streamed += (e.experts - resident) * expert;
  }
  return bytes;
}

Result<ExpertsOp> bindExpertsOp(WeightPlacement &placement,
                                const model::ExpertsSpec &e,
                                model::WeightDtype dtype) {
  ExpertsOp k{};
  k.hidden = e.hidden;
  k.width = e.width;
  k.experts = e.experts;
  k.topK = e.topK;
  int64_t n = k.experts, h = k.hidden, w = k.width;
  if (n > 1024)
    return makeError("{} experts exceed the dispatch kernel's 1024", n);
  k.clamped = e.clamped();
  k.limit = static_cast<float>(e.limit);
  k.alpha = static_cast<float>(e.alpha);
  auto downBias = placement.bindExperts(e.downBias, n, "down_bias");
  if (!downBias)
    return downBias.error();
  k.downBias = *downBias;
  if (e.layout != plan::ExpertLayout::separate) {
    auto gateUpBias = placement.bindExperts(e.gateUpBias, n, "gate_up_bias");
    if (!gateUpBias)
      return gateUpBias.error();
    k.gateUpBias = *gateUpBias;
  }
  if (dtype != model::WeightDtype::bf16) {
    MOE_RETURN_IF_ERROR(bindQuantizedExperts(placement, e, dtype, k));
    return k;
  }
  const WeightSet &weights = placement.weights();
  ThreadPool &threads = placement.threads();
  HostBf16 gateUp(size_t(2 * n * w * h)), down(size_t(n * h * w));
  int gateUpParam = e.gateUp;
  if (e.layout == plan::ExpertLayout::separate) {
    // Gate and up rows of each expert, one after the other.
    for (auto [index, offset] :
         {std::pair{e.gate, int64_t{0}}, std::pair{e.up, w * h}}) {
      HostBf16 values = placement.readBf16(index);
      threads.parallelFor(n, [&](int64_t first, int64_t last) {
        for (int64_t x = first; x < last; ++x)
          std::copy_n(values.data.get() + x * w * h, w * h,
                      gateUp.data.get() + 2 * x * w * h + offset);
      });
    }
    down = placement.readBf16(e.down);
    gateUpParam = e.gate;
  } else {
    // gate_up [E, H, 2I] and down [E, I, H] are [in, out]: transposed once.
    std::vector<float> values = weights.toFloat32(e.gateUp);
    threads.parallelFor(n, [&](int64_t first, int64_t last) {
      for (int64_t x = first; x < last; ++x)
        for (int64_t j = 0; j < h; ++j)
          for (int64_t c = 0; c < 2 * w; ++c)
            gateUp.data[(x * 2 * w + c) * h + j] =
                __float2bfloat16_rn(values[(x * h + j) * 2 * w + c]);
    });
    values = weights.toFloat32(e.down);
    threads.parallelFor(n, [&](int64_t first, int64_t last) {
      for (int64_t x = first; x < last; ++x)
        for (int64_t i = 0; i < w; ++i)
          for (int64_t j = 0; j < h; ++j)
            down.data[(x * h + j) * w + i] =
                __float2bfloat16_rn(values[(x * w + i) * h + j]);
    });
  }
  auto gu = placement.place(
      gateUp, n, placement.residentExperts(gateUpParam, n), "experts gate|up");
  if (!gu)
    return gu.error();
  auto d = placement.place(down, n, placement.residentExperts(e.down, n),
                           "experts down");
  if (!d)
    return d.error();
  k.gateUp = *gu;
  k.down = *d;
  return k;
}

bool expertsWaitForHost(const ExpertsOp &k, int64_t rows,
                        int64_t perExpertGemmRows) {
  return rows * k.topK >= perExpertGemmRows * k.experts;
}

Status runExperts(Step &step, const ExpertsOp &k, DeviceValue &in,
                  const DeviceValue &weights, const DeviceValue &indices,
                  DeviceValue &out) {
  MOE_ASSIGN_OR_RETURN(auto x, step.bf16Of(in));
  int64_t rows = step.rows, pairs = rows * k.topK;
  int64_t h = k.hidden, w = k.width;
  MOE_ASSIGN_OR_RETURN(int32_t * counts,
                       step.alloc<int32_t>(k.experts, "expert counts"));
  MOE_ASSIGN_OR_RETURN(int32_t * offsets,
                       step.alloc<int32_t>(k.experts + 1, "expert offsets"));
  MOE_ASSIGN_OR_RETURN(int32_t * slotToPair,
                       step.alloc<int32_t>(pairs, "slot to pair"));
  MOE_ASSIGN_OR_RETURN(int32_t * pairToSlot,
                       step.alloc<int32_t>(pairs, "pair to slot"));
  MOE_ASSIGN_OR_RETURN(bf16 * xs, step.alloc<bf16>(pairs * h, "expert inputs"));
  // Both with the slack rows of fp8 GEMMs (fp8ExpertsGemm below).
  const int64_t slack = kernels::kFp8GemmSlackRows;
  MOE_ASSIGN_OR_RETURN(
      bf16 * gu, step.alloc<bf16>((pairs + slack) * 2 * w, "expert gate|up"));
  MOE_ASSIGN_OR_RETURN(bf16 * act,
                       step.alloc<bf16>(pairs * w, "expert activations"));
  MOE_ASSIGN_OR_RETURN(bf16 * down,
                       step.alloc<bf16>((pairs + slack) * h, "expert outputs"));
  MOE_ASSIGN_OR_RETURN(float *sum, step.alloc<float>(rows * h, "expert sum"));
  kernels::DispatchArgs dispatch;
  dispatch.indices = indices.i;
  dispatch.rows = rows;
  dispatch.topK = static_cast<int>(k.topK);
  dispatch.experts = static_cast<int>(k.experts);
  dispatch.counts = counts;
  dispatch.offsets = offsets;
  dispatch.slotToPair = slotToPair;
  dispatch.pairToSlot = pairToSlot;
  MOE_CUDA_TRY(kernels::buildDispatch(dispatch, step.stream));
  MOE_CUDA_TRY(kernels::gatherRows(x, slotToPair, pairs, dispatch.topK, h, xs,
                                   step.stream));
  // Small groups (decode) run as one grouped launch per GEMM with the sizes
  // left on the device, so nothing waits. Large groups (prefill, or B over
  // 128 per expert) run one cuBLASLt GEMM per expert: its Hopper kernels are
  // ~3x the grouped kernel's mma.sync rate there (686 against ~200 TFLOP/s
  // at 512 rows), which is worth one host wait per layer for the counts.
  bool perExpert = expertsWaitForHost(k, rows, step.perExpertGemmRows);
  std::vector<int32_t> hostOffsets;
  if (perExpert) {
    hostOffsets.resize(k.experts + 1);
    MOE_CUDA_TRY(cudaMemcpyAsync(hostOffsets.data(), offsets,
                                 hostOffsets.size() * sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, step.stream));
    MOE_CUDA_TRY(cudaStreamSynchronize(step.stream));
  }
  // y = x · Wᵀ (+ bias) for every expert's rows. Quantized experts are
  // read as codes by the grouped kernel. For the per-expert GEMMs, fp8
  // experts without biases take fp8 inputs (W8A8: cuBLASLt's block-scaled
  // FP8 GEMM runs at about twice the bf16 rate on large groups); other
  // quantized experts are widened into k.widened first.
  bool quantized = k.dtype != model::WeightDtype::bf16;
  bool fp8Inputs = perExpert && step.fp8ExpertInputs &&
                   k.dtype == model::WeightDtype::fp8 &&
                   !hasExperts(k.gateUpBias) && !hasExperts(k.downBias);
  // Each part of each expert (gate and up apart: their scale blocks start
  // at each part) as one FP8 GEMM a micro-batch, into its columns of y.
  // The inputs' codes and scales go to `idle`, a buffer of at least
  // (pairs + kFp8GemmSlackRows) · kDim bf16 not in use during the GEMM (the
  // down projection's output for gate|up, gate|up's for the down
  // projection), so the step needs hardly more memory than the bf16
  // path's. Each GEMM runs fp8GemmRows(m) rows (QuantizedExperts.h). A
  // GEMM cuBLASLt has no FP8 algorithm for runs in bf16 on the layer's
  // experts widened (once).
  auto fp8ExpertsGemm =
      [&](const bf16 *in, const kernels::QuantizedExpertMatrix &weight,
          int64_t n, int64_t kDim, bf16 *idle, bf16 *y) -> Status {
    auto *codes = reinterpret_cast<uint8_t *>(idle);
    auto *inputScales = reinterpret_cast<float *>(
        codes + (pairs + kernels::kFp8GemmSlackRows) * kDim);
    MOE_CUDA_TRY(kernels::quantizeExpertInputs(
        in, pairs, kDim, offsets, dispatch.experts, step.expertMicroBatch,
        codes, inputScales, step.stream));
    const int64_t partScales = (weight.partRows + model::kFp8WeightBlock - 1) /
                               model::kFp8WeightBlock *
                               kernels::fp8GemmScaleRowLength(weight.cols);
    MOE_ASSIGN_OR_RETURN(
        float *weightScales,
        step.alloc<float>(k.experts * weight.parts * partScales,
                          "fp8 expert weight scales"));
    MOE_CUDA_TRY(kernels::gatherFp8GemmScales(weight, k.experts, weightScales,
                                              step.stream));
    bool widened = false;
    for (int64_t e = 0; e < k.experts; ++e) {
      const uint8_t *block =
          e < weight.residentExperts
              ? weight.resident + e * weight.stride
              : weight.streamed + (e - weight.residentExperts) * weight.stride;
      for (int64_t first = hostOffsets[e], m = 0; first < hostOffsets[e + 1];
           first += m) {
        m = std::min<int64_t>(step.expertMicroBatch,
                              hostOffsets[e + 1] - first);
        for (int64_t part = 0; part < weight.parts; ++part) {
          GemmArgs args{.y = y + first * n + part * weight.partRows,
                        .m = kernels::fp8GemmRows(m),
                        .n = weight.partRows,
                        .k = kDim,
                        .ldy = n};
          args.fp8 = {
              .x = codes + first * kDim,
              .xScales = inputScales + kernels::fp8GemmScalesAt(first, kDim),
              .w = block + part * weight.partRows * weight.cols,
              .wScales = weightScales + (e * weight.parts + part) * partScales};
          MOE_ASSIGN_OR_RETURN(bool fp8Runs, step.gemm.supports(args));
          if (!fp8Runs) {
            if (!widened)
              MOE_CUDA_TRY(kernels::widenExperts(weight, k.experts, k.widened,
                                                 step.stream));
            widened = true;
            args.fp8 = {};
            args.m = m;
            args.x = in + first * kDim;
            args.w = k.widened + (e * n + part * weight.partRows) * kDim;
          }
          MOE_RETURN_IF_ERROR(step.gemm.run(args, step.stream));
        }
      }
    }
    return Status::success();
  };
  auto expertsGemm = [&](const bf16 *in, const ExpertWeight &bf16Weight,
                         const kernels::QuantizedExpertMatrix &quantizedWeight,
                         const ExpertWeight &bias, int64_t n, int64_t kDim,
                         bf16 *idle, bf16 *y) -> Status {
    if (!perExpert) {
      kernels::GroupedGemmArgs args;
      args.x = in;
      args.offsets = offsets;
      if (quantized)
        args.quantizedWeight = quantizedWeight;
      else
        args.weight = bf16Weight;
      args.bias = bias;
      args.y = y;
      args.rows = pairs;
      args.experts = dispatch.experts;
      args.n = n;
      args.k = kDim;
      MOE_CUDA_TRY(kernels::groupedGemm(args, step.stream));
      return Status::success();
    }
    if (fp8Inputs)
      return fp8ExpertsGemm(in, quantizedWeight, n, kDim, idle, y);
    ExpertWeight weight = bf16Weight;
    if (quantized) {
      MOE_CUDA_TRY(kernels::widenExperts(quantizedWeight, k.experts, k.widened,
                                         step.stream));
      weight = {k.widened, nullptr, k.experts, n * kDim};
    }
    // At most b_e rows a GEMM, as the plan priced them.
    for (int64_t e = 0; e < k.experts; ++e)
      for (int64_t first = hostOffsets[e], m = 0; first < hostOffsets[e + 1];
           first += m) {
        m = std::min<int64_t>(step.expertMicroBatch,
                              hostOffsets[e + 1] - first);
        MOE_RETURN_IF_ERROR(step.linear(in + first * kDim, m, kDim,
                                        expertBlock(weight, e), n,
                                        expertBlock(bias, e), y + first * n));
      }
    return Status::success();
  };
  MOE_RETURN_IF_ERROR(expertsGemm(xs, k.gateUp, k.gateUpQuantized, k.gateUpBias,
                                  2 * w, h, down, gu));
  if (k.clamped)
    MOE_CUDA_TRY(kernels::swigluClamped(gu, act, pairs, w, k.limit, k.alpha,
                                        step.stream));
  else
    MOE_CUDA_TRY(kernels::siluMul(gu, act, pairs, w, step.stream));
  MOE_RETURN_IF_ERROR(
      expertsGemm(act, k.down, k.downQuantized, k.downBias, h, w, gu, down));
  kernels::CombineArgs combine;
  combine.expertOut = down;
  combine.weights = weights.f;
  combine.indices = indices.i;
  combine.pairToSlot = pairToSlot;
  combine.rows = rows;
  combine.topK = dispatch.topK;
  combine.width = h;
  combine.out = sum;
  MOE_CUDA_TRY(kernels::combineExperts(combine, step.stream));
  out.f = sum;
  return Status::success();
}

} // namespace moe::cuda
