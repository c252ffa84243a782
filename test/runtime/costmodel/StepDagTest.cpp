#include "runtime/costmodel/StepDag.h"
#include "runtime/model/ActivationBytes.h"

#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "TestSupport.h"

namespace moe::costmodel {
namespace {

using testing::decodePlan;
using testing::syntheticProfile;
using testing::tinyMoe;
using testing::withHostAttention;

size_t countJobs(const Dag &dag, Stream stream, Stage stage) {
  return size_t(
      std::count_if(dag.jobs().begin(), dag.jobs().end(), [&](const Job &job) {
        return job.stream == stream && job.stage == stage;
      }));
}

StepDag built(Result<StepDag> step) {
  EXPECT_TRUE(step.ok()) << step.error().message();
  return step.ok() ? std::move(*step) : StepDag{};
}

// Seconds of `stage` in one decode step, or in the prefill.
double stageSeconds(const ModelCosts &model, const Plan &plan,
                    const HardwareProfile &profile, Stage stage,
                    bool prefill = false) {
  auto step = prefill ? buildPrefillDag(model, plan, profile)
                      : buildDecodeStepDag(model, plan, profile);
  auto result = evaluate(built(std::move(step)).dag);
  EXPECT_TRUE(result.ok()) << result.error().message();
  return result.ok() ? result->stage(stage) : 0.0;
}

double makespan(const StepDag &step) {
  auto result = evaluate(step.dag);
  EXPECT_TRUE(result.ok()) << result.error().message();
  return result.ok() ? result->makespan : 0;
}

TEST(StepDagTest, AllResidentModelCopiesNothing) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  plan.kvGpuFraction = 1;
  plan.resident = residentPrefix(model, int64_t(residencyOrder(model).size()));
  StepDag step = built(buildDecodeStepDag(model, plan, syntheticProfile()));
  for (const Job &job : step.dag.jobs())
    EXPECT_EQ(job.stream, Stream::Compute) << job.label;
  EXPECT_EQ(step.traffic.bytesToGpu(), 0);
  EXPECT_EQ(step.traffic.bytesToHost, 0);
  // 4 layers x 3 micro-batches of attention, plus every other module once.
  EXPECT_EQ(countJobs(step.dag, Stream::Compute, Stage::Attention), 12u);
  EXPECT_EQ(step.dag.size(), 12u + 1 + 4 * 3 + 1);

  StepDag prefill = built(buildPrefillDag(model, plan, syntheticProfile()));
  for (const Job &job : prefill.dag.jobs())
    EXPECT_NE(job.stage, Stage::WeightCopy) << job.label;
}

TEST(StepDagTest, StreamsEveryWeightAndStagesHostKv) {
  ModelCosts model = tinyMoe();
  StepDag step =
      built(buildDecodeStepDag(model, decodePlan(model), syntheticProfile()));
  // Every module but the embedding, whose 10 rows cross instead.
  EXPECT_EQ(countJobs(step.dag, Stream::HostToDevice, Stage::WeightCopy),
            1u + 4 * 4 + 1);
  EXPECT_DOUBLE_EQ(step.traffic.weightBytesToGpu,
                   double(totalWeightBytes(model) - 8'000'000 + 10 * 1000 * 2));
  // Micro-batches of 4, 4 and 2 sequences per layer.
  EXPECT_EQ(countJobs(step.dag, Stream::HostToDevice, Stage::KvLoad), 12u);
  EXPECT_EQ(countJobs(step.dag, Stream::DeviceToHost, Stage::KvStore), 12u);
  // Mean decode context 125 tokens of 512 bytes, 10 sequences, 4 layers.
  EXPECT_DOUBLE_EQ(step.traffic.kvBytesToGpu, 4.0 * 10 * 125 * 512);
  EXPECT_DOUBLE_EQ(step.traffic.bytesToHost, 4.0 * 10 * 512);
}

TEST(StepDagTest, GpuKvNeedsNoStaging) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  plan.kvGpuFraction = 0.5;
  StepDag step = built(buildDecodeStepDag(model, plan, syntheticProfile()));
  // Five host sequences: micro-batches of 4 and 1 per layer.
  EXPECT_EQ(countJobs(step.dag, Stream::HostToDevice, Stage::KvLoad), 8u);
  EXPECT_DOUBLE_EQ(step.traffic.kvBytesToGpu, 4.0 * 5 * 125 * 512);
  EXPECT_DOUBLE_EQ(step.traffic.kvBytesRead, 4.0 * 10 * 125 * 512);
}

