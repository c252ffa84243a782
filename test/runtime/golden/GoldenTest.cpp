// The CPU backend reproduces HuggingFace transformers (test/golden): prompt
// logits and the logits of every greedy step within rel-L2 1e-4, the same
// greedy tokens, whether sequences run alone or batched with others of
// different lengths, and for two plans of each model.

#include "runtime/backends/cpu/CpuBackend.h"
#include "runtime/engine/Engine.h"
#include "runtime/plan/LoadedPlan.h"
#include "runtime/weights/Safetensors.h"
#include "runtime/weights/WeightSet.h"
#include "test/runtime/golden/GoldenFixture.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace moe {
namespace {

constexpr double kTolerance = 1e-4;

double relativeL2(const float *got, const std::vector<float> &want) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    norm += double(want[i]) * want[i];
  }
  return std::sqrt(diff / norm);
}

class GoldenTest : public ::testing::TestWithParam<const char *> {
protected:
  void SetUp() override {
    golden_ = loadGolden(std::string(MOE_GOLDEN_DIR) + "/" + GetParam());
    for (const char *suffix : {"", ".planned"}) {
      auto plan = LoadedPlan::fromFile(std::string(MOE_GOLDEN_PLANS) + "/" +
                                       GetParam() + suffix + ".moeplan");
      ASSERT_TRUE(plan.ok()) << plan.error().message();
      plans_.push_back(std::move(*plan));
    }
    auto weights = WeightSet::fromCheckpoint(
        std::string(MOE_GOLDEN_DIR) + "/" + GetParam(), plans_[0].model());
    ASSERT_TRUE(weights.ok()) << weights.error().message();
    weights_.emplace(std::move(*weights));
  }

  Golden golden_;
  std::vector<LoadedPlan> plans_;
  std::optional<WeightSet> weights_;
};

// All four prompts in one prefill batch, every position's logits.
TEST_P(GoldenTest, PromptLogitsMatchInOneMixedBatch) {
  CpuBackend backend(2);
  ASSERT_TRUE(backend.prepare(plans_[0], *weights_, 4, 64).ok());
  StepBatch batch;
  for (size_t p = 0; p < golden_.prompts.size(); ++p)
    for (size_t t = 0; t < golden_.prompts[p].size(); ++t) {
      batch.tokenIds.push_back(golden_.prompts[p][t]);
      batch.rows.push_back({int32_t(p), int32_t(t)});
      batch.logitRows.push_back(int32_t(batch.rows.size()) - 1);
    }
  std::vector<float> logits;
  ASSERT_TRUE(backend.forward(batch, logits).ok());
  size_t offset = 0;
  for (size_t p = 0; p < golden_.prompts.size(); ++p) {
    std::vector<float> want = golden_.rows("prompt_logits_" + std::to_string(p));
    EXPECT_LE(relativeL2(logits.data() + offset, want), kTolerance)
        << "prompt " << p;
    offset += want.size();
  }
}

// Greedy decoding step by step, all prompts together: the logits of every
// step, fed HF's own tokens, match HF's.
TEST_P(GoldenTest, GeneratedLogitsMatchStepByStep) {
  CpuBackend backend(2);
  ASSERT_TRUE(backend.prepare(plans_[0], *weights_, 4, 64).ok());
  size_t prompts = golden_.prompts.size();
  std::vector<std::vector<float>> want(prompts);
  for (size_t p = 0; p < prompts; ++p)
    want[p] = golden_.rows("generated_logits_" + std::to_string(p));
  size_t steps = golden_.generated[0].size();
  for (size_t s = 0; s < steps; ++s) {
    StepBatch batch;
    for (size_t p = 0; p < prompts; ++p) {
      const std::vector<int32_t> &prompt = golden_.prompts[p];
      if (s == 0) {
        for (size_t t = 0; t < prompt.size(); ++t) {
          batch.tokenIds.push_back(prompt[t]);
          batch.rows.push_back({int32_t(p), int32_t(t)});
        }
      } else {
        batch.tokenIds.push_back(golden_.generated[p][s - 1]);
        batch.rows.push_back({int32_t(p), int32_t(prompt.size() + s - 1)});
      }
      batch.logitRows.push_back(int32_t(batch.rows.size()) - 1);
    }
    std::vector<float> logits;
    ASSERT_TRUE(backend.forward(batch, logits).ok());
    for (size_t p = 0; p < prompts; ++p) {
      std::vector<float> row(want[p].begin() + s * golden_.vocab,
                             want[p].begin() + (s + 1) * golden_.vocab);
      EXPECT_LE(relativeL2(logits.data() + p * golden_.vocab, row), kTolerance)
          << "prompt " << p << " step " << s;
    }
  }
}

// The engine's greedy answers equal HF's for both plans and any B.
TEST_P(GoldenTest, GreedyTokensMatchForEveryPlanAndBatch) {
  for (size_t planIndex = 0; planIndex < plans_.size(); ++planIndex) {
    for (int32_t residentBatch : {1, 3, 4}) {
      CpuBackend backend(2);
      ASSERT_TRUE(
          backend.prepare(plans_[planIndex], *weights_, residentBatch, 64).ok());
      EngineOptions options;
      options.residentBatch = residentBatch;
      options.maxContext = 64; // EOS off: HF generated through it
      Engine engine(backend, int32_t(golden_.vocab), options);
      size_t next = 0;
      std::map<int64_t, std::vector<int32_t>> answers;
      Status status = engine.run(
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
            << "plan " << planIndex << " B=" << residentBatch << " prompt "
            << p;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    HuggingFace, GoldenTest,
    ::testing::Values("tiny-mixtral", "tiny-deepseek-v2", "tiny-deepseek-v3",
                      "tiny-qwen2-moe", "tiny-qwen3-moe",
                      "tiny-minimax-partial-rope", "tiny-gpt-oss"),
    [](const auto &info) {
      std::string name = info.param;
      for (char &c : name)
        if (c == '-')
          c = '_';
      return name;
    });

} // namespace
} // namespace moe
