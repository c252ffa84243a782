#include "test/runtime/conformance/GoldenConformance.h"

#include <algorithm>

namespace moe {

std::vector<GoldenCase> goldenCases(const BackendUnderTest &backend,
                                    const std::vector<std::string> &models) {
  std::vector<GoldenCase> cases;
  for (const std::string &model : models)
    cases.push_back({&backend, model});
  return cases;
}

std::string goldenCaseName(const ::testing::TestParamInfo<GoldenCase> &info) {
  std::string name = info.param.model;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

void GoldenBackendTest::SetUp() {
  std::string unavailable = GetParam().backend->unavailableReason();
  if (!unavailable.empty())
    GTEST_SKIP() << "the " << GetParam().backend->name
                 << " backend cannot run here: " << unavailable;
  golden_ = loadGolden(model());
  auto plan = loadGoldenPlan(model(), planName());
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  plan_.emplace(std::move(*plan));
  auto weights = loadGoldenWeights(model(), *plan_);
  ASSERT_TRUE(weights.ok()) << weights.error().message();
  weights_.emplace(std::move(*weights));
}

void GoldenBackendTest::prepare(Backend &backend, int32_t slots) {
  Status status = backend.prepare(*plan_, *weights_, slots, kContext);
  ASSERT_TRUE(status.ok()) << status.error().message();
}

void GoldenBackendTest::expectPromptsMatchHuggingFace(Backend &backend,
                                                      const std::string &what) {
  ASSERT_NO_FATAL_FAILURE(prepare(backend));
  std::vector<float> logits;
  Status status = backend.forward(promptBatch(golden_), logits);
  ASSERT_TRUE(status.ok()) << status.error().message();
  LogitComparison all(tolerance());
  size_t offset = 0;
  for (size_t p = 0; p < golden_.prompts.size(); ++p) {
    std::vector<float> want =
        golden_.rows("prompt_logits_" + std::to_string(p));
    size_t positions = want.size() / size_t(golden_.vocab);
    all.add("prompt " + std::to_string(p), logits.data() + offset, want.data(),
            int64_t(positions), golden_.vocab,
            routerTies(golden_, tolerance(), p, 0, positions));
    offset += want.size();
  }
  all.expectWithin(model() + " " + what);
}

namespace {

// All four prompts in one prefill batch, every position's logits.
TEST_P(GoldenConformance, PromptLogitsMatchHuggingFaceInOneMixedBatch) {
  std::unique_ptr<Backend> backend = makeBackend();
  expectPromptsMatchHuggingFace(*backend, "prompts vs HF");
}

// Greedy decoding step by step, all prompts together: the logits of every
// step, fed HF's own tokens, match HF's.
TEST_P(GoldenConformance, GeneratedLogitsMatchHuggingFaceStepByStep) {
  std::unique_ptr<Backend> backend = makeBackend();
  ASSERT_NO_FATAL_FAILURE(prepare(*backend));
  size_t prompts = golden_.prompts.size(), steps = golden_.generated[0].size();
  std::vector<std::vector<float>> want(prompts);
  for (size_t p = 0; p < prompts; ++p)
    want[p] = golden_.rows("generated_logits_" + std::to_string(p));
  LogitComparison all(tolerance());
  for (size_t s = 0; s < steps; ++s) {
    std::vector<float> logits;
    Status status = backend->forward(greedyStepBatch(golden_, s), logits);
    ASSERT_TRUE(status.ok()) << status.error().message();
    for (size_t p = 0; p < prompts; ++p)
      all.add("prompt " + std::to_string(p) + " step " + std::to_string(s),
              logits.data() + p * golden_.vocab,
              want[p].data() + s * golden_.vocab, 1, golden_.vocab,
              routerTies(golden_, tolerance(), p,
                         golden_.prompts[p].size() - 1 + s, 1));
  }
  all.expectWithin(model() + " decode vs HF");
}

} // namespace
} // namespace moe