// Jobs name what they act on, so a runtime can execute the priced schedule:
// copies land in ring slots and staging buffers that exist, and each layer's
// attention micro-batches cover the B sequences once, in order.
TEST(StepDagTest, JobsCarryExecutableTargets) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  plan.kvGpuFraction = 0.5; // 5 GPU-KV and 5 host-KV sequences
  StepDag step = built(buildDecodeStepDag(model, plan, syntheticProfile()));
  std::vector<int64_t> covered(model.layers.size(), 0);
  for (const Job &job : step.dag.jobs()) {
    const JobTarget &target = job.target;
    EXPECT_GE(target.layer, 0) << job.label;
    EXPECT_GE(target.module, 0) << job.label;
    if (job.stage == Stage::WeightCopy) {
      EXPECT_GT(target.bytes, 0) << job.label;
      bool usesRing = model.layers[target.layer].modules[target.module].kind !=
                      ModuleKind::Embedding;
      if (usesRing) {
        EXPECT_GE(target.buffer, 0) << job.label;
        EXPECT_LT(target.buffer, plan.prefetchDepth) << job.label;
      }
    }
    if (job.stage == Stage::KvLoad || job.stage == Stage::KvStore) {
      EXPECT_GE(target.buffer, 0) << job.label;
      EXPECT_LT(target.buffer, plan.kvStagingBuffers) << job.label;
      EXPECT_GE(target.firstSequence, plan.gpuKvSequences()) << job.label;
    }
    if (job.stage == Stage::Attention && job.stream == Stream::Compute) {
      EXPECT_EQ(target.firstSequence, covered[target.layer]) << job.label;
      covered[target.layer] += target.sequences;
    }
  }
  for (size_t l = 0; l < model.layers.size(); ++l)
    if (covered[l] > 0) {
      EXPECT_EQ(covered[l], plan.residentBatch) << "layer " << l;
    }
}

TEST(StepDagTest, StreamingBoundStepIsAsLongAsItsCopies) {
  ModelCosts model = tinyMoe();
  StepDag step =
      built(buildDecodeStepDag(model, decodePlan(model), syntheticProfile()));
  auto result = evaluate(step.dag);
  ASSERT_TRUE(result.ok());
  double copies = result->busy(Stream::HostToDevice);
  EXPECT_GE(result->makespan, copies);
  EXPECT_LE(result->makespan, 1.05 * copies);
  Roofline roofline = rooflineOf(step.traffic, syntheticProfile());
  EXPECT_EQ(roofline.bound, RooflineBound::PcieBytes);
  EXPECT_DOUBLE_EQ(roofline.seconds(), step.traffic.bytesToGpu() / 1e9);
  EXPECT_LE(roofline.seconds(), result->makespan);
}

// A resident step reads its weights from GPU memory: at a small B they
// bound it (routed experts only as many as its tokens pick); a large B
// picks every expert and is bound by its FLOPs.
TEST(StepDagTest, ResidentStepIsBoundByItsWeightsThenItsFlops) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  plan.kvGpuFraction = 1;
  plan.resident = residentPrefix(model, int64_t(residencyOrder(model).size()));
  double allWeights = 0;
  for (const LayerCosts &layer : model.layers)
    for (const ModuleCosts &module : layer.modules)
      allWeights += double(module.weightBytes);
  for (int64_t batch : {int64_t(1), int64_t(10), int64_t(4000)}) {
    SCOPED_TRACE(batch);
    plan.residentBatch = batch;
    StepDag step = built(buildDecodeStepDag(model, plan, syntheticProfile()));
    Roofline roofline = rooflineOf(step.traffic, syntheticProfile());
    EXPECT_EQ(roofline.pcieSeconds, 0);
    EXPECT_LE(roofline.seconds(), makespan(step));
    EXPECT_LE(step.traffic.weightBytesRead, allWeights);
    if (batch == 1) {
      // Two of eight experts a layer; the embedding's one row.
      const ModuleCosts &routed = model.layers[1].modules[3];
      EXPECT_NEAR(step.traffic.weightBytesRead,
                  allWeights - double(model.layers[0].modules[0].weightBytes) -
                      4 * 6 * double(routed.expertWeightBytes) + 2 * 1000,
                  1.0);
    }
    EXPECT_EQ(roofline.bound, batch == 4000 ? RooflineBound::GemmFlops
                                            : RooflineBound::HbmBytes);
  }
}

