// Binding plan params to checkpoint tensors (single file, shards, stacked
// experts) with one-line errors for every mismatch, and synthetic weights
// that are deterministic and scaled as promised.

#include "runtime/weights/WeightSet.h"

#include "CheckpointWriter.h"
#include "runtime/model/WeightFormat.h"
#include "runtime/support/Float8.h"
#include "runtime/weights/HalfFloat.h"

#include <gtest/gtest.h>

#include <cmath>
#include <optional>

namespace moe {
namespace {

using testing::counting;
using testing::ScratchDirectory;
using testing::TensorSpec;

struct ParamSpec {
  std::string name;
  std::string hfName; // empty: none
  std::vector<int64_t> shape;
  plan::DType dtype = plan::DType::bf16;
};

/// A verified plan holding `params` and, optionally, one Experts op of the
/// given layout over params `gateUp` and `down`.
LoadedPlan buildPlan(const std::vector<ParamSpec> &specs,
                     std::optional<std::pair<int, int>> fusedExperts = {}) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<flatbuffers::Offset<plan::Param>> params;
  for (const ParamSpec &spec : specs)
    params.push_back(plan::CreateParamDirect(
        b, spec.name.c_str(),
        spec.hfName.empty() ? nullptr : spec.hfName.c_str(), &spec.shape,
        spec.dtype));
  std::vector<flatbuffers::Offset<plan::Op>> ops;
  int numValues = 1;
  if (fusedExperts) {
    std::vector<int> in{0}, out{1};
    auto experts = plan::CreateExperts(
        b, 2, 8, plan::ExpertActivation::swiglu_clamped,
        plan::ExpertLayout::fused_interleaved_transposed, 7.0, 1.702, -1, -1,
        fusedExperts->first, fusedExperts->second);
    ops.push_back(plan::CreateOpDirect(b, plan::Module::Experts,
                                       experts.Union(), 0, &in, &out));
    numValues = 2;
  }
  auto model = plan::CreateModelDirect(b, "test", "", 8, 4, 1, 0, -1, nullptr,
                                       &params, &ops, numValues, 0);
  plan::FinishSizePrefixedPlanBuffer(b, plan::CreatePlan(b, 1, model));
  Result<LoadedPlan> loaded = LoadedPlan::fromBytes(
      {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()}, "t.moeplan");
  EXPECT_TRUE(loaded.ok()) << loaded.error().message();
  return std::move(*loaded);
}

/// A small MoE layer: plain, norm and stacked-expert params.
const std::vector<ParamSpec> kMoEParams = {
    {"embed", "model.embed_tokens.weight", {8, 4}},
    {"l0.input_norm", "model.layers.0.input_layernorm.weight", {4}},
    {"l0.experts.gate",
     "model.layers.0.mlp.experts.{e}.gate_proj.weight",
     {2, 3, 4}},
    {"lm_head", "lm_head.weight", {8, 4}}};

/// The checkpoint of kMoEParams, each tensor counting up from its own start.
std::vector<TensorSpec> moeTensors() {
  return {
      counting("model.embed_tokens.weight", {8, 4}, 0),
      counting("model.layers.0.input_layernorm.weight", {4}, 100),
      counting("model.layers.0.mlp.experts.0.gate_proj.weight", {3, 4}, 200),
      counting("model.layers.0.mlp.experts.1.gate_proj.weight", {3, 4}, 300),
      counting("lm_head.weight", {8, 4}, 400)};
}

std::string bindError(const ScratchDirectory &scratch,
                      const std::vector<ParamSpec> &params = kMoEParams) {
  LoadedPlan plan = buildPlan(params);
  Result<WeightSet> weights =
      WeightSet::fromCheckpoint(scratch.path().string(), plan.model());
  return weights.ok() ? "" : weights.error().message();
}

std::string singleFileError(std::vector<TensorSpec> tensors,
                            const std::vector<ParamSpec> &params = kMoEParams) {
  ScratchDirectory scratch;
  testing::writeSafetensors(scratch.file("model.safetensors"), tensors);
  return bindError(scratch, params);
}

void expectCounting(const WeightSet &weights, size_t index, float start) {
  std::vector<float> values = weights.toFloat32(index);
  for (size_t i = 0; i < values.size(); ++i)
    ASSERT_EQ(values[i], start + static_cast<float>(i))
        << weights.param(index).name << "[" << i << "]";
}

TEST(WeightSet, BindsSingleFile) {
  ScratchDirectory scratch;
  std::vector<TensorSpec> tensors = moeTensors();
  tensors.push_back(counting("model.rotary_emb.inv_freq", {2}, 0));
  testing::writeSafetensors(scratch.file("model.safetensors"), tensors);
  LoadedPlan plan = buildPlan(kMoEParams);
  Result<WeightSet> weights =
      WeightSet::fromCheckpoint(scratch.path().string(), plan.model());
  ASSERT_TRUE(weights.ok()) << weights.error().message();
  ASSERT_EQ(weights->size(), 4u);

  const BoundParam &experts = weights->param(2);
  EXPECT_EQ(experts.name, "l0.experts.gate");
  EXPECT_EQ(experts.shape, (std::vector<int64_t>{2, 3, 4}));
  ASSERT_EQ(experts.parts.size(), 2u);
  EXPECT_EQ(experts.parts[1].shape, (std::vector<int64_t>{3, 4}));
  // A bf16 plan of an fp32 checkpoint keeps the checkpoint's type.
  EXPECT_EQ(experts.parts[1].type, ElementType::F32);
  std::vector<float> stacked = weights->toFloat32(2);
  ASSERT_EQ(stacked.size(), 24u);
  EXPECT_EQ(stacked[0], 200.0f);
  EXPECT_EQ(stacked[11], 211.0f);
  EXPECT_EQ(stacked[12], 300.0f);
  EXPECT_EQ(stacked[23], 311.0f);

  EXPECT_EQ(weights->param(0).parts.size(), 1u);
  expectCounting(*weights, 0, 0);
  expectCounting(*weights, 1, 100);
  expectCounting(*weights, 3, 400);
}

TEST(WeightSet, BindsShards) {
  ScratchDirectory scratch;
  std::vector<TensorSpec> tensors = moeTensors();
  testing::writeSafetensors(scratch.file("model-00001-of-00002.safetensors"),
                            {tensors[0], tensors[1], tensors[2]});
  testing::writeSafetensors(scratch.file("model-00002-of-00002.safetensors"),
                            {tensors[3], tensors[4]});
  nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                          {"weight_map", {}}};
  for (size_t i = 0; i < tensors.size(); ++i)
    index["weight_map"][tensors[i].name] =
        i < 3 ? "model-00001-of-00002.safetensors"
              : "model-00002-of-00002.safetensors";
  testing::writeText(scratch.file("model.safetensors.index.json"),
                     index.dump());

