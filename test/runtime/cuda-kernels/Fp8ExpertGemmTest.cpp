// W8A8 per-expert GEMMs: inputs quantized by quantizeExpertInputs, the
// experts' block scales arranged by gatherFp8GemmScales, cuBLASLt's
// block-scaled FP8 GEMM run by GemmRunner, one GEMM per micro-batch and
// part as the experts op runs them, against the same product in double
// over the values the codes stand for.
#include "runtime/backends/cuda/GemmRunner.h"
#include "runtime/backends/cuda/kernels/QuantizedExperts.h"
#include "runtime/model/WeightFormat.h"

#include <cuda_fp8.h>

#include "test/runtime/cuda/CudaTestSupport.h"

namespace moe::cuda {
namespace {

using test::bf16ToFloat;
using test::check;
using test::floatToBf16;
using test::relativeL2;
using test::upload;

struct Problem {
  int64_t parts, partRows, k, microBatch;
  std::vector<int32_t> groupRows; // per expert
};

// y [rows, parts·partRows] for expert groups of x, as runExperts makes it:
// GEMMs of row counts cuBLASLt does not run (37, 5, 130, 3, 9, 17) made
// whole with slack rows.
void expectMatchesReference(const Problem &p) {
  MOE_REQUIRE_CUDA_DEVICE();
  const int experts = int(p.groupRows.size());
  const int64_t n = p.parts * p.partRows, k = p.k;
  std::vector<int32_t> offsets{0};
  for (int32_t rows : p.groupRows)
    offsets.push_back(offsets.back() + rows);
  const int64_t rows = offsets.back();
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0, 1);
  std::uniform_int_distribution<int> exponent(-4, 4);
  // Blocks, rows and groups of 128 inputs scaled by 2^-4 .. 2^4, so that a
  // scale read from the wrong place shows.
  auto scaled = [&] { return std::ldexp(1.0f, exponent(rng)); };
  const int64_t kBlocks = (k + 127) / 128, nBlocks = (p.partRows + 127) / 128;
  model::QuantizedExpertLayout layout = model::quantizedExpertLayout(
      model::WeightDtype::fp8, p.parts, p.partRows, k);
  std::vector<uint8_t> blocks(size_t(experts * layout.bytes));
  std::vector<float> weights(size_t(experts * n * k)); // as the codes say
  for (int e = 0; e < experts; ++e) {
    std::vector<float> block(size_t(p.parts * nBlocks * kBlocks));
    for (float &s : block)
      s = scaled();
    float *values = weights.data() + e * n * k;
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c)
        values[r * k + c] =
            0.05f * normal(rng) *
            block[size_t((r / p.partRows * nBlocks + r % p.partRows / 128) *
                             kBlocks +
                         c / 128)];
    uint8_t *expert = blocks.data() + e * layout.bytes;
    model::quantizeExpert(model::WeightDtype::fp8, layout, values, p.parts,
                          p.partRows, k, expert);
    const float *scales =
        reinterpret_cast<const float *>(expert + layout.scaleOffset);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c)
        values[r * k + c] =
            float(*reinterpret_cast<const __nv_fp8_e4m3 *>(
                &expert[r * k + c])) *
            scales[(r / p.partRows * nBlocks + r % p.partRows / 128) *
                       kBlocks +
                   c / 128];
  }
  // Inputs, and what their fp8 codes stand for (amax / 448 a group).
  std::vector<uint16_t> x(size_t(rows * k));
  std::vector<float> inputs(x.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < kBlocks; ++g) {
      float s = scaled(), amax = 0;
      int64_t end = std::min(k, (g + 1) * 128);
      for (int64_t c = g * 128; c < end; ++c) {
        x[size_t(r * k + c)] = floatToBf16(normal(rng) * s);
        amax = std::max(amax, std::fabs(bf16ToFloat(x[size_t(r * k + c)])));
      }
      float inverse = amax > 0 ? 448.0f / amax : 0.0f;
      for (int64_t c = g * 128; c < end; ++c) {
        __nv_fp8_e4m3 code(bf16ToFloat(x[size_t(r * k + c)]) * inverse);
        inputs[size_t(r * k + c)] = float(code) * (amax / 448.0f);
      }
    }
  std::vector<double> want(size_t(rows * n));
  for (int e = 0; e < experts; ++e)
    for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0;
        for (int64_t c = 0; c < k; ++c)
          sum += double(inputs[size_t(r * k + c)]) *
                 weights[size_t((e * n + j) * k + c)];
        want[size_t(r * n + j)] = sum;
      }

  // The experts split between a resident and a streamed allocation.
  const int64_t resident = experts / 2;
  std::vector<uint8_t> residentBlocks(blocks.begin(),
                                      blocks.begin() + resident * layout.bytes),
      streamedBlocks(blocks.begin() + resident * layout.bytes, blocks.end());
  kernels::QuantizedExpertMatrix weight;
  weight.format = kernels::ExpertFormat::fp8;
  weight.resident = upload(residentBlocks);
  weight.streamed = upload(streamedBlocks);
  weight.residentExperts = resident;
  weight.parts = p.parts;
  weight.partRows = p.partRows;
  weight.cols = k;
  weight.scaleOffset = layout.scaleOffset;
  weight.stride = layout.bytes;
  auto *dx = upload(x);
  auto *dOffsets = upload(offsets);
  const int64_t slack = kernels::kFp8GemmSlackRows;
  // NaN codes in the slack rows: they may reach only the slack outputs.
  auto *codes = upload(std::vector<uint8_t>(size_t((rows + slack) * k), 0x7F));
  auto *inputScales =
      upload(std::vector<float>(size_t(kernels::fp8GemmScaleCount(rows, k))));
  const int64_t partScales = nBlocks * kernels::fp8GemmScaleRowLength(k);
  auto *weightScales =
      upload(std::vector<float>(size_t(experts * p.parts * partScales)));
  auto *y = upload(std::vector<uint16_t>(size_t((rows + slack) * n), 0xFFFF));
  check(kernels::quantizeExpertInputs(
            reinterpret_cast<const __nv_bfloat16 *>(dx), rows, k, dOffsets,
            experts, p.microBatch, codes, inputScales, nullptr),
        "quantizeExpertInputs");
  check(kernels::gatherFp8GemmScales(weight, experts, weightScales, nullptr),
        "gatherFp8GemmScales");
  auto runner = GemmRunner::create();
  ASSERT_TRUE(runner.ok()) << runner.error().message();
  for (int e = 0; e < experts; ++e) {
    const uint8_t *block = e < resident ? weight.resident + e * layout.bytes
                                        : weight.streamed +
                                              (e - resident) * layout.bytes;
    for (int64_t first = offsets[e], m = 0; first < offsets[e + 1];
         first += m) {
      m = std::min<int64_t>(p.microBatch, offsets[e + 1] - first);
      for (int64_t part = 0; part < p.parts; ++part) {
        GemmArgs args{.y = reinterpret_cast<__nv_bfloat16 *>(y) + first * n +
                           part * p.partRows,
                      .m = kernels::fp8GemmRows(m),
                      .n = p.partRows,
                      .k = k,
                      .ldy = n};
        args.fp8 = {.x = codes + first * k,
                    .xScales = inputScales + kernels::fp8GemmScalesAt(first, k),
                    .w = block + part * p.partRows * k,
                    .wScales =
                        weightScales + (e * p.parts + part) * partScales};
        Status ran = (*runner)->run(args, nullptr);
        ASSERT_TRUE(ran.ok()) << ran.error().message();
      }
    }
  }
  std::vector<uint16_t> bits(size_t(rows * n));
  check(cudaMemcpy(bits.data(), y, bits.size() * 2, cudaMemcpyDeviceToHost),
        "download");
  std::vector<float> got(bits.size());
  for (size_t i = 0; i < bits.size(); ++i)
    got[i] = bf16ToFloat(bits[i]);
  // bf16 results of fp32 sums: ~2e-3.
  EXPECT_LT(relativeL2(got, want), 1e-2)
      << "parts " << p.parts << " × " << p.partRows << ", k " << k;
  for (void *ptr : {(void *)weight.resident, (void *)weight.streamed,
                    (void *)dx, (void *)dOffsets, (void *)codes,
                    (void *)inputScales, (void *)weightScales, (void *)y})
    cudaFree(ptr);
}