TEST(StepDagTest, ShallowRingSerialisesCopyAndCompute) {
  ModelCosts model = tinyMoe();
  // Larger B makes compute visible next to the copies.
  Plan plan = decodePlan(model);
  plan.residentBatch = 4000;
  plan.attentionMicroBatchDecode = 1000;
  plan.expertMicroBatch = 1024;
  plan.prefetchDepth = 1;
  double serial =
      makespan(built(buildDecodeStepDag(model, plan, syntheticProfile())));
  plan.prefetchDepth = 2;
  double overlapped =
      makespan(built(buildDecodeStepDag(model, plan, syntheticProfile())));
  EXPECT_LT(overlapped, serial);
}

TEST(StepDagTest, MoreResidencyNeverSlowsAStep) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  double previous = 0;
  for (int64_t count = int64_t(residencyOrder(model).size()); count >= 0;
       --count) {
    plan.resident = residentPrefix(model, count);
    double seconds =
        makespan(built(buildDecodeStepDag(model, plan, syntheticProfile())));
    EXPECT_GE(seconds, previous * (1 - 1e-12)) << count;
    previous = seconds;
  }
}

TEST(StepDagTest, PrefillStreamsEachLayerOnceAndParksHiddenStates) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  StepDag prefill = built(buildPrefillDag(model, plan, syntheticProfile()));
  EXPECT_EQ(countJobs(prefill.dag, Stream::HostToDevice, Stage::WeightCopy),
            1u + 4 * 4 + 1);
  EXPECT_EQ(countJobs(prefill.dag, Stream::HostToDevice, Stage::KvLoad), 0u);
  // The step memory holds less than a 100-token prompt: chunks of one
  // prompt, whose fp32 hidden states every layer after the first loads.
  ASSERT_LT(prefillChunkRows(model, plan), 100);
  EXPECT_EQ(countJobs(prefill.dag, Stream::HostToDevice, Stage::HiddenLoad),
            5u * 10);
  EXPECT_EQ(countJobs(prefill.dag, Stream::DeviceToHost, Stage::HiddenStore),
            5u * 10);
  EXPECT_EQ(countJobs(prefill.dag, Stream::DeviceToHost, Stage::KvStore),
            4u * 10);
  EXPECT_DOUBLE_EQ(prefill.traffic.hiddenBytesToGpu, 5.0 * 10 * 100 * 1000 * 4);
  double kvStored = 4.0 * 10 * 100 * 512;
  EXPECT_DOUBLE_EQ(prefill.traffic.bytesToHost,
                   kvStored + 5.0 * 10 * 100 * 1000 * 4);
}

// A refill's pass of 3 of the 10 slots' prompts: the same layers stream
// (its 300 tokens reach nearly every expert the 1,000 do), at 3/10 of the
// prompts' work.
TEST(StepDagTest, PrefillOfSomePromptsStreamsTheSameLayers) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  HardwareProfile profile = syntheticProfile();
  StepDag all = built(buildPrefillDag(model, plan, profile));
  StepDag some = built(buildPrefillDag(model, plan, profile, 3));
  EXPECT_EQ(countJobs(some.dag, Stream::HostToDevice, Stage::WeightCopy),
            countJobs(all.dag, Stream::HostToDevice, Stage::WeightCopy));
  EXPECT_LE(some.traffic.weightBytesToGpu, all.traffic.weightBytesToGpu);
  EXPECT_GT(some.traffic.weightBytesToGpu, 0.99 * all.traffic.weightBytesToGpu);
  EXPECT_EQ(countJobs(some.dag, Stream::DeviceToHost, Stage::KvStore), 4u * 3);
  EXPECT_DOUBLE_EQ(some.traffic.flops, all.traffic.flops * 3 / 10);
  EXPECT_LT(makespan(some), makespan(all));
  for (int64_t prompts : {0, 11}) {
    auto refused = buildPrefillDag(model, plan, profile, prompts);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(
        refused.error().message(),
        fmt::format("a prefill pass takes 1..B (10) prompts, not {}", prompts));
  }
}