  LoadedPlan plan = buildPlan(kMoEParams);
  Result<WeightSet> weights =
      WeightSet::fromCheckpoint(scratch.path().string(), plan.model());
  ASSERT_TRUE(weights.ok()) << weights.error().message();
  expectCounting(*weights, 0, 0);
  expectCounting(*weights, 1, 100);
  EXPECT_EQ(weights->toFloat32(2)[12], 300.0f); // expert 1 from shard 2
  expectCounting(*weights, 3, 400);
}

TEST(WeightSet, SingleFileWinsOverIndex) {
  ScratchDirectory scratch;
  testing::writeSafetensors(scratch.file("model.safetensors"), moeTensors());
  testing::writeText(scratch.file("model.safetensors.index.json"), "not json");
  EXPECT_EQ(bindError(scratch), "");
}

TEST(WeightSet, ConvertsHalfTypesExactly) {
  ScratchDirectory scratch;
  std::vector<TensorSpec> tensors = moeTensors();
  tensors[1] = {
      "model.layers.0.input_layernorm.weight",
      "BF16",
      {4},
      testing::rawBytes(std::vector<uint16_t>{0x3fc0, 0xc000, 0x0000, 0x0001})};
  std::vector<uint16_t> f16Bits = {0x0001, 0x03ff, 0x8001, 0x3e00,
                                   0x7bff, 0x0400, 0x8000, 0x3c00,
                                   0x0000, 0x0200, 0xc000, 0x5640};
  tensors[2] = {"model.layers.0.mlp.experts.0.gate_proj.weight",
                "F16",
                {3, 4},
                testing::rawBytes(f16Bits)};
  testing::writeSafetensors(scratch.file("model.safetensors"), tensors);
  LoadedPlan plan = buildPlan(kMoEParams);
  Result<WeightSet> weights =
      WeightSet::fromCheckpoint(scratch.path().string(), plan.model());
  ASSERT_TRUE(weights.ok()) << weights.error().message();

  EXPECT_EQ(weights->param(1).parts[0].type, ElementType::BF16);
  std::vector<float> norm = weights->toFloat32(1);
  EXPECT_EQ(norm[0], 1.5f);
  EXPECT_EQ(norm[1], -2.0f);
  EXPECT_EQ(norm[2], 0.0f);
  EXPECT_EQ(norm[3], 0x1p-133f); // bf16's smallest subnormal

  // Expert 0 in f16, expert 1 in f32: parts may differ in type.
  EXPECT_EQ(weights->param(2).parts[0].type, ElementType::F16);
  EXPECT_EQ(weights->param(2).parts[1].type, ElementType::F32);
  std::vector<float> experts = weights->toFloat32(2);
  std::vector<float> expected = {0x1p-24f, 1023 * 0x1p-24f, -0x1p-24f, 1.5f,
                                 65504.0f, 0x1p-14f,        -0.0f,     1.0f,
                                 0.0f,     512 * 0x1p-24f,  -2.0f,     100.0f};
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(experts[i], expected[i]) << i;
  EXPECT_TRUE(std::signbit(experts[6]));
  EXPECT_EQ(experts[12], 300.0f);

  // bf16 reads copy bf16 parts and round the others, across mixed parts.
  for (size_t index : {size_t{1}, size_t{2}}) {
    std::vector<float> values = weights->toFloat32(index);
    std::vector<uint16_t> bits(values.size());
    weights->toBf16(index, bits);
    for (size_t i = 0; i < values.size(); ++i)
      EXPECT_EQ(bits[i], floatToBf16(values[i])) << index << " " << i;
  }
}

