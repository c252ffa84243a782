#include "runtime/backends/cuda/backend/ops/Ops.h"

#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/kernels/GroupedGemm.h"

#include <algorithm>
#include <functional>
#include <vector>

namespace moe::cuda {
namespace {

// The fp32 [partRows, cols] matrix (a Linear's [out, in]) of one part of
// one expert.
using MatrixOf = std::function<const float *(int64_t expert, int64_t part)>;

// A stacked expert weight quantized expert by expert (WeightFormat.h), its
// codes placed as the plan placed the param and its scales, small, all on
// the GPU. Slabs of 128 rows (whole scale blocks) are quantized in
// parallel: a layer of Mixtral's has 8 experts, and all cores are wanted.
Result<kernels::Fp8ExpertMatrix>
placeFp8(WeightPlacement &placement, int64_t experts, int64_t residentExperts,
         int64_t parts, int64_t partRows, int64_t cols,
         const MatrixOf &matrixOf, const char *what) {
  if (cols % 16 != 0)
    return makeError("{}: fp8 expert weights need rows of a multiple of 16 "
                     "elements, not {}; plan with weight-dtype=bf16",
                     what, cols);
  int64_t matrix = partRows * cols;
  int64_t scaleCount = model::fp8ScaleCount(partRows, cols);
  auto codes = std::make_unique_for_overwrite<std::byte[]>(
      size_t(experts * parts * matrix));
  std::vector<float> scales(size_t(experts * parts * scaleCount));
  constexpr int64_t kSlab = model::kFp8WeightBlock;
  int64_t slabs = (partRows + kSlab - 1) / kSlab;
  int64_t scalesPerSlab = scaleCount / slabs;
  placement.threads().parallelFor(experts * parts * slabs, [&](int64_t first,
                                                               int64_t last) {
    for (int64_t unit = first; unit < last; ++unit) {
      int64_t at = unit / slabs, slab = unit % slabs;
      int64_t row = slab * kSlab;
      model::quantizeFp8Matrix(
          matrixOf(at / parts, at % parts) + row * cols,
          std::min(kSlab, partRows - row), cols,
          reinterpret_cast<uint8_t *>(codes.get() + at * matrix + row * cols),
          scales.data() + at * scaleCount + slab * scalesPerSlab);
    }
  });
  MOE_ASSIGN_OR_RETURN(
      auto at, placement.place({codes.get(), size_t(experts * parts * matrix)},
                               experts, residentExperts, what));
  MOE_ASSIGN_OR_RETURN(
      const void *deviceScales,
      placement.upload(std::as_bytes(std::span(scales)), "fp8 expert scales"));
  kernels::Fp8ExpertMatrix m;
  m.resident = static_cast<const uint8_t *>(at.first);
  m.streamed = static_cast<const uint8_t *>(at.second);
  m.residentExperts = residentExperts;
  m.parts = parts;
  m.partRows = partRows;
  m.cols = cols;
  m.scales = static_cast<const float *>(deviceScales);
  return m;
}

// gate|up and down of fp8 experts from the checkpoint's values, laid out as
// the bf16 path lays them out.
Status bindFp8Experts(WeightPlacement &placement, const model::ExpertsSpec &e,
                      ExpertsOp &k) {
  const WeightSet &weights = placement.weights();
  int64_t n = e.experts, h = e.hidden, w = e.width;
  k.fp8 = true;
  k.widened = placement.widenedExperts();
  if (e.layout == plan::ExpertLayout::separate) {
    std::vector<float> gate = weights.toFloat32(e.gate);
    std::vector<float> up = weights.toFloat32(e.up);
    MOE_ASSIGN_OR_RETURN(
        k.gateUpFp8,
        placeFp8(
            placement, n, placement.residentExperts(e.gate, n), 2, w, h,
            [&](int64_t x, int64_t part) {
              return (part == 0 ? gate : up).data() + x * w * h;
            },
            "experts gate|up"));
    gate = {}, up = {};
    std::vector<float> down = weights.toFloat32(e.down);
    MOE_ASSIGN_OR_RETURN(
        k.downFp8,
        placeFp8(
            placement, n, placement.residentExperts(e.down, n), 1, h, w,
            [&](int64_t x, int64_t) { return down.data() + x * h * w; },
            "experts down"));
    return Status::success();
  }
  // gate_up [E, H, 2I] and down [E, I, H] are [in, out]: transposed first.
  auto transposed = [&](int index, int64_t rows, int64_t cols) {
    std::vector<float> values = weights.toFloat32(index), out(values.size());
    placement.threads().parallelFor(n * cols, [&](int64_t first, int64_t last) {
      for (int64_t unit = first; unit < last; ++unit) {
        int64_t x = unit / cols, c = unit % cols;
        for (int64_t r = 0; r < rows; ++r)
          out[(x * cols + c) * rows + r] = values[(x * rows + r) * cols + c];
      }
    });
    return out;
  };
  std::vector<float> gateUp = transposed(e.gateUp, h, 2 * w);
  MOE_ASSIGN_OR_RETURN(
      k.gateUpFp8,
      placeFp8(
          placement, n, placement.residentExperts(e.gateUp, n), 1, 2 * w, h,
          [&](int64_t x, int64_t) { return gateUp.data() + x * 2 * w * h; },
          "experts gate|up"));
  gateUp = {};
  std::vector<float> down = transposed(e.down, w, h);
  MOE_ASSIGN_OR_RETURN(
      k.downFp8,
      placeFp8(
          placement, n, placement.residentExperts(e.down, n), 1, h, w,
          [&](int64_t x, int64_t) { return down.data() + x * h * w; },
          "experts down"));
  return Status::success();
}

} // namespace

int64_t widenedExpertElements(const model::ResolvedModel &model) {
  int64_t elements = 0;
  if (model.expertDtype != model::WeightDtype::fp8)
    return 0;
  for (const model::ResolvedOp &op : model.ops)
    if (const auto *e = std::get_if<model::ExpertsSpec>(&op.spec))
      elements = std::max(elements, e->experts * 2 * e->width * e->hidden);
  return elements;
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
  if (dtype == model::WeightDtype::fp8) {
    MOE_RETURN_IF_ERROR(bindFp8Experts(placement, e, k));
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

int64_t rowBytes(const ExpertsOp &k) {
  return k.topK * ((2 * k.hidden + 3 * k.width) * kBf16Bytes + 8) +
         k.hidden * (4 + kBf16Bytes);
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
  MOE_ASSIGN_OR_RETURN(bf16 * gu,
                       step.alloc<bf16>(pairs * 2 * w, "expert gate|up"));
  MOE_ASSIGN_OR_RETURN(bf16 * act,
                       step.alloc<bf16>(pairs * w, "expert activations"));
  MOE_ASSIGN_OR_RETURN(bf16 * down,
                       step.alloc<bf16>(pairs * h, "expert outputs"));
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
  // y = x · Wᵀ (+ bias) for every expert's rows. fp8 experts are read as
  // codes by the grouped kernel, and widened into k.widened for the
  // per-expert GEMMs.
  auto expertsGemm = [&](const bf16 *in, const ExpertWeight &bf16Weight,
                         const kernels::Fp8ExpertMatrix &fp8Weight,
                         const ExpertWeight &bias, int64_t n, int64_t kDim,
                         bf16 *y) -> Status {
    if (!perExpert) {
      kernels::GroupedGemmArgs args;
      args.x = in;
      args.offsets = offsets;
      if (k.fp8)
        args.fp8Weight = fp8Weight;
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
    ExpertWeight weight = bf16Weight;
    if (k.fp8) {
      MOE_CUDA_TRY(kernels::widenFp8Experts(fp8Weight, k.experts, k.widened,
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
  MOE_RETURN_IF_ERROR(
      expertsGemm(xs, k.gateUp, k.gateUpFp8, k.gateUpBias, 2 * w, h, gu));
  if (k.clamped)
    MOE_CUDA_TRY(kernels::swigluClamped(gu, act, pairs, w, k.limit, k.alpha,
                                        step.stream));
  else
    MOE_CUDA_TRY(kernels::siluMul(gu, act, pairs, w, step.stream));
  MOE_RETURN_IF_ERROR(
      expertsGemm(act, k.down, k.downFp8, k.downBias, h, w, down));
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