TEST(StepDagTest, PrefillThatOneChunkHoldsParksNothing) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  plan.residentBatch = 1;
  plan.lengths = GenerationLengths::spread(1, 50);
  ASSERT_GE(prefillChunkRows(model, plan), 1);
  StepDag prefill = built(buildPrefillDag(model, plan, syntheticProfile()));
  EXPECT_EQ(countJobs(prefill.dag, Stream::HostToDevice, Stage::HiddenLoad),
            0u);
  EXPECT_EQ(countJobs(prefill.dag, Stream::DeviceToHost, Stage::HiddenStore),
            0u);
  EXPECT_DOUBLE_EQ(prefill.traffic.hiddenBytesToGpu, 0);
}

TEST(StepDagTest, FewTokensReachFewExperts) {
  ModelCosts model = tinyMoe(1);
  Plan plan = decodePlan(model);
  plan.residentBatch = 1;
  plan.kvGpuFraction = 1;
  plan.resident = residentPrefix(model, int64_t(residencyOrder(model).size()));
  HardwareProfile profile = syntheticProfile();
  StepDag step = built(buildDecodeStepDag(model, plan, profile));
  auto result = evaluate(step.dag);
  ASSERT_TRUE(result.ok());
  // One token picks 2 of 8 experts; each runs its two GEMMs at m = 1, bound
  // by weight reads, plus one pass over the experts' step memory of the
  // token (gather, activation, combine).
  double perExpert =
      profile.gemmSeconds(1, 2000, 1000) + profile.gemmSeconds(1, 1000, 1000);
  EXPECT_NEAR(perExpert, 4.006e-6 + 2.004e-6, 1e-15);
  double rowBytes = double(model::routedExpertsRowBytes(1000, 1000, 2));
  EXPECT_NEAR(result->stage(Stage::Experts), 2 * perExpert + rowBytes / 1e12,
              1e-15);
}

TEST(StepDagTest, SmallExpertGroupsArePricedAsTheGroupedKernel) {
  ModelCosts model = tinyMoe(1);
  Plan plan = decodePlan(model);
  plan.kvGpuFraction = 1;
  plan.resident = residentPrefix(model, int64_t(residencyOrder(model).size()));
  auto grouped = HardwareProfile::fromJson(testing::groupedGemmProfileJson());
  ASSERT_TRUE(grouped.ok()) << grouped.error().message();
  HardwareProfile perExpert = syntheticProfile();
  auto experts = [&](const HardwareProfile &profile, bool prefill) {
    return stageSeconds(model, plan, profile, Stage::Experts, prefill);
  };
  // Decode: 10 tokens x top-2 over 8 experts, far below 128 rows per expert:
  // one grouped launch per GEMM over the experts the step reaches, plus one
  // pass over the experts' step memory of the tokens.
  double reached = 8 * (1 - std::pow(1 - 2.0 / 8, 10));
  int64_t rows = int64_t(std::ceil(10 * 2 / reached));
  double launches = *grouped->groupedGemmSeconds(rows, reached, 2000, 1000) +
                    *grouped->groupedGemmSeconds(rows, reached, 1000, 1000);
  double rowBytes = double(model::routedExpertsRowBytes(1000, 1000, 2));
  EXPECT_NEAR(experts(*grouped, false), launches + 10 * rowBytes / 1e12, 1e-15);
  EXPECT_NE(experts(*grouped, false), experts(perExpert, false));
  // Prefill chunks of 4 prompts of 1000 tokens give 1000 rows per expert:
  // per-expert GEMMs, priced the same with or without the measurement.
  plan.lengths = GenerationLengths::spread(1000, 50);
  EXPECT_DOUBLE_EQ(experts(*grouped, true), experts(perExpert, true));
}