TEST(WeightSet, NoCheckpoint) {
  ScratchDirectory scratch;
  EXPECT_EQ(bindError(scratch),
            scratch.path().string() +
                ": no model.safetensors or model.safetensors.index.json");
}

TEST(WeightSet, MissingTensor) {
  std::vector<ParamSpec> params = kMoEParams;
  params.push_back(
      {"l1.attn.q", "model.layers.1.self_attn.q_proj.weight", {4, 4}});
  EXPECT_EQ(singleFileError(moeTensors(), params),
            "checkpoint has no tensor 'model.layers.1.self_attn.q_proj.weight' "
            "(param l1.attn.q)");
}

TEST(WeightSet, MissingExpert) {
  std::vector<TensorSpec> tensors = moeTensors();
  tensors.erase(tensors.begin() + 3);
  EXPECT_EQ(singleFileError(tensors),
            "checkpoint has no tensor "
            "'model.layers.0.mlp.experts.1.gate_proj.weight' (param "
            "l0.experts.gate)");
}

TEST(WeightSet, MisShapedTensor) {
  std::vector<TensorSpec> tensors = moeTensors();
  tensors[4] = counting("lm_head.weight", {8, 5}, 0);
  EXPECT_EQ(singleFileError(tensors),
            "model.safetensors: tensor 'lm_head.weight' has shape [8, 5], "
            "param lm_head expects [8, 4]");
}

TEST(WeightSet, MisShapedExpert) {
  std::vector<TensorSpec> tensors = moeTensors();
  tensors[3] =
      counting("model.layers.0.mlp.experts.1.gate_proj.weight", {4, 3}, 0);
  EXPECT_EQ(singleFileError(tensors),
            "model.safetensors: tensor "
            "'model.layers.0.mlp.experts.1.gate_proj.weight' has shape [4, 3], "
            "param l0.experts.gate expects [3, 4] per expert");
}

TEST(WeightSet, MoreExpertsThanThePlanIsAnotherModel) {
  std::vector<TensorSpec> tensors = moeTensors();
  tensors.push_back(
      counting("model.layers.0.mlp.experts.2.gate_proj.weight", {3, 4}, 0));
  EXPECT_EQ(singleFileError(tensors),
            "checkpoint tensor 'model.layers.0.mlp.experts.2.gate_proj.weight' "
            "is not used by the plan (a checkpoint of another model?)");
}

TEST(WeightSet, UnusedTensor) {
  std::vector<TensorSpec> tensors = moeTensors();
  tensors.push_back(counting("model.layers.9.mlp.gate.weight", {2, 4}, 0));
  EXPECT_EQ(singleFileError(tensors),
            "checkpoint tensor 'model.layers.9.mlp.gate.weight' is not used by "
            "the plan (a checkpoint of another model?)");
}

TEST(WeightSet, NonParameterBuffersAreIgnored) {
  std::vector<TensorSpec> tensors = moeTensors();
  for (const char *name : {"model.layers.0.self_attn.rotary_emb.inv_freq",
                           "model.layers.0.self_attn.slope_rate",
                           "model.layers.0.self_attn.query_decay",
                           "model.layers.0.self_attn.key_decay",
                           "model.layers.0.self_attn.diagonal_decay"})
    tensors.push_back(counting(name, {2}, 0));
  EXPECT_EQ(singleFileError(tensors), "");
}

TEST(WeightSet, ParamWithoutHfName) {
  std::vector<ParamSpec> params = kMoEParams;
  params[1].hfName.clear();
  EXPECT_EQ(singleFileError(moeTensors(), params),
            "param l0.input_norm has no hf_name: it cannot be bound to a "
            "checkpoint");
}

TEST(WeightSet, TensorBoundTwice) {
  std::vector<ParamSpec> params = kMoEParams;
  params.push_back({"tied_head", "lm_head.weight", {8, 4}});
  EXPECT_EQ(singleFileError(moeTensors(), params),
            "checkpoint tensor 'lm_head.weight' is bound by both param lm_head "
            "and param tied_head");
}

TEST(WeightSet, FileErrorsPassThrough) {
  std::vector<TensorSpec> tensors = moeTensors();
  tensors.push_back({"model.layers.0.mlp.experts.0.gate_proj.weight_blocks",
                     "I64",
                     {1},
                     {0}});
  EXPECT_EQ(singleFileError(tensors),
            "model.safetensors: tensor "
            "'model.layers.0.mlp.experts.0.gate_proj.weight_blocks': dtype I64 "
            "is not supported (F32, F16, BF16, F8_E4M3 with scales and U8 "
            "MXFP4 blocks are)");
}

/// E4M3 codes of a [rows, cols] matrix: every finite code, both signs.
std::vector<uint8_t> fp8Codes(int64_t rows, int64_t cols) {
  std::vector<uint8_t> codes(size_t(rows * cols));
  for (size_t i = 0; i < codes.size(); ++i)
    codes[i] = uint8_t((i * 37) % 0x7E) | (i % 3 == 0 ? 0x80 : 0);
  return codes;
}

