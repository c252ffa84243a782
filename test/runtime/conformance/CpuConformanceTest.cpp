// The CPU backend in the conformance suite: fp32 like HF, so its logits are
// within rel-L2 1e-4 of HF's, every prompt and every step alone. Beside it,
// what only the exact backend can promise: the engine's greedy answers are
// HF's tokens for any plan and B.

#include "runtime/backends/cpu/CpuBackend.h"
#include "runtime/engine/Engine.h"
#include "test/runtime/conformance/GoldenConformance.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

namespace moe {
namespace {

const BackendUnderTest kCpu{
    .name = "CPU",
    .make = [] { return std::make_unique<CpuBackend>(2); },
    .tolerance = {.relativeL2 = 1e-4,
                  .blockRelativeL2 = 1e-4,
                  .top1Agreement = 1.0,
                  .routerTieMargin = 0},
};

INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenConformance,
                         ::testing::ValuesIn(goldenCases(kCpu)),
                         goldenCaseName);
INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenFp8KvCache,
                         ::testing::ValuesIn(goldenCases(kCpu)),
                         goldenCaseName);
INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenTailSwitch,
                         ::testing::ValuesIn(goldenCases(kCpu,
                                                         kModelsWithTailPlans)),
                         goldenCaseName);
INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenFp8Experts,
                         ::testing::ValuesIn(goldenCases(kCpu)),
                         goldenCaseName);
INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenMxfp4Experts,
                         ::testing::ValuesIn(goldenCases(kCpu)),
                         goldenCaseName);

class CpuBackendGolden : public GoldenBackendTest {};

// The engine's greedy answers equal HF's for the resident plan, the
// small-card one (B 2, experts streamed) and, where the model has one, the
// plan giving the host's cores half of the decode attention (its schedule
// has host jobs; this backend runs everything on the host), for any B.
TEST_P(CpuBackendGolden, GreedyTokensMatchForEveryPlanAndBatch) {
  auto smallCard = loadGoldenPlan(model(), "small-card");
  ASSERT_TRUE(smallCard.ok()) << smallCard.error().message();
  std::vector<const LoadedPlan *> plans = {&*plan_, &*smallCard};
  std::optional<LoadedPlan> hostAttention;
  for (const char *name :
       {"tiny-mixtral", "tiny-qwen2-moe", "tiny-qwen3-moe", "tiny-gpt-oss"})
    if (model() == name) {
      auto loaded = loadGoldenPlan(model(), "host-attention");
      ASSERT_TRUE(loaded.ok()) << loaded.error().message();
      ASSERT_GT(loaded->plan().batching()->cpu_attention_share(), 0.0);
      plans.push_back(&hostAttention.emplace(std::move(*loaded)));
    }
  for (const LoadedPlan *plan : plans) {
    for (int32_t residentBatch : {1, 3, 4}) {
      CpuBackend backend(2);
      Status status =
          backend.prepare(*plan, *weights_, residentBatch, kContext);
      ASSERT_TRUE(status.ok()) << status.error().message();
      EngineOptions options;
      options.residentBatch = residentBatch;
      options.maxContext = kContext; // EOS off: HF generated through it
      Engine engine(backend, int32_t(golden_.vocab), options);
      size_t next = 0;
      std::map<int64_t, std::vector<int32_t>> answers;
      status = engine.run(
          [&]() -> Result<std::optional<Request>> {
            if (next == golden_.prompts.size())
              return std::optional<Request>();
            Request request{int64_t(next), golden_.prompts[next],
                            int32_t(golden_.generated[next].size())};
            ++next;
            return std::optional<Request>(request);
          },
          [&](Completion completion) {
            answers[completion.index] = completion.outputIds;
            return Status::success();
          });
      ASSERT_TRUE(status.ok()) << status.error().message();
      for (size_t p = 0; p < golden_.prompts.size(); ++p)
        EXPECT_EQ(answers[int64_t(p)], golden_.generated[p])
            << (plan == &*plan_ ? "resident" : "small-card")
            << " plan, B=" << residentBatch << ", prompt " << p;
    }
  }
}

// A KV pool of one whole context for four slots: sequences wait for pages,
// are paused and resumed with their context recomputed, and answer, greedy
// or sampled, exactly as with every slot's whole context held.
TEST_P(CpuBackendGolden, SequencesPausedForKvPagesGiveTheSameAnswers) {
  auto run = [&](int64_t kvPoolTokens, const SamplingParams &sampling) {
    CpuBackend backend(
        CpuBackendOptions{.threads = 2, .kvPoolTokens = kvPoolTokens});
    Status status = backend.prepare(*plan_, *weights_, kSlots, kContext);
    EXPECT_TRUE(status.ok()) << status.error().message();
    EngineOptions options;
    options.residentBatch = kSlots;
    options.maxContext = kContext;
    options.sampling = sampling;
    return runGoldenJob(backend, golden_, options,
                        int64_t(golden_.prompts.size()),
                        [](int64_t) { return 40; });
  };
  for (const SamplingParams &sampling :
       {SamplingParams{}, SamplingParams{1.0f, 10, 0.9f, 7}}) {
    GoldenJob whole = run(0, sampling);
    GoldenJob paged = run(kContext, sampling);
    ASSERT_EQ(paged.answers.size(), golden_.prompts.size());
    EXPECT_EQ(paged.answers, whole.answers)
        << "temperature " << sampling.temperature;
    EXPECT_GT(paged.stats.pausedSequences, 0);
    EXPECT_EQ(whole.stats.pausedSequences, 0);
    if (sampling.temperature == 0)
      for (size_t p = 0; p < golden_.prompts.size(); ++p) {
        const std::vector<int32_t> &hf = golden_.generated[p];
        std::vector<int32_t> &ours = paged.answers[int64_t(p)];
        ASSERT_GE(ours.size(), hf.size());
        EXPECT_TRUE(std::equal(hf.begin(), hf.end(), ours.begin()))
            << "prompt " << p;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(HuggingFace, CpuBackendGolden,
                         ::testing::ValuesIn(goldenCases(kCpu)),
                         goldenCaseName);

} // namespace
} // namespace moe