// fp8 experts: the grouped kernel (decode) widens tiles as it reads them,
// so only per-expert GEMMs (prefill) pay for widening a layer first, once
// per run of the module, at the HBM rate.
TEST(StepDagTest, OnlyPerExpertGemmsPayForWideningFp8Experts) {
  ModelCosts bf16 = tinyMoe(1);
  ModelCosts fp8 = bf16;
  for (ModuleCosts &module : fp8.layers[1].modules)
    if (module.kind == ModuleKind::RoutedExperts)
      module.widenBytes = 3'000'000'000;
  Plan plan = decodePlan(bf16);
  plan.kvGpuFraction = 1;
  plan.resident = residentPrefix(bf16, int64_t(residencyOrder(bf16).size()));
  plan.lengths = GenerationLengths::spread(1000, 50);
  auto grouped = HardwareProfile::fromJson(testing::groupedGemmProfileJson());
  ASSERT_TRUE(grouped.ok()) << grouped.error().message();
  auto experts = [&](const ModelCosts &model, bool prefill) {
    return stageSeconds(model, plan, *grouped, Stage::Experts, prefill);
  };
  EXPECT_DOUBLE_EQ(experts(fp8, false), experts(bf16, false));
  double runs = experts(fp8, true) - experts(bf16, true);
  double once = grouped->hbmSeconds(3e9);
  EXPECT_GT(runs, 0);
  EXPECT_NEAR(runs / once, std::round(runs / once), 1e-9)
      << "widening is paid once per run of the module";
}

// With the block-scaled FP8 GEMM measured, fp8 experts' per-expert GEMMs
// run on their codes: no widening, the FP8 curve's times (here every GEMM a
// tenth of its bf16 time), and one pass quantizing the inputs. Decode's
// grouped launches are priced as before.
TEST(StepDagTest, Fp8ExpertsWithAnFp8CurveAreMultipliedAsCodes) {
  ModelCosts bf16 = tinyMoe(1);
  ModelCosts fp8 = bf16;
  for (ModuleCosts &module : fp8.layers[1].modules)
    if (module.kind == ModuleKind::RoutedExperts) {
      module.widenBytes = 3'000'000'000;
      module.fp8Experts = true;
    }
  Plan plan = decodePlan(bf16);
  plan.kvGpuFraction = 1;
  plan.resident = residentPrefix(bf16, int64_t(residencyOrder(bf16).size()));
  plan.lengths = GenerationLengths::spread(1000, 50);
  std::string json = testing::groupedGemmProfileJson();
  json.insert(json.rfind('}'), R"(,
  "gemm_fp8_block": [
    {"n": 1000, "k": 1000,
     "points": [{"m": 1000, "seconds": 1e-5}, {"m": 10, "seconds": 1e-6}]},
    {"n": 4000, "k": 4000, "points": [{"m": 1000, "seconds": 2e-4}]}
  ]
)");
  auto withFp8 = HardwareProfile::fromJson(json);
  ASSERT_TRUE(withFp8.ok()) << withFp8.error().message();
  auto without = HardwareProfile::fromJson(testing::groupedGemmProfileJson());
  ASSERT_TRUE(without.ok()) << without.error().message();
  auto experts = [&](const ModelCosts &model, const HardwareProfile &profile,
                     bool prefill) {
    return stageSeconds(model, plan, profile, Stage::Experts, prefill);
  };
  EXPECT_DOUBLE_EQ(experts(fp8, *withFp8, false),
                   experts(fp8, *without, false));
  // Far below widening once and multiplying at bf16's rate.
  EXPECT_LT(experts(fp8, *withFp8, true), experts(bf16, *without, true));
  EXPECT_LT(experts(fp8, *withFp8, true),
            experts(fp8, *without, true) - without->hbmSeconds(3e9));
  // bf16 experts ignore the FP8 curve.
  EXPECT_DOUBLE_EQ(experts(bf16, *withFp8, true),
                   experts(bf16, *without, true));
}

TEST(StepDagTest, MlaDecodeIsPricedByTheMeasuredKernel) {
  ModelCosts model = tinyMoe(1);
  ModuleCosts &attention = model.layers[1].modules[1];
  attention.attentionHeads.reset();
  attention.mlaHeads = MlaHeads{16, 512, 64};
  attention.kvBytesPerToken = 2 * 576;
  Plan plan = decodePlan(model);
  auto measured = HardwareProfile::fromJson(testing::mlaProfileJson());
  ASSERT_TRUE(measured.ok()) << measured.error().message();
  HardwareProfile unmeasured = syntheticProfile();
  // Micro-batches of 4, 4 and 2 sequences at the mean context of 125: the
  // measured 1 ms, 1 ms and (half the tokens) 0.5 ms in place of the KV read
  // or FLOPs bound each is priced at without the measurement.
  double bounds = 0;
  for (int sequences : {4, 4, 2})
    bounds += std::max(unmeasured.hbmSeconds(sequences * 125.0 * 2 * 576),
                       unmeasured.peakComputeSeconds(
                           sequences * 125.0 * attention.flopsPerContextToken));
  EXPECT_NEAR(stageSeconds(model, plan, *measured, Stage::Attention) -
                  stageSeconds(model, plan, unmeasured, Stage::Attention),
              2.5e-3 - bounds, 1e-12);
}