// FP8 checkpoints load as shipped: DeepSeek-V3 / Qwen3-FP8's 128 × 128
// block scales (`weight_scale_inv`, here over a matrix that ends in partial
// blocks) and compressed-tensors' per-channel and per-tensor `weight_scale`
// (stacked experts, each its own), dequantized to fp32 and bf16 exactly.
TEST(WeightSet, DequantizesFp8Tensors) {
  const int64_t rows = 130, cols = 260;
  std::vector<float> blockScales = {0.5f, 1.0f, 2.0f, 4.0f, 8.0f, 0.25f};
  std::vector<float> perChannel = {0.1f, 2.0f, 3.0f};
  std::vector<TensorSpec> tensors = {
      {"model.layers.0.self_attn.q_proj.weight",
       "F8_E4M3",
       {rows, cols},
       fp8Codes(rows, cols)},
      {"model.layers.0.self_attn.q_proj.weight_scale_inv",
       "F32",
       {2, 3},
       testing::f32Bytes(blockScales)},
      {"model.layers.0.mlp.experts.0.gate_proj.weight",
       "F8_E4M3",
       {3, 4},
       fp8Codes(3, 4)},
      {"model.layers.0.mlp.experts.0.gate_proj.weight_scale",
       "F32",
       {1},
       testing::f32Bytes({0.75f})},
      {"model.layers.0.mlp.experts.0.gate_proj.input_scale",
       "F32",
       {1},
       testing::f32Bytes({1.0f})},
      {"model.layers.0.mlp.experts.1.gate_proj.weight",
       "F8_E4M3",
       {3, 4},
       fp8Codes(3, 4)},
      {"model.layers.0.mlp.experts.1.gate_proj.weight_scale",
       "F32",
       {3, 1},
       testing::f32Bytes(perChannel)}};
  std::vector<ParamSpec> params = {
      {"l0.q", "model.layers.0.self_attn.q_proj.weight", {rows, cols}},
      {"l0.experts.gate",
       "model.layers.0.mlp.experts.{e}.gate_proj.weight",
       {2, 3, 4}}};
  ScratchDirectory scratch;
  testing::writeSafetensors(scratch.file("model.safetensors"), tensors);
  LoadedPlan plan = buildPlan(params);
  Result<WeightSet> weights =
      WeightSet::fromCheckpoint(scratch.path().string(), plan.model());
  ASSERT_TRUE(weights.ok()) << weights.error().message();

  std::vector<uint8_t> codes = fp8Codes(rows, cols);
  std::vector<float> want(codes.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      want[r * cols + c] = floatFromFp8(codes[r * cols + c]) *
                           blockScales[(r / 128) * 3 + c / 128];
  EXPECT_EQ(weights->toFloat32(0), want);
  std::vector<uint16_t> bf16(want.size());
  weights->toBf16(0, bf16);
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_EQ(bf16[i], floatToBf16(want[i])) << i;

  std::vector<uint8_t> expertCodes = fp8Codes(3, 4);
  std::vector<float> experts = weights->toFloat32(1);
  ASSERT_EQ(experts.size(), 24u);
  for (int64_t i = 0; i < 12; ++i) {
    EXPECT_EQ(experts[i], floatFromFp8(expertCodes[i]) * 0.75f) << i;
    EXPECT_EQ(experts[12 + i], floatFromFp8(expertCodes[i]) * perChannel[i / 4])
        << i;
  }
}

// A plan with fp8 experts (runtime/model/WeightFormat.h) re-quantizes what
// an FP8 checkpoint with 128 x 128 blocks dequantizes to: its blocks are the
// checkpoint's, and a block scaled to its largest code (amax / 448, as
// DeepSeek-V3 and Qwen3 quantize) gives back the checkpoint's own codes and,
// to fp32 rounding, its scales.
TEST(WeightSet, Fp8BlockCheckpointsRequantizeToTheirOwnCodes) {
  const int64_t rows = 200, cols = 300;
  std::vector<float> values(size_t(rows * cols));
  for (int64_t i = 0; i < rows * cols; ++i)
    values[size_t(i)] = std::sin(0.01f * float(i * i % 9973)) *
                        std::ldexp(1.0f, int(i % 7) - 9);
  std::vector<uint8_t> codes(values.size());
  std::vector<float> scales(size_t(model::fp8ScaleCount(rows, cols)));
  model::quantizeFp8Matrix(values.data(), rows, cols, codes.data(),
                           scales.data());
  ScratchDirectory scratch;
  testing::writeSafetensors(
      scratch.file("model.safetensors"),
      {{"model.layers.0.mlp.experts.0.down_proj.weight",
        "F8_E4M3",
        {rows, cols},
        codes},
       {"model.layers.0.mlp.experts.0.down_proj.weight_scale_inv",
        "F32",
        {2, 3},
        testing::f32Bytes(scales)}});
  LoadedPlan plan = buildPlan(
      {{"l0.experts.down",
        "model.layers.0.mlp.experts.{e}.down_proj.weight",
        {1, rows, cols}}});
  Result<WeightSet> weights =
      WeightSet::fromCheckpoint(scratch.path().string(), plan.model());
  ASSERT_TRUE(weights.ok()) << weights.error().message();
  std::vector<float> loaded = weights->toFloat32(0);
  std::vector<uint8_t> again(codes.size());
  std::vector<float> againScales(scales.size());
  model::quantizeFp8Matrix(loaded.data(), rows, cols, again.data(),
                           againScales.data());
  EXPECT_EQ(again, codes);
  for (size_t b = 0; b < scales.size(); ++b)
    EXPECT_FLOAT_EQ(againScales[b], scales[b]) << "block " << b;
}

// readFloat32 of each (begin, count) of param `index` equals those elements
// of `whole`, the param read at once.
void expectRangesReadAsTheWhole(
    const WeightSet &weights, size_t index, const std::vector<float> &whole,
    std::initializer_list<std::pair<int64_t, int64_t>> ranges) {
  for (auto [begin, count] : ranges) {
    std::vector<float> range(static_cast<size_t>(count));
    weights.readFloat32(index, begin, count, range.data());
    EXPECT_TRUE(std::equal(range.begin(), range.end(), whole.begin() + begin))
        << begin << " + " << count;
  }
}

// GPT-OSS's MXFP4 experts load as shipped: `<name>_blocks` [E, out, in /
// 32, 16] and `<name>_scales` [E, out, in / 32] read as the param's [E, in,
// out], element (e, i, o) being FP4_VALUES[nibble i % 2 of byte i / 2 of
// row (e, o)] · 2^(scale − 127), as transformers dequantizes them.
TEST(WeightSet, ReadsMxfp4BlocksAsTransformersDoes) {
  const int64_t experts = 2, ins = 64, outs = 6;
  std::vector<uint8_t> blocks(size_t(experts * outs * ins / 2)),
      scales(size_t(experts * outs * ins / 32));
  for (size_t i = 0; i < blocks.size(); ++i)
    blocks[i] = uint8_t(i * 53 % 256);
  for (size_t i = 0; i < scales.size(); ++i)
    scales[i] = uint8_t(120 + i % 15);
  ScratchDirectory scratch;
  testing::writeSafetensors(scratch.file("model.safetensors"),
                            {{"model.layers.0.mlp.experts.gate_up_proj_blocks",
                              "U8",
                              {experts, outs, ins / 32, 16},
                              blocks},
                             {"model.layers.0.mlp.experts.gate_up_proj_scales",
                              "U8",
                              {experts, outs, ins / 32},
                              scales}});
  LoadedPlan plan = buildPlan({{"l0.experts.gate_up",
                                "model.layers.0.mlp.experts.gate_up_proj",
                                {experts, ins, outs}}});
  Result<WeightSet> weights =
      WeightSet::fromCheckpoint(scratch.path().string(), plan.model());
  ASSERT_TRUE(weights.ok()) << weights.error().message();
  constexpr float kFp4Values[16] = {0,     0.5f,  1,  1.5f,  2,  3,  4,  6,
                                    -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  std::vector<float> values = weights->toFloat32(0);
  std::vector<uint16_t> bf16(values.size());
  weights->toBf16(0, bf16);
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t i = 0; i < ins; ++i)
      for (int64_t o = 0; o < outs; ++o) {
        int64_t row = e * outs + o;
        uint8_t pair = blocks[size_t(row * ins / 2 + i / 2)];
        float want = kFp4Values[i % 2 ? pair >> 4 : pair & 15] *
                     std::ldexp(1.0f, scales[size_t(row * 2 + i / 32)] - 127);
        size_t at = size_t((e * ins + i) * outs + o);
        ASSERT_EQ(values[at], want) << e << ", " << i << ", " << o;
        ASSERT_EQ(bf16[at], floatToBf16(want)) << e << ", " << i << ", " << o;
      }
  // Ranges that start and end inside a run of outputs read the same.
  expectRangesReadAsTheWhole(*weights, 0, values,
                             {{0, 5}, {4, 9}, {191, 3}, {7, 370}});
}

TEST(WeightSet, Mxfp4BlocksNeedTheirScalesAndShapes) {
  std::vector<ParamSpec> params = {
      {"l0.experts.down", "model.layers.0.mlp.experts.down_proj", {2, 64, 4}}};
  TensorSpec blocks{"model.layers.0.mlp.experts.down_proj_blocks",
                    "U8",
                    {2, 4, 2, 16},
                    std::vector<uint8_t>(256)};
  EXPECT_EQ(singleFileError({blocks}, params),
            "model.safetensors: MXFP4 tensor "
            "'model.layers.0.mlp.experts.down_proj_blocks' has no scales: the "
            "checkpoint holds no 'model.layers.0.mlp.experts.down_proj_scales' "
            "(param l0.experts.down)");
  EXPECT_EQ(singleFileError({blocks,
                             {"model.layers.0.mlp.experts.down_proj_scales",
                              "U8",
                              {2, 4},
                              std::vector<uint8_t>(8)}},
                            params),
            "model.safetensors: MXFP4 tensor "
            "'model.layers.0.mlp.experts.down_proj_scales' is U8 [2, 4]; "
            "param l0.experts.down expects U8 [2, 4, 2]");
  // A U8 tensor is no weight by itself.
  EXPECT_EQ(singleFileError(
                {{"lm_head.weight", "U8", {8, 4}, std::vector<uint8_t>(32)}},
                {{"lm_head", "lm_head.weight", {8, 4}}}),
            "model.safetensors: tensor 'lm_head.weight' is U8: only MXFP4 "
            "blocks ('<name>_blocks' with '<name>_scales') load as weights "
            "(param lm_head)");
}

// Any range of a param reads as that slice of toFloat32: across the parts
// of stacked experts, dequantized, and for synthetic weights.
TEST(WeightSet, ReadsRangesAsTheWholeParamReads) {
  ScratchDirectory scratch;
  testing::writeSafetensors(scratch.file("model.safetensors"), moeTensors());
  LoadedPlan plan = buildPlan(kMoEParams);
  Result<WeightSet> checkpoint =
      WeightSet::fromCheckpoint(scratch.path().string(), plan.model());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.error().message();
  Result<WeightSet> synthetic = WeightSet::synthetic(plan.model(), 7);
  ASSERT_TRUE(synthetic.ok()) << synthetic.error().message();
  for (const WeightSet *weights : {&*checkpoint, &*synthetic}) {
    std::vector<float> whole = weights->toFloat32(2); // experts [2, 3, 4]
    expectRangesReadAsTheWhole(*weights, 2, whole,
                               {{0, 24}, {5, 10}, {12, 12}, {23, 1}});
  }
}

// NaN or Inf in what a param stands for, whatever its stored dtype, is the
// error naming the param and the first such element (in the param's flat
// order); finite params pass, synthetic ones always.
TEST(WeightSet, ChecksThatEveryValueIsFinite) {
  std::vector<uint16_t> bf16(12, floatToBf16(0.5f));
  bf16[7] = floatToBf16(-std::numeric_limits<float>::infinity());
  std::vector<uint8_t> fp8(12, 0x38), fp8Overflow(12, 0x38);
  fp8[3] = 0x7F;         // E4M3's NaN
  fp8Overflow[9] = 0x7E; // 448 · 1e36 is beyond fp32
  const int64_t experts = 2, ins = 32, outs = 3;
  std::vector<uint8_t> blocks(size_t(experts * outs * ins / 2), 0x21),
      scales(size_t(experts * outs), 127);
  scales[size_t(1 * outs + 2)] = 255; // not a power of two: expert 1, out 2
  ScratchDirectory scratch;
  testing::writeSafetensors(
      scratch.file("model.safetensors"),
      {{"a.weight", "BF16", {3, 4}, testing::rawBytes(bf16)},
       {"b.weight", "F8_E4M3", {3, 4}, fp8},
       {"b.weight_scale", "F32", {1}, testing::f32Bytes({1.0f})},
       {"c.weight", "F8_E4M3", {3, 4}, fp8Overflow},
       {"c.weight_scale", "F32", {1}, testing::f32Bytes({1e36f})},
       {"d.weight", "F32", {2}, testing::f32Bytes({1.0f, -2.0f})},
       {"e_blocks", "U8", {experts, outs, ins / 32, 16}, blocks},
       {"e_scales", "U8", {experts, outs, ins / 32}, scales}});
  LoadedPlan plan = buildPlan({{"a", "a.weight", {3, 4}},
                               {"b", "b.weight", {3, 4}},
                               {"c", "c.weight", {3, 4}},
                               {"d", "d.weight", {2}},
                               {"e", "e", {experts, ins, outs}}});
  Result<WeightSet> weights =
      WeightSet::fromCheckpoint(scratch.path().string(), plan.model());
  ASSERT_TRUE(weights.ok()) << weights.error().message();
  auto error = [&](size_t index) {
    Status status = weights->checkFinite(index);
    return status.ok() ? std::string("finite") : status.error().message();
  };
  EXPECT_EQ(error(0), "param 0 ('a') holds Inf at element 7: the checkpoint "
                      "is damaged");
  EXPECT_EQ(error(1), "param 1 ('b') holds NaN at element 3: the checkpoint "
                      "is damaged");
  EXPECT_EQ(error(2), "param 2 ('c') holds Inf at element 9: the checkpoint "
                      "is damaged");
  EXPECT_EQ(error(3), "finite");
  // Element (e 1, i 0, o 2) of the param's [E, in, out].
  EXPECT_EQ(error(4), fmt::format("param 4 ('e') holds Inf at element {}: "
                                  "the checkpoint is damaged",
                                  (1 * ins + 0) * outs + 2));
  Result<WeightSet> synthetic = WeightSet::synthetic(plan.model(), 3);
  ASSERT_TRUE(synthetic.ok()) << synthetic.error().message();
  for (size_t i = 0; i < synthetic->size(); ++i)
    EXPECT_TRUE(synthetic->checkFinite(i).ok()) << i;
}

std::string fp8Error(std::vector<TensorSpec> scales) {
  std::vector<TensorSpec> tensors = {
      {"lm_head.weight", "F8_E4M3", {8, 4}, fp8Codes(8, 4)}};
  tensors.insert(tensors.end(), scales.begin(), scales.end());
  return singleFileError(tensors, {{"lm_head", "lm_head.weight", {8, 4}}});
}

TEST(WeightSet, Fp8TensorsNeedTheirScales) {
  EXPECT_EQ(fp8Error({}),
            "model.safetensors: F8_E4M3 tensor 'lm_head.weight' has no "
            "scales: the checkpoint holds neither 'lm_head.weight_scale_inv' "
            "nor 'lm_head.weight_scale' (param lm_head)");
  EXPECT_EQ(fp8Error({{"lm_head.weight_scale_inv",
                       "F32",
                       {2, 2},
                       testing::f32Bytes({1, 1, 1, 1})}}),
            "model.safetensors: scale tensor 'lm_head.weight_scale_inv' has "
            "shape [2, 2]; for [8, 4] expected [1, 1] (128 × 128 blocks), "
            "[8, 1] (per channel) or [1] (per tensor)");
  EXPECT_EQ(fp8Error({{"lm_head.weight_scale", "F8_E4M3", {1}, {0x38}}}),
            "model.safetensors: scale tensor 'lm_head.weight_scale' is "
            "F8_E4M3; F32 or BF16 expected");
}

/// A two-shard checkpoint of kMoEParams whose index is `index`.
std::string shardedError(const std::string &index) {
  ScratchDirectory scratch;
  std::vector<TensorSpec> tensors = moeTensors();
  testing::writeSafetensors(scratch.file("a.safetensors"),
                            {tensors[0], tensors[1], tensors[2], tensors[3]});
  testing::writeSafetensors(scratch.file("b.safetensors"), {tensors[4]});
  testing::writeText(scratch.file("model.safetensors.index.json"), index);
  return bindError(scratch);
}

const char *kGoodWeightMap = R"(
  "model.embed_tokens.weight": "a.safetensors",
  "model.layers.0.input_layernorm.weight": "a.safetensors",
  "model.layers.0.mlp.experts.0.gate_proj.weight": "a.safetensors",
  "model.layers.0.mlp.experts.1.gate_proj.weight": "a.safetensors")";

