// The plan loader refuses anything it cannot safely execute, with an error
// that names the file and the problem.

#include "runtime/plan/LoadedPlan.h"
#include "runtime/schemas/PlanVersion.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

namespace moe {
namespace {

struct PlanSpec {
  uint32_t version = plan::kSchemaVersion;
  int headWeight = 1;      // param index the LM head reads
  int headOperand = 1;     // value the LM head consumes
  int logits = 2;
  bool includeEmbedding = true;
  int64_t residentBatch = 0; // 0: no batching table
  int64_t decodeMicroBatch = 1;
  bool withSchedule = false;
  uint32_t copyWaitsFor = 0;  // the decode copy job (index 1) waits for this
  plan::StreamKind copyStream = plan::StreamKind::h2d;
  int copyBuffer = 0;
  int ringBuffers = 2;
  int64_t paramRows = 16;
  std::vector<int64_t> eos{2};
};

/// embedding(ids) -> lm_head -> logits, over two parameters.
std::vector<uint8_t> buildPlan(const PlanSpec &spec = {}) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<int64_t> shape{spec.paramRows, 8};
  std::vector<flatbuffers::Offset<plan::Param>> params{
      plan::CreateParamDirect(b, "embed", "model.embed_tokens.weight", &shape,
                              plan::DType::bf16),
      plan::CreateParamDirect(b, "lm_head", "lm_head.weight", &shape,
                              plan::DType::bf16,
                              plan::Placement::host_streamed)};
  std::vector<flatbuffers::Offset<plan::Op>> ops;
  if (spec.includeEmbedding) {
    std::vector<int> in{0}, out{1};
    ops.push_back(plan::CreateOpDirect(b, plan::Module::Embedding,
                                       plan::CreateEmbedding(b, 0).Union(), -1,
                                       &in, &out));
  }
  std::vector<int> in{spec.headOperand}, out{2};
  ops.push_back(plan::CreateOpDirect(
      b, plan::Module::LMHead, plan::CreateLMHead(b, spec.headWeight).Union(),
      -1, &in, &out));
  auto model = plan::CreateModelDirect(b, "test", "", 16, 8, 0, 0, 1, &spec.eos,
                                       &params, &ops, 3, spec.logits);
  flatbuffers::Offset<plan::Batching> batching;
  if (spec.residentBatch)
    batching = plan::CreateBatching(b, spec.residentBatch, 1,
                                    spec.decodeMicroBatch, 256, 2, 2, 0.0, 0.5,
                                    512, 256, 1 << 30, 1 << 30);
  flatbuffers::Offset<plan::Schedule> schedule;
  if (spec.withSchedule) {
    std::vector<flatbuffers::Offset<plan::BufferPool>> pools{
        plan::CreateBufferPool(b, plan::PoolKind::weight_ring, spec.ringBuffers,
                               1024)};
    std::vector<uint32_t> none, after{spec.copyWaitsFor};
    std::vector<flatbuffers::Offset<plan::Job>> jobs{
        plan::CreateJobDirect(b, plan::JobKind::compute,
                              plan::StreamKind::compute, "norm", &none),
        plan::CreateJobDirect(b, plan::JobKind::copy_weights, spec.copyStream,
                              nullptr, &after, 1, 0, -1, 0, 0, 0,
                              spec.copyBuffer, 1024.0)};
    auto decode = plan::CreateStepScheduleDirect(b, 1e-3, &jobs);
    std::vector<flatbuffers::Offset<plan::Job>> noJobs;
    auto prefill = plan::CreateStepScheduleDirect(b, 1e-3, &noJobs);
    schedule = plan::CreateScheduleDirect(b, &pools, decode, prefill);
  }
  plan::FinishSizePrefixedPlanBuffer(
      b, plan::CreatePlan(b, spec.version, model, batching, 0, schedule));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

std::string loadError(std::vector<uint8_t> bytes) {
  Result<LoadedPlan> loaded = LoadedPlan::fromBytes(std::move(bytes), "x.moeplan");
  return loaded.ok() ? "" : loaded.error().message();
}

TEST(LoadedPlan, ValidPlanLoads) {
  Result<LoadedPlan> loaded = LoadedPlan::fromBytes(buildPlan(), "x.moeplan");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->model().params()->size(), 2u);
  EXPECT_EQ(loaded->model().params()->Get(1)->placement(),
            plan::Placement::host_streamed);
}

// A model whose config names no EOS token (MiniMax-Text-01): FlatBuffers
// does not align an empty vector, which holds nothing to misread.
TEST(LoadedPlan, ModelWithoutEosTokensLoads) {
  PlanSpec spec;
  spec.eos.clear();
  EXPECT_EQ(loadError(buildPlan(spec)), "");
}

TEST(LoadedPlan, EmptyFileIsNotAPlan) {
  EXPECT_EQ(loadError({}),
            "x.moeplan: not a moe plan (no 'MOEP' file identifier)");
}

TEST(LoadedPlan, WrongIdentifier) {
  std::vector<uint8_t> bytes = buildPlan();
  bytes[8] = 'X';
  EXPECT_EQ(loadError(bytes),
            "x.moeplan: not a moe plan (no 'MOEP' file identifier)");
}

TEST(LoadedPlan, EveryTruncationIsRejected) {
  std::vector<uint8_t> bytes = buildPlan();
  for (size_t size = 12; size < bytes.size(); ++size) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + size);
    EXPECT_EQ(loadError(prefix),
              "x.moeplan: truncated or padded plan: it declares " +
                  std::to_string(bytes.size()) + " bytes, the file has " +
                  std::to_string(size));
  }
}