// Gate|up of two parts whose 128-row blocks end part-way (192 rows), k 640
// (five scale columns, padded to eight), an expert no row chose, groups cut
// into micro-batches; then one part over whole blocks, as down projections
// and Mixtral's shapes have them.
TEST(Fp8ExpertGemm, MatchesTheBlockScaledProduct) {
  expectMatchesReference({2, 192, 640, 128, {37, 0, 300, 5}});
  expectMatchesReference({1, 384, 1024, 64, {130, 1, 64}});
  expectMatchesReference({2, 32, 64, 1 << 30, {3, 9, 0, 17}}); // tiny models
}

TEST(Fp8ExpertGemm, RejectsUnsupportedArguments) {
  MOE_REQUIRE_CUDA_DEVICE();
  int32_t *offsets = upload(std::vector<int32_t>{0, 4});
  auto *x = upload(std::vector<uint16_t>(4 * 40));
  auto *codes = upload(std::vector<uint8_t>(4 * 40));
  auto *scales = upload(std::vector<float>(4));
  // k not a multiple of 16.
  EXPECT_EQ(kernels::quantizeExpertInputs(
                reinterpret_cast<const __nv_bfloat16 *>(x), 4, 40, offsets, 1,
                8, codes, scales, nullptr),
            cudaErrorInvalidValue);
  kernels::QuantizedExpertMatrix mxfp4;
  mxfp4.format = kernels::ExpertFormat::mxfp4;
  EXPECT_EQ(kernels::gatherFp8GemmScales(mxfp4, 1, scales, nullptr),
            cudaErrorInvalidValue);
  auto runner = GemmRunner::create();
  ASSERT_TRUE(runner.ok()) << runner.error().message();
  GemmArgs withBias{.bias = reinterpret_cast<const __nv_bfloat16 *>(x),
                    .y = reinterpret_cast<__nv_bfloat16 *>(x),
                    .m = 4,
                    .n = 16,
                    .k = 32};
  withBias.fp8 = {codes, scales, codes, scales};
  Status refused = (*runner)->run(withBias, nullptr);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message(),
            "fp8 gemm m=4 n=16 k=32: no bias is supported");
  for (void *ptr : {(void *)offsets, (void *)x, (void *)codes, (void *)scales})
    cudaFree(ptr);
}

} // namespace
} // namespace moe::cuda