TEST(WeightSet, IndexListsMissingShard) {
  EXPECT_EQ(shardedError(std::string(R"({"weight_map": {)") + kGoodWeightMap +
                         R"(, "lm_head.weight": "c.safetensors"}})"),
            "model.safetensors.index.json: shard 'c.safetensors' (holding "
            "'lm_head.weight') does not exist");
}

TEST(WeightSet, IndexListsTensorTheShardLacks) {
  EXPECT_EQ(shardedError(std::string(R"({"weight_map": {)") + kGoodWeightMap +
                         R"(, "lm_head.weight": "a.safetensors"}})"),
            "model.safetensors.index.json: tensor 'lm_head.weight' is listed "
            "in a.safetensors, which does not hold it");
}

TEST(WeightSet, IndexWithoutWeightMap) {
  EXPECT_EQ(shardedError(R"({"metadata": {}})"),
            "model.safetensors.index.json: no \"weight_map\" object");
  EXPECT_EQ(shardedError(R"([])"),
            "model.safetensors.index.json: no \"weight_map\" object");
}

TEST(WeightSet, IndexMapsToNonString) {
  EXPECT_EQ(shardedError(R"({"weight_map": {"lm_head.weight": 2}})"),
            "model.safetensors.index.json: weight_map: tensor "
            "'lm_head.weight' maps to no file name");
}

