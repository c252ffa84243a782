#include "runtime/costmodel/Plan.h"

#include <gtest/gtest.h>

#include "TestSupport.h"

namespace moe::costmodel {
namespace {

using testing::kGiB;
using testing::syntheticProfile;
using testing::tinyMoe;

Plan smallPlan() {
  Plan plan;
  plan.residentBatch = 10;
  plan.attentionMicroBatchPrefill = 1;
  plan.attentionMicroBatchDecode = 4;
  plan.expertMicroBatch = 64;
  plan.prefetchDepth = 2;
  plan.kvStagingBuffers = 2;
  plan.kvGpuFraction = 0.5;
  plan.lengths = GenerationLengths::spread(100, 50);
  return plan;
}

TEST(PlanTest, AccountsEveryPool) {
  ModelCosts model = tinyMoe();
  MemoryUse use = accountMemory(model, smallPlan());
  EXPECT_EQ(totalWeightBytes(model), 218'312'000);
  EXPECT_EQ(use.residentWeightBytes, 0);
  EXPECT_EQ(use.hostWeightBytes, 218'312'000);
  // Two slots of the largest layer: norm, attention, router, 8 experts.
  EXPECT_EQ(use.weightRingBytes, 2 * 50'578'000);
  // Five sequences each way, 4 layers x 150 tokens x 512 bytes.
  EXPECT_EQ(use.gpuKvBytes, 5 * 307'200);
  EXPECT_EQ(use.hostKvBytes, 5 * 307'200);
  EXPECT_EQ(use.hostKvPromptBytes, 5 * 4 * 100 * 512);
  EXPECT_EQ(use.parkedHiddenBytes, 10 * 100 * 1000 * 2);
  EXPECT_EQ(use.kvStagingBytes, 2 * 4 * 150 * 512);
  // Prefill's 100-token chunk: 4 hidden buffers plus a 64-token LM-head
  // chunk beat decode's 10 tokens.
  EXPECT_EQ(use.activationBytes, 100 * 1000 * 2 * 4 + 64 * 4000 * 2);
  EXPECT_EQ(use.gpuBytes(), 104'618'400);
  // Parked prefill states outweigh the rest of the KV.
  EXPECT_EQ(use.hostBytes(), 218'312'000 + 1'024'000 + 2'000'000);
}

// The backend runs a decode step's rows through each module at once, so the
// step's activations are reserved for every row, whatever the expert
// micro-batch: the routed experts' row (per pick its input, gate|up, the
// activations and its output in bf16, and its route; the combined output in
// bf16 and fp32) beside 4 hidden rows in bf16 and fp32, rounded up by the
// backend's 1/16.
TEST(PlanTest, DecodeReservesEveryRowOfTheStep) {
  ModelCosts model = tinyMoe();
  Plan plan = smallPlan();
  plan.residentBatch = 1024;
  constexpr int64_t rowBytes =
      2 * ((2 * 1000 + 3 * 1000) * 2 + 8) + 1000 * 6 + 4 * 6 * 1000;
  for (int64_t expertBatch : {64, 1024}) {
    plan.expertMicroBatch = expertBatch;
    EXPECT_EQ(accountMemory(model, plan).activationBytes,
              1024 * rowBytes * 17 / 16)
        << "expert micro-batch " << expertBatch;
  }
}

// A prefill chunk's row needs a decode row's bytes plus the parked (fp32 and
// bf16) and the next chunk's restored (fp32) hidden state, rounded up by
// 1/16; the chunk holds what the plan's activations hold.
TEST(PlanTest, PrefillChunksHoldWhatTheActivationsHold) {
  ModelCosts model = tinyMoe();
  Plan plan = smallPlan();
  plan.residentBatch = 1024;
  constexpr int64_t decodeRow =
      2 * ((2 * 1000 + 3 * 1000) * 2 + 8) + 1000 * 6 + 4 * 6 * 1000;
  constexpr int64_t prefillRow = (decodeRow + 10 * 1000) * 17 / 16;
  EXPECT_EQ(prefillChunkRows(model, plan),
            accountMemory(model, plan).activationBytes / prefillRow);
  EXPECT_EQ(prefillChunkRows(model, plan),
            1024 * decodeRow * 17 / 16 / prefillRow);
}

TEST(PlanTest, ResidentWeightsLeaveTheHostAndTheRing) {
  ModelCosts model = tinyMoe();
  Plan plan = smallPlan();
  plan.resident = residentPrefix(model, int64_t(residencyOrder(model).size()));
  MemoryUse use = accountMemory(model, plan);
  EXPECT_EQ(use.residentWeightBytes, totalWeightBytes(model));
  EXPECT_EQ(use.hostWeightBytes, 0);
  EXPECT_EQ(use.weightRingBytes, 0);
}

TEST(PlanTest, ResidencyOrderTakesDenseModulesThenExpertsThenEmbedding) {
  ModelCosts model = tinyMoe();
  EXPECT_EQ(residencyOrder(model).size(), 1u + 4 * (3 + 8) + 1);
  // 13 dense modules: 4 x (norm, attention, router) and the LM head.
  ResidentSet dense = residentPrefix(model, 13);
  for (size_t l = 1; l <= 4; ++l)
    EXPECT_EQ(dense.units[l], (std::vector<int64_t>{1, 1, 1, 0}));
  EXPECT_EQ(dense.units[5], (std::vector<int64_t>{1}));
  EXPECT_EQ(dense.units[0], (std::vector<int64_t>{0}));
  ResidentSet someExperts = residentPrefix(model, 13 + 8 + 3);
  EXPECT_EQ(someExperts.units[1][3], 8);
  EXPECT_EQ(someExperts.units[2][3], 3);
  EXPECT_EQ(someExperts.units[3][3], 0);
  EXPECT_EQ(residentPrefix(model, 46).units[0][0], 1);
}

TEST(PlanTest, MemoryErrorNamesThePoolAndTheShortfall) {
  HardwareProfile profile = syntheticProfile(80 * kGiB, 116 * kGiB);
  MemoryUse use;
  use.hostWeightBytes = int64_t(131.2 * double(kGiB));
  Status status = checkMemory(use, profile);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "host memory: plan needs 131.2 GiB, budget 116.0 GiB (short by "
            "15.2 GiB)");

  use.activationBytes = 81 * kGiB;
  status = checkMemory(use, profile);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "GPU memory: plan needs 81.0 GiB, budget 80.0 GiB (short by 1.0 "
            "GiB); host memory: plan needs 131.2 GiB, budget 116.0 GiB (short "
            "by 15.2 GiB)");

  EXPECT_TRUE(checkMemory(MemoryUse{}, profile).ok());

  // Small plans get a unit that shows their numbers.
  HardwareProfile small = syntheticProfile(100 << 20, 116 * kGiB);
  use = MemoryUse{};
  use.kvStagingBytes = 150 << 20;
  status = checkMemory(use, small);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "GPU memory: plan needs 150.0 MiB, budget 100.0 MiB (short by "
            "50.0 MiB)");
}

// A refilled batch's average decode step: a sequence of G tokens holds its
// slot for G steps and sees G/2 of them, so the mean context is
// P + E[G²] / (2·E[G]), and B / E[G] sequences finish a step.
TEST(PlanTest, DecodeContextOfARefilledBatch) {
  GenerationLengths fixed = GenerationLengths::spread(512, 8192);
  EXPECT_EQ(fixed.meanDecodeContext(), 512 + 4096);
  EXPECT_DOUBLE_EQ(fixed.finishedPerStep(1024), 1024.0 / 8192);
  // Uniform over 1..8192: E[G] = 4096.5, E[G²] = 8193·16385 / 6.
  GenerationLengths spread = GenerationLengths::spread(512, 8192, 1);
  EXPECT_EQ(spread.meanDecodeContext(),
            512 + int64_t(8193.0 * 16385 / 6 / (2 * 4096.5)));
  EXPECT_EQ(spread.meanDecodeContext(), 3242);
  EXPECT_DOUBLE_EQ(spread.finishedPerStep(1024), 1024 / 4096.5);
  EXPECT_EQ(spread.maxContext(), 512 + 8192);
  // One length spread over nothing is that length.
  EXPECT_EQ(GenerationLengths::spread(100, 50, 50).meanDecodeContext(), 125);
}

TEST(PlanTest, ValidationNamesTheVariable) {
  ModelCosts model = tinyMoe();
  Plan plan = smallPlan();
  plan.cpuAttentionShare = 1.5;
  Status status = validatePlan(model, plan);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "plan: CPU attention share must be in [0, 1], got 1.5");

