// The plan loader refuses anything it cannot safely execute, with an error
// that names the file and the problem.

#include "runtime/plan/LoadedPlan.h"
#include "test/runtime/ScratchDirectory.h"
#include "test/runtime/plan/PlanBuilder.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

namespace moe {
namespace {

using testing::buildPlan;
using testing::PlanSpec;
using testing::withTail;

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

// The lengths a job was planned for: as recorded, else as its prompt,
// longest and shortest generation say; recorded ones are checked.
TEST(LoadedPlan, PlannedLengthsAreVerified) {
  PlanSpec spec;
  spec.residentBatch = 8;
  spec.minGeneratedTokens = 64;
  Result<LoadedPlan> spread = LoadedPlan::fromBytes(buildPlan(spec), "x");
  ASSERT_TRUE(spread.ok()) << spread.error().message();
  EXPECT_EQ(spread->plannedLengths(),
            costmodel::GenerationLengths::spread(512, 256, 64));

  spec.generatedLengths = {1, 16, 9, 256, 256, 1};
  Result<LoadedPlan> own = LoadedPlan::fromBytes(buildPlan(spec), "x");
  ASSERT_TRUE(own.ok()) << own.error().message();
  EXPECT_EQ(own->plannedLengths()->generated.bins().size(), 2u);
  EXPECT_DOUBLE_EQ(own->plannedLengths()->generated.mean(),
                   0.9 * 8.5 + 0.1 * 256);

  spec.generatedLengths = {1, 16, 9, 200, 200, 1};
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: batching: generated_lengths reach 200 "
            "tokens, not the 256 recorded");
  spec.generatedLengths = {1, 16, 9, 10, 256, 1};
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: batching: generated_lengths: length "
            "bin 1 starts at 10, within the bin before it: bins must ascend "
            "without overlapping");
  spec.generatedLengths = {1, 256};
  EXPECT_EQ(loadError(buildPlan(spec)),
            "x.moeplan: invalid plan: batching: generated_lengths: 2 values "
            "are no (shortest, longest, weight) triples");
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

TEST(LoadedPlan, PhasePlansLoadBesideTheJobsPlan) {
  Result<LoadedPlan> loaded =
      LoadedPlan::fromBytes(buildPlan(withTail()), "x.moeplan");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  ASSERT_EQ(loaded->phasePlans().size(), 1u);
  EXPECT_EQ(loaded->phasePlans()[0].plan().batching()->resident_batch(), 4);
  EXPECT_EQ(loaded->plan().phases()->Get(0)->steps()->seconds()->Get(2), 0.8);
}

TEST(LoadedPlan, APhasePlanIsVerifiedLikeAnyPlan) {
  PlanSpec job = withTail();
  job.phasePlan.resize(job.phasePlan.size() - 4);
  EXPECT_EQ(loadError(buildPlan(job)),
            fmt::format("x.moeplan: phase 'tail': truncated or padded plan: "
                        "it declares {} bytes, the file has {}",
                        job.phasePlan.size() + 4, job.phasePlan.size()));
}

TEST(LoadedPlan, APhasePlanHasThePhasesSlots) {
  PlanSpec job = withTail(8);
  EXPECT_EQ(loadError(buildPlan(job)),
            "x.moeplan: phase 'tail': its plan must have the phase's 4 slots");
}

TEST(LoadedPlan, APhasePlanIsForTheSameModel) {
  PlanSpec tail;
  tail.residentBatch = 4;
  tail.includeEmbedding = false;
  tail.headOperand = 0;
  PlanSpec job = withTail();
  job.phasePlan = buildPlan(tail);
  EXPECT_EQ(loadError(buildPlan(job)),
            "x.moeplan: phase 'tail': its plan is for another model");
}

TEST(LoadedPlan, PhaseStepsRiseFromOneLiveSequence) {
  PlanSpec job = withTail();
  job.phaseLive = {1, 4, 2};
  EXPECT_EQ(loadError(buildPlan(job)),
            "x.moeplan: phase 'tail': its steps: live counts must rise from 1 "
            "and step times be positive; point 2 is 2 live, 0.8 s");
  job = withTail();
  job.phaseSeconds = {0.5, 0.6};
  EXPECT_EQ(loadError(buildPlan(job)),
            "x.moeplan: phase 'tail': its steps: needs as many step times as "
            "live counts, at least one; it has 2 and 3");
}

TEST(LoadedPlan, MissingFile) {
  Result<LoadedPlan> loaded = LoadedPlan::fromFile("/nonexistent.moeplan");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().message(),
            "/nonexistent.moeplan: cannot open plan file");
}

TEST(LoadedPlan, FileRoundTrip) {
  testing::ScratchDirectory scratch;
  std::string path = scratch.file("plan.moeplan");
  std::vector<uint8_t> bytes = buildPlan();
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char *>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
  Result<LoadedPlan> loaded = LoadedPlan::fromFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->bytes(), bytes);
}

} // namespace
} // namespace moe