TEST(WeightSet, IndexIsNotJson) {
  EXPECT_TRUE(shardedError("{").starts_with(
      "model.safetensors.index.json: not valid JSON: "))
      << shardedError("{");
}

TEST(WeightSet, IndexOmitsATensorThePlanNeeds) {
  // Shards may hold more than the index lists; the index decides.
  EXPECT_EQ(
      shardedError(std::string(R"({"weight_map": {)") + kGoodWeightMap + "}}"),
      "checkpoint has no tensor 'lm_head.weight' (param lm_head)");
}

//===----------------------------------------------------------------------===//
// Synthetic weights
//===----------------------------------------------------------------------===//

struct Moments {
  double mean;
  double std;
};

Moments momentsOf(const std::vector<float> &values) {
  double sum = 0, squares = 0;
  for (float value : values) {
    sum += value;
    squares += static_cast<double>(value) * value;
  }
  double mean = sum / values.size();
  return {mean, std::sqrt(squares / values.size() - mean * mean)};
}

const std::vector<ParamSpec> kSyntheticParams = {
    {"embed", "model.embed_tokens.weight", {64, 256}, plan::DType::f32},
    {"l0.input_norm", "model.layers.0.input_layernorm.weight", {4096}},
    {"l0.attn.q_norm",
     "model.layers.0.self_attn.q_norm.weight",
     {4096},
     plan::DType::f16},
    {"l0.router.correction_bias",
     "model.layers.0.mlp.gate.e_score_correction_bias",
     {4096},
     plan::DType::f32},
    {"l0.experts.down",
     "model.layers.0.mlp.experts.{e}.down_proj.weight",
     {4, 256, 1024}},
    // Over 2^20 elements: spans several fill jobs.
    {"lm_head", "lm_head.weight", {1100, 1024}, plan::DType::f16}};