TEST(LoadedPlan, CorruptedOffsetsAreRejected) {
  std::vector<uint8_t> bytes = buildPlan();
  // Point the root table far outside the buffer.
  bytes[4] = 0xff;
  bytes[5] = 0xff;
  bytes[6] = 0xff;
  bytes[7] = 0x7f;
  std::string error = loadError(bytes);
  EXPECT_NE(error.find("corrupt plan: the buffer fails verification"),
            std::string::npos)
      << error;
}

TEST(LoadedPlan, OtherSchemaVersion) {
  PlanSpec spec;
  spec.version = plan::kSchemaVersion + 1;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: plan schema version 2, this runtime reads version 1: "
            "recompile the plan with moe-opt");
}

TEST(LoadedPlan, ParamIndexOutOfRange) {
  PlanSpec spec;
  spec.headWeight = 7;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: op 1: 'weight' refers to param 7, but "
            "the plan has 2");
}

TEST(LoadedPlan, UseBeforeDefinition) {
  PlanSpec spec;
  spec.includeEmbedding = false;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: op 0: operand value 1 is not defined "
            "before use");
}

TEST(LoadedPlan, LogitsNeverDefined) {
  PlanSpec spec;
  spec.logits = 5;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: logits value 5 is never defined");
}

TEST(LoadedPlan, ConsistentBatchingLoads) {
  PlanSpec spec;
  spec.residentBatch = 64;
  spec.decodeMicroBatch = 16;
  EXPECT_EQ(loadError(buildPlan(spec)), "");
}

TEST(LoadedPlan, MicroBatchAboveResidentBatch) {
  PlanSpec spec;
  spec.residentBatch = 8;
  spec.decodeMicroBatch = 16;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: batching: an attention micro-batch "
            "exceeds the resident batch 8");
}

TEST(LoadedPlan, ScheduleLoads) {
  PlanSpec spec;
  spec.withSchedule = true;
  EXPECT_EQ(loadError(buildPlan(spec)), "");
}

TEST(LoadedPlan, JobWaitsForALaterJob) {
  PlanSpec spec;
  spec.withSchedule = true;
  spec.copyWaitsFor = 1;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: decode job 1: waits for job 1, which is "
            "not earlier");
}

TEST(LoadedPlan, CopyOnTheComputeStream) {
  PlanSpec spec;
  spec.withSchedule = true;
  spec.copyStream = plan::StreamKind::compute;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: decode job 1: runs on the compute "
            "stream, its kind needs h2d");
}

TEST(LoadedPlan, BufferOutsideItsPool) {
  PlanSpec spec;
  spec.withSchedule = true;
  spec.copyBuffer = 2;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: decode job 1: buffer 2 is not in pool 0");
}

// Counts a damaged plan could hold that would size the runtime's tables
// beyond memory (found by test/fuzz): refused.
TEST(LoadedPlan, PoolOfMoreBuffersThanJobs) {
  PlanSpec spec;
  spec.withSchedule = true;
  spec.ringBuffers = 3;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: schedule: a buffer pool needs 0 < count "
            "<= 2 (the jobs) and bytes >= 0; it has count 3 and 1024 bytes");
}

TEST(LoadedPlan, DimensionBeyondTheBound) {
  PlanSpec spec;
  spec.paramRows = kMaxDimension + 1;
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: param 0 ('embed') has a dimension of "
            "1048577, not in 1..1048576");
}

TEST(LoadedPlan, MissingFile) {
  Result<LoadedPlan> loaded = LoadedPlan::fromFile("/nonexistent.moeplan");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().message(),
            "/nonexistent.moeplan: cannot open plan file");
}

TEST(LoadedPlan, FileRoundTrip) {
  std::string path = ::testing::TempDir() + "/plan-test.moeplan";
  std::vector<uint8_t> bytes = buildPlan();
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char *>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  Result<LoadedPlan> loaded = LoadedPlan::fromFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->bytes(), bytes);
  std::remove(path.c_str());
}

} // namespace
} // namespace moe