TEST(StepDagTest, PrefillAttentionWithoutItsCurveIsPricedAsDecodeRows) {
  ModelCosts model = tinyMoe(1);
  Plan plan = decodePlan(model);
  plan.kvGpuFraction = 1;
  HardwareProfile measured = syntheticProfile();
  auto unmeasured =
      HardwareProfile::fromJson(testing::profileJsonWithoutAttention());
  ASSERT_TRUE(unmeasured.ok()) << unmeasured.error().message();
  // Chunks of one prompt of 100 tokens (what the step memory holds, at
  // least one): its rows read 1 + 2 + ... + 100 = 5050 cached tokens. The
  // measured curve at one sequence of 5050 tokens replaces the bytes those
  // rows read at 1 TB/s (2 x 2 x 2 KV heads x 64 = 512 bytes a token),
  // which is what the profile without attention points gives.
  ASSERT_LT(prefillChunkRows(model, plan), 200);
  double difference = 10 * (measured.attentionDecodeSeconds(1, 5050, 8, 2, 64) -
                            5050 * 512 / 1e12);
  EXPECT_NEAR(
      stageSeconds(model, plan, measured, Stage::Attention, true) -
          stageSeconds(model, plan, *unmeasured, Stage::Attention, true),
      difference, 1e-12);
}

TEST(StepDagTest, PrefillAttentionIsPricedByItsMeasuredCurve) {
  ModelCosts model = tinyMoe(1);
  Plan plan = decodePlan(model);
  plan.kvGpuFraction = 1;
  HardwareProfile decodeCurve = syntheticProfile();
  // One prompt of 100 tokens measured at 1 ms: its 5050 (row, key) pairs.
  std::string json = testing::syntheticProfileJson();
  json.insert(json.rfind('}'), R"(,
  "attention_prefill_bf16": [
    {"heads": 8, "kv_heads": 2, "head_dim": 64,
     "points": [{"batch": 1, "context": 100, "seconds": 1e-3}]}
  ]
)");
  auto prefillCurve = HardwareProfile::fromJson(json);
  ASSERT_TRUE(prefillCurve.ok()) << prefillCurve.error().message();
  // Ten chunks of one 100-token prompt each: 1 ms each in place of the
  // decode curve's price for one row of 5050 cached tokens.
  ASSERT_LT(prefillChunkRows(model, plan), 200);
  EXPECT_NEAR(
      stageSeconds(model, plan, *prefillCurve, Stage::Attention, true) -
          stageSeconds(model, plan, decodeCurve, Stage::Attention, true),
      10 * (1e-3 - decodeCurve.attentionDecodeSeconds(1, 5050, 8, 2, 64)),
      1e-12);
  // Decode steps keep the decode curve.
  EXPECT_DOUBLE_EQ(stageSeconds(model, plan, *prefillCurve, Stage::Attention),
                   stageSeconds(model, plan, decodeCurve, Stage::Attention));
}

TEST(StepDagTest, RecurrentStateIsStagedLikeKv) {
  ModelCosts model = tinyMoe(1);
  ModuleCosts &attention = model.layers[1].modules[1];
  attention.kvBytesPerToken = 0;
  attention.attentionHeads.reset();
  attention.flopsPerContextToken = 0;
  attention.stateBytesPerSequence = 1'000'000;
  Plan plan = decodePlan(model);
  StepDag step = built(buildDecodeStepDag(model, plan, syntheticProfile()));
  // The whole state goes in and comes back for each of the 10 sequences.
  EXPECT_DOUBLE_EQ(step.traffic.kvBytesToGpu, 10e6);
  EXPECT_DOUBLE_EQ(step.traffic.bytesToHost, 10e6);
}

TEST(StepDagTest, SlidingWindowBoundsTheKvRead) {
  ModelCosts model = tinyMoe(1);
  model.layers[1].modules[1].kvWindowTokens = 50;
  StepDag step =
      built(buildDecodeStepDag(model, decodePlan(model), syntheticProfile()));
  EXPECT_DOUBLE_EQ(step.traffic.kvBytesToGpu, 10.0 * 50 * 512);
  EXPECT_DOUBLE_EQ(step.traffic.kvBytesRead, 10.0 * 50 * 512);
}