TEST(SyntheticWeights, SameSeedSameValues) {
  LoadedPlan plan = buildPlan(kSyntheticParams);
  Result<WeightSet> first = WeightSet::synthetic(plan.model(), 7);
  Result<WeightSet> second = WeightSet::synthetic(plan.model(), 7);
  Result<WeightSet> other = WeightSet::synthetic(plan.model(), 8);
  ASSERT_TRUE(first.ok() && second.ok() && other.ok());
  ASSERT_EQ(first->size(), kSyntheticParams.size());
  for (size_t i = 0; i < first->size(); ++i) {
    EXPECT_EQ(first->toFloat32(i), second->toFloat32(i)) << i;
    EXPECT_NE(first->toFloat32(i), other->toFloat32(i)) << i;
  }
}

TEST(SyntheticWeights, Bf16IsTheRoundedFloat32) {
  LoadedPlan plan = buildPlan(kSyntheticParams);
  Result<WeightSet> weights = WeightSet::synthetic(plan.model(), 5);
  ASSERT_TRUE(weights.ok());
  for (size_t i = 0; i < weights->size(); ++i) {
    std::vector<float> values = weights->toFloat32(i);
    std::vector<uint16_t> bits(values.size());
    weights->toBf16(i, bits);
    for (size_t j = 0; j < values.size(); ++j)
      ASSERT_EQ(bits[j], floatToBf16(values[j]))
          << "param " << i << " [" << j << "]";
  }
}

