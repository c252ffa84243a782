#include "runtime/costmodel/PlanSearch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>

#include "TestSupport.h"

namespace moe::costmodel {
namespace {

using testing::syntheticProfile;
using testing::tinyMoe;

constexpr int64_t kMB = 1'000'000;
const GenerationLengths kLengths = GenerationLengths::spread(100, 50);

SearchOptions smallSpace() {
  SearchOptions options;
  options.residentBatches = {1, 2, 4, 8, 16, 32, 64, 128};
  options.decodeMicroBatches = {1, 4, 16, 64};
  options.prefillMicroBatches = {1, 2, 8};
  options.prefillChunkTokens = 200;
  options.expertMicroBatches = {16, 1024};
  options.prefetchDepths = {1, 2};
  options.kvGpuFractions = {0, 0.5, 1};
  return options;
}

// Batches large enough that memory, not the grid, bounds B.
SearchOptions largeBatches() {
  SearchOptions options = smallSpace();
  options.residentBatches = {16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  options.decodeMicroBatches = {64};
  return options;
}

// The priced prefill of `plan`, or nothing when it does not fit memory.
std::optional<double> prefillSeconds(const ModelCosts &model,
                                     const HardwareProfile &profile,
                                     const Plan &plan) {
  if (!checkMemory(accountMemory(model, plan), profile).ok())
    return std::nullopt;
  auto prefill = buildPrefillDag(model, plan, profile);
  EXPECT_TRUE(prefill.ok());
  auto evaluation = evaluate(prefill->dag);
  EXPECT_TRUE(evaluation.ok());
  return evaluation->makespan;
}

PlanChoice chosen(const ModelCosts &model, const HardwareProfile &profile,
                  const SearchOptions &options) {
  auto choice = selectPlan(model, profile, kLengths, options);
  EXPECT_TRUE(choice.ok()) << choice.error().message();
  return choice.ok() ? std::move(*choice) : PlanChoice{};
}

// Every combination of the space, with every residency prefix, ranked by
// the decode step (as a tail's plan is).
TEST(PlanSearchTest, MatchesBruteForceEnumeration) {
  ModelCosts model = tinyMoe();
  HardwareProfile profile = syntheticProfile(150 * kMB, 240 * kMB);
  SearchOptions options = smallSpace();
  options.refills = false;
  PlanChoice choice = chosen(model, profile, options);

  std::optional<Candidate> best;
  size_t units = residencyOrder(model).size();
  for (double fraction : options.kvGpuFractions)
    for (int64_t depth : options.prefetchDepths)
      for (int64_t expertBatch : options.expertMicroBatches)
        for (int64_t batch : options.residentBatches)
          for (int64_t microBatch : options.decodeMicroBatches) {
            for (size_t count = 0; count <= units; ++count) {
              Plan plan;
              plan.residentBatch = batch;
              plan.attentionMicroBatchPrefill = reservedPrefillMicroBatch(
                  options, batch, kLengths.promptTokens());
              plan.attentionMicroBatchDecode = std::min(microBatch, batch);
              plan.expertMicroBatch = expertBatch;
              plan.prefetchDepth = depth;
              plan.kvGpuFraction = fraction;
              plan.lengths = kLengths;
              plan.resident = residentPrefix(model, int64_t(count));
              auto candidate = evaluatePlan(model, profile, plan);
              if (candidate.ok() && (!best || candidate->decodeTokensPerSecond >
                                                  best->decodeTokensPerSecond))
                best = *candidate;
            }
          }
  ASSERT_TRUE(best);
  EXPECT_NEAR(choice.best.decodeTokensPerSecond, best->decodeTokensPerSecond,
              1e-9 * best->decodeTokensPerSecond);
  EXPECT_EQ(choice.best.plan.residentBatch, best->plan.residentBatch);

  // The prefill micro-batch is the fastest feasible one for the winner.
  double fastestPrefill = 0;
  std::vector<int64_t> chunks = options.prefillMicroBatches;
  chunks.push_back(reservedPrefillMicroBatch(
      options, choice.best.plan.residentBatch, kLengths.promptTokens()));
  for (int64_t chunk : chunks) {
    Plan plan = choice.best.plan;
    plan.attentionMicroBatchPrefill = std::min(chunk, plan.residentBatch);
    std::optional<double> seconds = prefillSeconds(model, profile, plan);
    if (seconds && (fastestPrefill == 0 || *seconds < fastestPrefill))
      fastestPrefill = *seconds;
  }
  EXPECT_DOUBLE_EQ(choice.prefillSeconds, fastestPrefill);
  EXPECT_DOUBLE_EQ(choice.prefillTokensPerSecond,
                   double(choice.best.plan.residentBatch) * 100 /
                       fastestPrefill);
  EXPECT_DOUBLE_EQ(choice.decode.makespan, choice.best.decodeStepSeconds);
  EXPECT_TRUE(checkMemory(choice.best.memory, profile).ok());
}

// b_e rarely changes the decode step's price (few rows reach an expert);
// it is chosen for prefill among the values that price the decode step as
// the winner's: none of them prefills faster with any prefill micro-batch
// that fits, and of equally fast settings the larger b_e is kept. Here no
// expert gets 1,024 rows: all three price both phases alike (the decode
// search alone keeps the first) and the largest is chosen.
TEST(PlanSearchTest, ExpertMicroBatchIsTheFastestPrefillOfDecodeTies) {
  ModelCosts model = tinyMoe();
  HardwareProfile profile = syntheticProfile(150 * kMB, 240 * kMB);
  SearchOptions options = smallSpace();
  options.expertMicroBatches = {1024, 4096, 16384};
  PlanChoice choice = chosen(model, profile, options);
  const Plan &best = choice.best.plan;
  int decodeTies = 0;
  for (int64_t expertBatch : options.expertMicroBatches) {
    Plan plan = best;
    plan.expertMicroBatch = expertBatch;
    auto decode = evaluatePlan(model, profile, plan);
    if (!decode.ok() ||
        decode->decodeTokensPerSecond < choice.best.decodeTokensPerSecond)
      continue;
    ++decodeTies;
    std::vector<int64_t> chunks = options.prefillMicroBatches;
    chunks.push_back(best.attentionMicroBatchPrefill);
    for (int64_t chunk : chunks) {
      plan.attentionMicroBatchPrefill = std::min(chunk, plan.residentBatch);
      std::optional<double> seconds = prefillSeconds(model, profile, plan);
      if (!seconds)
        continue;
      EXPECT_GE(*seconds, choice.prefillSeconds)
          << "b_e " << expertBatch << ", prefill micro-batch " << chunk;
      if (*seconds == choice.prefillSeconds &&
          plan.attentionMicroBatchPrefill == best.attentionMicroBatchPrefill) {
        EXPECT_LE(expertBatch, best.expertMicroBatch);
      }
    }
  }
  EXPECT_EQ(decodeTies, 3);
  EXPECT_EQ(best.expertMicroBatch, 16384);
}

TEST(PlanSearchTest, MoreHostMemoryAllowsALargerBatch) {
  ModelCosts model = tinyMoe();
  SearchOptions options = largeBatches();
  options.kvGpuFractions = {0};
  PlanChoice tight =
      chosen(model, syntheticProfile(150 * kMB, 225 * kMB), options);
  PlanChoice roomy =
      chosen(model, syntheticProfile(150 * kMB, 260 * kMB), options);
  EXPECT_LT(tight.best.plan.residentBatch, roomy.best.plan.residentBatch);
  EXPECT_LT(tight.best.decodeTokensPerSecond, roomy.best.decodeTokensPerSecond);
}

TEST(PlanSearchTest, TighterGpuBudgetStreamsMore) {
  ModelCosts model = tinyMoe();
  SearchOptions options = smallSpace();
  PlanChoice fits =
      chosen(model, syntheticProfile(1000 * kMB, 1000 * kMB), options);
  EXPECT_EQ(fits.best.decodeTraffic.weightBytesToGpu, 0);
  EXPECT_EQ(fits.best.memory.hostWeightBytes, 0);

  PlanChoice half =
      chosen(model, syntheticProfile(200 * kMB, 1000 * kMB), options);
  PlanChoice small =
      chosen(model, syntheticProfile(120 * kMB, 1000 * kMB), options);
  EXPECT_GT(half.best.decodeTraffic.weightBytesToGpu, 0);
  EXPECT_GT(small.best.decodeTraffic.weightBytesToGpu,
            half.best.decodeTraffic.weightBytesToGpu);
  EXPECT_EQ(small.best.decodeRoofline.bound, RooflineBound::PcieBytes);
}

// A model with recurrent states (lightning attention) keeps all KV on the
// GPU, where the CUDA backend keeps those states: where the same model
// without them puts KV in host memory, it plans a smaller batch instead,
// and without KV share 1 among the candidates there is no plan, saying why.
TEST(PlanSearchTest, RecurrentStatesKeepAllKvOnTheGpu) {
  ModelCosts model = tinyMoe();
  SearchOptions options = largeBatches();
  HardwareProfile profile = syntheticProfile(150 * kMB, 260 * kMB);
  PlanChoice plain = chosen(model, profile, options);
  ASSERT_GT(plain.best.plan.hostKvSequences(), 0);
  model.layers[1].modules[1].stateBytesPerSequence = 4096;
  PlanChoice stateful = chosen(model, profile, options);
  EXPECT_EQ(stateful.best.plan.kvGpuFraction, 1.0);
  EXPECT_EQ(stateful.best.plan.hostKvSequences(), 0);
  for (const RunnerUp &runnerUp : stateful.runnerUps)
    EXPECT_EQ(runnerUp.plan.kvGpuFraction, 1.0);
  options.kvGpuFractions = {0, 0.5};
  auto none = selectPlan(model, profile, kLengths, options);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().message(),
            "no plan: no candidate keeps all KV on the GPU (KV share 1); the "
            "model's lightning attention states stay on the GPU, and with "
            "them all of its sequences' KV");
}

// With KV in host memory the prefill micro-batch stays within the decode
// one (the backend's staging buffers hold the larger, the plan counts the
// decode one); of equally fast ones it is the largest.
TEST(PlanSearchTest, PrefillMicroBatchFitsTheDecodeStaging) {
  ModelCosts model = tinyMoe();
  SearchOptions options = largeBatches();
  options.kvGpuFractions = {0};
  options.decodeMicroBatches = {4};
  options.prefillMicroBatches = {1, 2, 4, 8, 16};
  PlanChoice choice =
      chosen(model, syntheticProfile(150 * kMB, 260 * kMB), options);
  ASSERT_GT(choice.best.plan.hostKvSequences(), 0);
  EXPECT_EQ(choice.best.plan.attentionMicroBatchDecode, 4);
  EXPECT_LE(choice.best.plan.attentionMicroBatchPrefill, 4);
  // No smaller one is faster, and a larger one of the same time won.
  for (int64_t microBatch : {1, 2, 4}) {
    Plan plan = choice.best.plan;
    plan.attentionMicroBatchPrefill = microBatch;
    auto prefill = buildPrefillDag(model, plan, syntheticProfile());
    ASSERT_TRUE(prefill.ok());
    auto evaluation = evaluate(prefill->dag);
    ASSERT_TRUE(evaluation.ok());
    EXPECT_GE(evaluation->makespan, choice.prefillSeconds) << microBatch;
    if (microBatch > choice.best.plan.attentionMicroBatchPrefill) {
      EXPECT_GT(evaluation->makespan, choice.prefillSeconds) << microBatch;
    }
  }
}

// Ranked by the job's rate (a job's plan) or by the decode step's (a
// tail's), slowest last and the infeasible after them.
TEST(PlanSearchTest, RunnerUpsSayWhyTheyLost) {
  ModelCosts model = tinyMoe();
  for (bool refills : {true, false}) {
    SCOPED_TRACE(refills ? "ranked by the job" : "ranked by the decode step");
    SearchOptions options = largeBatches();
    options.refills = refills;
    PlanChoice choice =
        chosen(model, syntheticProfile(150 * kMB, 240 * kMB), options);
    ASSERT_FALSE(choice.runnerUps.empty());
    EXPECT_GT(choice.candidatesEvaluated, choice.runnerUps.size());
    auto rate = [&](const RunnerUp &runnerUp) {
      return refills ? *runnerUp.jobTokensPerSecond
                     : *runnerUp.decodeTokensPerSecond;
    };
    bool sawInfeasible = false;
    double previous = refills ? choice.best.jobTokensPerSecond
                              : choice.best.decodeTokensPerSecond;
    for (const RunnerUp &runnerUp : choice.runnerUps) {
      SCOPED_TRACE(runnerUp.whyLost);
      if (!runnerUp.decodeTokensPerSecond) {
        sawInfeasible = true;
        EXPECT_FALSE(runnerUp.jobTokensPerSecond);
        EXPECT_EQ(runnerUp.whyLost.rfind("infeasible: ", 0), 0u);
        EXPECT_NE(runnerUp.whyLost.find("memory: plan needs"),
                  std::string::npos);
        EXPECT_GT(runnerUp.plan.residentBatch, choice.best.plan.residentBatch);
        continue;
      }
      EXPECT_FALSE(sawInfeasible) << "infeasible runner-ups come last";
      ASSERT_EQ(runnerUp.jobTokensPerSecond.has_value(), refills);
      EXPECT_LE(rate(runnerUp), previous);
      previous = rate(runnerUp);
      EXPECT_EQ(runnerUp.whyLost.rfind("slower by ", 0), 0u);
      EXPECT_EQ(runnerUp.whyLost.find("new tok/s of the job") !=
                    std::string::npos,
                refills);
    }
    EXPECT_TRUE(sawInfeasible);
  }
}

// Two-token answers: a job of one decode step per prefill pass. On a GPU
// that holds the model at B 256, the fastest decode step is there, but at
// B 512 each pass streams the weights the GPU no longer holds once for
// twice the prompts, and the job makes more new tokens a second.
TEST(PlanSearchTest, TheJobsRateChoosesThePlan) {
  ModelCosts model = tinyMoe();
  HardwareProfile profile = syntheticProfile(300 * kMB, 240 * kMB);
  const GenerationLengths twoTokens = GenerationLengths::spread(100, 2);
  SearchOptions options = largeBatches();
  options.refills = false;
  auto byDecode = selectPlan(model, profile, twoTokens, options);
  options.refills = true;
  auto byJob = selectPlan(model, profile, twoTokens, options);
  ASSERT_TRUE(byDecode.ok() && byJob.ok());
  EXPECT_EQ(byDecode->best.plan.residentBatch, 256);
  EXPECT_EQ(byJob->best.plan.residentBatch, 512);
  EXPECT_LT(byJob->best.decodeTokensPerSecond,
            byDecode->best.decodeTokensPerSecond);
  Candidate decodeBest = byDecode->best;
  ASSERT_TRUE(priceRefills(model, profile, decodeBest).ok());
  EXPECT_GT(byJob->best.jobTokensPerSecond, decodeBest.jobTokensPerSecond);

  // The winner's rate as moe-run refills it: generations of one length
  // refill the whole batch after each decode step, the pass's prefill of
  // all B prompts priced by its DAG.
  const Candidate &best = byJob->best;
  EXPECT_EQ(best.refillSlots, refillSlots(512, 2, best.decodeStepSeconds,
                                          best.decodeWeightCopySeconds));
  EXPECT_EQ(best.refill.prompts, 512);
  EXPECT_DOUBLE_EQ(best.refill.steps, 1);
  auto pass = buildPrefillDag(model, best.plan, profile, 512);
  ASSERT_TRUE(pass.ok());
  auto passTime = evaluate(pass->dag);
  ASSERT_TRUE(passTime.ok());
  EXPECT_DOUBLE_EQ(best.refillPassSeconds, passTime->makespan);
  EXPECT_DOUBLE_EQ(best.jobTokensPerSecond,
                   2 * 512 / (best.decodeStepSeconds + passTime->makespan));
}

// A host that attends as fast as PCIe copies takes the share of the host KV
// that balances the two (here all of it: the link also carries weights);
// the plan without it is a runner-up, slower. A host
// a thousand times slower gets no share, and a fixed share is kept.
TEST(PlanSearchTest, HostAttendsTheShareThatBalancesTheLink) {
  ModelCosts model = tinyMoe();
  SearchOptions options = largeBatches();
  options.kvGpuFractions = {0};
  HardwareProfile fast =
      testing::withHostAttention(1e9, 20e9, 150 * kMB, 240 * kMB);
  PlanChoice choice = chosen(model, fast, options);
  const Plan &best = choice.best.plan;
  EXPECT_GT(best.cpuAttentionSequences(), 0);
  EXPECT_LE(best.cpuAttentionSequences(), best.hostKvSequences());
  auto withoutHost = std::find_if(
      choice.runnerUps.begin(), choice.runnerUps.end(),
      [](const RunnerUp &r) { return r.plan.cpuAttentionShare == 0; });
  ASSERT_NE(withoutHost, choice.runnerUps.end());
  ASSERT_TRUE(withoutHost->decodeTokensPerSecond);
  EXPECT_LT(*withoutHost->decodeTokensPerSecond,
            choice.best.decodeTokensPerSecond);

  HardwareProfile slow =
      testing::withHostAttention(1e6, 20e9, 150 * kMB, 240 * kMB);
  EXPECT_EQ(chosen(model, slow, options).best.plan.cpuAttentionShare, 0);

  options.hostAttentionShare = 0.25;
  PlanChoice fixed = chosen(model, fast, options);
  EXPECT_EQ(fixed.best.plan.cpuAttentionShare, 0.25);
  options.hostAttentionShare = 0.25;
  auto unmeasured = selectPlan(model, syntheticProfile(150 * kMB, 240 * kMB),
                               kLengths, options);
  ASSERT_FALSE(unmeasured.ok());
  EXPECT_EQ(unmeasured.error().message(),
            "plan search: a host attention share needs softmax attention in "
            "every layer and the profile's host_cpu attention measurements "
            "for bf16 KV");
}

TEST(PlanSearchTest, ImpossibleBudgetNamesThePool) {
  ModelCosts model = tinyMoe();
  // The host cannot hold the streamed weights: even B = 1 needs ~218 MB
  // between the pools.
  auto choice = selectPlan(model, syntheticProfile(60 * kMB, 100 * kMB),
                           kLengths, smallSpace());
  ASSERT_FALSE(choice.ok());
  const std::string &message = choice.error().message();
  EXPECT_EQ(message.rfind("no plan fits the memory budgets; smallest "
                          "candidate (B=1 ",
                          0),
            0u)
      << message;
  EXPECT_NE(message.find("host memory: plan needs"), std::string::npos)
      << message;
}

TEST(PlanSearchTest, DefaultGridsSearchAReasonableSpace) {
  ModelCosts model = tinyMoe();
  SearchOptions options;
  options.maxResidentBatch = 512;
  PlanChoice choice =
      chosen(model, syntheticProfile(150 * kMB, 240 * kMB), options);
  EXPECT_GT(choice.best.plan.residentBatch, 1);
  EXPECT_GT(choice.prefillTokensPerSecond, 0);
  EXPECT_GT(choice.best.decodeTokensPerSecond, 0);
}

} // namespace
} // namespace moe::costmodel