  plan = smallPlan();
  plan.lengths.prompts = LengthDistribution::uniform(0, 10);
  status = validatePlan(model, plan);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "plan: shortest prompt length must be positive, got 0");

  plan = smallPlan();
  plan.kvGpuFraction = 1.5;
  status = validatePlan(model, plan);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "plan: KV GPU fraction must be in [0, 1], got 1.5");

  plan = smallPlan();
  plan.expertMicroBatch = 0;
  status = validatePlan(model, plan);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "plan: expert micro-batch must be positive, got 0");

  plan = smallPlan();
  plan.resident = residentPrefix(model, 0);
  plan.resident.units[1][3] = 9;
  status = validatePlan(model, plan);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "plan: resident set layer 1 module 3 (routed_experts): 9 units out "
            "of range [0, 8]");

  plan.resident.units.pop_back();
  status = validatePlan(model, plan);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "plan: resident set has 5 layers, model has 6");
}

TEST(PlanTest, ModelValidationNamesLayerAndModule) {
  ModelCosts model = tinyMoe(2, 4, 5);
  Status status = validateModelCosts(model);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "model costs: layer 1 module 3 (routed_experts): top-k 5 must be "
            "in [1, 4]");

  model = tinyMoe();
  model.layers[2].modules[3].expertWeightBytes += 1;
  status = validateModelCosts(model);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "model costs: layer 2 module 3 (routed_experts): 8 experts of "
            "6000001 bytes exceed the module's 48000000 weight bytes");
  EXPECT_TRUE(validateModelCosts(tinyMoe()).ok());
}

// The window bounds the tokens attention reads, not the cache the backends
// hold: a prompt's rows are all appended before the first is attended.
TEST(PlanTest, SlidingWindowBoundsTheReadNotTheHeldKv) {
  ModelCosts model = tinyMoe(1);
  model.layers[1].modules[1].kvWindowTokens = 64;
  const ModuleCosts &attention = model.layers[1].modules[1];
  EXPECT_EQ(attendedTokens(attention, 150), 64);
  EXPECT_EQ(attendedTokens(attention, 10), 10);
  EXPECT_EQ(kvBytesPerSequence(model, 150), 150 * 512);
}

} // namespace
} // namespace moe::costmodel