TEST(SyntheticWeights, ValuesDependOnTheParamNotItsNeighbours) {
  LoadedPlan full = buildPlan(kSyntheticParams);
  LoadedPlan alone = buildPlan({kSyntheticParams[4]});
  Result<WeightSet> fromFull = WeightSet::synthetic(full.model(), 3);
  Result<WeightSet> fromAlone = WeightSet::synthetic(alone.model(), 3);
  ASSERT_TRUE(fromFull.ok() && fromAlone.ok());
  EXPECT_EQ(fromFull->toFloat32(4), fromAlone->toFloat32(0));
}

TEST(SyntheticWeights, ShapesTypesAndParts) {
  LoadedPlan plan = buildPlan(kSyntheticParams);
  Result<WeightSet> weights = WeightSet::synthetic(plan.model(), 1);
  ASSERT_TRUE(weights.ok());
  EXPECT_EQ(weights->param(0).parts[0].type, ElementType::F32);
  EXPECT_EQ(weights->param(1).parts[0].type, ElementType::BF16);
  EXPECT_EQ(weights->param(2).parts[0].type, ElementType::F16);
  const BoundParam &experts = weights->param(4);
  EXPECT_EQ(experts.shape, (std::vector<int64_t>{4, 256, 1024}));
  ASSERT_EQ(experts.parts.size(), 4u);
  for (const TensorView &part : experts.parts)
    EXPECT_EQ(part.shape, (std::vector<int64_t>{256, 1024}));
  EXPECT_EQ(weights->param(5).parts.size(), 1u);
  EXPECT_EQ(weights->toFloat32(5).size(), 1100u * 1024u);
}

TEST(SyntheticWeights, Statistics) {
  LoadedPlan plan = buildPlan(kSyntheticParams);
  Result<WeightSet> weights = WeightSet::synthetic(plan.model(), 42);
  ASSERT_TRUE(weights.ok());
  // Matrices: mean 0, standard deviation 1/sqrt(fan_in = last dim).
  for (size_t index : {0, 4, 5}) {
    const BoundParam &param = weights->param(index);
    double expectedStd = 1.0 / std::sqrt(double(param.shape.back()));
    Moments moments = momentsOf(weights->toFloat32(index));
    EXPECT_NEAR(moments.mean, 0.0, 0.02 * expectedStd) << param.name;
    EXPECT_NEAR(moments.std, expectedStd, 0.02 * expectedStd) << param.name;
  }
  // Norm weights near 1, biases near 0, both with small spread.
  for (size_t index : {1, 2}) {
    Moments moments = momentsOf(weights->toFloat32(index));
    EXPECT_NEAR(moments.mean, 1.0, 0.002) << index;
    EXPECT_NEAR(moments.std, 0.02, 0.002) << index;
  }
  Moments bias = momentsOf(weights->toFloat32(3));
  EXPECT_NEAR(bias.mean, 0.0, 0.002);
  EXPECT_NEAR(bias.std, 0.02, 0.002);
}

TEST(SyntheticWeights, FusedTransposedExpertsUseTheirInputDimension) {
  // GPT-OSS experts are [E, in, out]: fan_in is the middle dimension.
  LoadedPlan plan = buildPlan({{"l0.experts.gate_up",
                                "model.layers.0.mlp.experts.gate_up_proj",
                                {2, 64, 1024}},
                               {"l0.experts.down",
                                "model.layers.0.mlp.experts.down_proj",
                                {2, 512, 64}},
                               {"l0.experts.gate_up_bias",
                                "model.layers.0.mlp.experts.gate_up_proj_bias",
                                {2, 1024}}},
                              std::pair{0, 1});
  Result<WeightSet> weights = WeightSet::synthetic(plan.model(), 5);
  ASSERT_TRUE(weights.ok());
  EXPECT_NEAR(momentsOf(weights->toFloat32(0)).std, 1.0 / 8, 0.02 / 8);
  EXPECT_NEAR(momentsOf(weights->toFloat32(1)).std, 1.0 / std::sqrt(512.0),
              0.02 / std::sqrt(512.0));
  EXPECT_NEAR(momentsOf(weights->toFloat32(2)).std, 0.02, 0.002);
  EXPECT_EQ(weights->param(0).parts.size(), 1u);
}

} // namespace
} // namespace moe