TEST(StepDagTest, SlidingWindowPrefillStoresEveryPromptRow) {
  ModelCosts model = tinyMoe();
  for (int l = 1; l <= 4; ++l)
    model.layers[size_t(l)].modules[1].kvWindowTokens = 50;
  StepDag prefill =
      built(buildPrefillDag(model, decodePlan(model), syntheticProfile()));
  double kvStored = 4.0 * 10 * 100 * 512;
  EXPECT_DOUBLE_EQ(prefill.traffic.bytesToHost,
                   kvStored + 5.0 * 10 * 100 * 1000 * 4);
}

TEST(StepDagTest, RejectsInvalidPlans) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  plan.kvGpuFraction = 0.5;
  plan.cpuAttentionShare = 0.6;
  auto step = buildDecodeStepDag(model, plan, syntheticProfile());
  ASSERT_FALSE(step.ok());
  EXPECT_EQ(step.error().message(),
            "plan: CPU attention share 0.6 attends 6 sequences, but only 5 "
            "keep their KV in host memory");
}

// B 10, all KV on the host, 4 of the sequences attended by the host's cores
// at 1 GB/s (its read rate halved beside the GPU's copies): per layer the
// GPU loads the KV of 6 sequences, the host reads that of 4 for twice as
// long as 1 GB/s would take, their queries and new K/V rows go to the
// host and the outputs come back.
TEST(StepDagTest, HostAttendsItsShareOfTheHostKv) {
  ModelCosts model = tinyMoe();
  Plan plan = decodePlan(model);
  plan.cpuAttentionShare = 0.4;
  HardwareProfile profile = withHostAttention(1e9, 10e9);
  StepDag step = built(buildDecodeStepDag(model, plan, profile));
  int64_t context = plan.lengths.meanDecodeContext(); // 125
  double kvPerSequence = double(context) * 512;
  EXPECT_DOUBLE_EQ(step.traffic.kvBytesToGpu, 4 * 6 * kvPerSequence);
  EXPECT_DOUBLE_EQ(step.traffic.hostKvBytesRead, 4 * 4 * kvPerSequence);
  // Queries are 8 heads of 64 bf16 elements.
  EXPECT_DOUBLE_EQ(step.traffic.hiddenBytesToGpu, 4 * 4 * 1024.0);
  EXPECT_EQ(countJobs(step.dag, Stream::Host, Stage::HostAttention), 4u);
  for (const Job &job : step.dag.jobs()) {
    if (job.stream != Stream::Host)
      continue;
    EXPECT_EQ(job.target.firstSequence, 6);
    EXPECT_EQ(job.target.sequences, 4);
    double attention = 4 * kvPerSequence / 1e9 * 2;
    EXPECT_NEAR(job.seconds, attention + 4 * 1024 / 1e9, 1e-12);
  }
  // The host's KV bounds this step's roofline at its read rate beside DMA.
  Roofline roofline = rooflineOf(step.traffic, profile);
  EXPECT_DOUBLE_EQ(roofline.hostKvSeconds, 4 * 4 * kvPerSequence / 10e9);

  // Without the host's measurements there is no price.
  auto unpriced = buildDecodeStepDag(model, plan, syntheticProfile());
  ASSERT_FALSE(unpriced.ok());
  EXPECT_EQ(unpriced.error().message(),
            "plan: CPU attention share 0.4 needs the hardware profile's host "
            "attention measurements for bf16 KV (host_cpu: moe-run "
            "--profile-hardware)");
}

TEST(StepDagTest, HostDoesNotAttendLatentOrLinearAttention) {
  ModelCosts model = tinyMoe();
  model.layers[2].modules[1].attentionHeads.reset();
  Plan plan = decodePlan(model);
  plan.cpuAttentionShare = 0.4;
  auto step = buildDecodeStepDag(model, plan, withHostAttention(1e9));
  ASSERT_FALSE(step.ok());
  EXPECT_EQ(step.error().message(),
            "plan: CPU attention share 0.4 needs softmax attention in every "
            "layer; the host does not run MLA or linear attention");
}

} // namespace
} // namespace moe::costmodel
