#include "test/runtime/conformance/GoldenConformance.h"

#include "test/runtime/weights/CheckpointWriter.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>

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

GoldenJob runGoldenJob(Backend &backend, const Golden &golden,
                       const EngineOptions &options, int64_t requests,
                       const std::function<int32_t(int64_t)> &maxNewTokens) {
  Engine engine(backend, int32_t(golden.vocab), options);
  int64_t next = 0;
  GoldenJob job;
  Status status = engine.run(
      [&]() -> Result<std::optional<Request>> {
        if (next == requests)
          return std::optional<Request>();
        Request request{next,
                        golden.prompts[size_t(next) % golden.prompts.size()],
                        maxNewTokens(next)};
        ++next;
        return std::optional<Request>(request);
      },
      [&](Completion completion) {
        job.answers[completion.index] = completion.outputIds;
        return Status::success();
      });
  EXPECT_TRUE(status.ok()) << status.error().message();
  job.stats = engine.stats();
  return job;
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

// Element `element` of tensor `tensor` of the safetensors file at `path`
// overwritten with a NaN of its dtype, in place.
void plantNaN(const std::string &path, const std::string &tensor,
              int64_t element) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t headerBytes = 0;
  file.read(reinterpret_cast<char *>(&headerBytes), 8);
  std::string header(headerBytes, '\0');
  file.read(header.data(), std::streamsize(headerBytes));
  nlohmann::json entry = nlohmann::json::parse(header).at(tensor);
  std::string dtype = entry.at("dtype");
  std::vector<uint8_t> nan =
      dtype == "F32"    ? std::vector<uint8_t>{0, 0, 0xC0, 0x7F}
      : dtype == "BF16" ? std::vector<uint8_t>{0xC0, 0x7F}
                        : std::vector<uint8_t>{0x00, 0x7E};
  ASSERT_TRUE(dtype == "F32" || dtype == "BF16" || dtype == "F16") << dtype;
  int64_t at = 8 + int64_t(headerBytes) +
               entry.at("data_offsets")[0].get<int64_t>() +
               element * int64_t(nan.size());
  file.seekp(at);
  file.write(reinterpret_cast<const char *>(nan.data()),
             std::streamsize(nan.size()));
  ASSERT_TRUE(file.good());
}

// A damaged checkpoint (a NaN in a weight) is refused at prepare, naming
// the param and the element, before anything runs.
TEST_P(GoldenConformance, RefusesACheckpointHoldingNaN) {
  const plan::Model &model = plan_->model();
  // The last param stored whole (not stacked by expert).
  int damaged = -1;
  for (int i = 0; i < int(model.params()->size()); ++i)
    if (model.params()->Get(i)->hf_name()->str().find('{') == std::string::npos)
      damaged = i;
  ASSERT_GE(damaged, 0);
  const plan::Param &param = *model.params()->Get(damaged);
  testing::ScratchDirectory scratch;
  std::string fixture = goldenDir() + "/" + this->model();
  for (const char *file : {"config.json", "model.safetensors"})
    std::filesystem::copy_file(fixture + "/" + file, scratch.file(file));
  ASSERT_NO_FATAL_FAILURE(
      plantNaN(scratch.file("model.safetensors"), param.hf_name()->str(), 5));
  auto weights = WeightSet::fromCheckpoint(scratch.path().string(), model);
  ASSERT_TRUE(weights.ok()) << weights.error().message();
  std::unique_ptr<Backend> backend = makeBackend();
  Status status = backend->prepare(*plan_, *weights, kSlots, kContext);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find(fmt::format(
                "param {} ('{}') holds NaN at element 5: the checkpoint is "
                "damaged",
                damaged, param.name()->str())),
            std::string::npos)
      << status.error().message();
}

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

// Twelve requests of different lengths on four slots; once every request is
// admitted and two sequences are live, the job moves to its tail plan (two
// slots): its live sequences are paused, their caches recomputed on the
// tail plan's backend, and every answer is what the job gives without the
// switch (a backend whose prefill rounds unlike its decode steps may flip a
// near-tie pick of the fixtures' nearly flat logits).
TEST_P(GoldenTailSwitch, AJobFinishedOnItsTailPlanAnswersAsWithout) {
  ASSERT_EQ(plan_->phasePlans().size(), 1u)
      << model() << "'s streamed plan carries no tail plan";
  constexpr int32_t kTailSlots = 2;
  auto run = [&](bool switching) {
    std::unique_ptr<Backend> backend = makeBackend();
    EXPECT_NO_FATAL_FAILURE(prepare(*backend));
    EngineOptions options;
    options.residentBatch = kSlots;
    options.maxContext = kContext;
    bool switched = false;
    if (switching)
      options.phaseSwitch = PhaseSwitch{
          [&](std::span<const LiveSequence> live)
              -> std::optional<PhaseChange> {
            if (switched || live.size() > size_t(kTailSlots))
              return std::nullopt;
            switched = true;
            return PhaseChange{"tail", "two sequences left"};
          },
          [&](const PhaseChange &) -> Result<std::pair<Backend *, int32_t>> {
            backend.reset();
            backend = makeBackend();
            MOE_RETURN_IF_ERROR(backend->prepare(
                plan_->phasePlans()[0], *weights_, kTailSlots, kContext));
            return std::pair<Backend *, int32_t>(backend.get(), kTailSlots);
          }};
    return runGoldenJob(*backend, golden_, options, 12,
                        [](int64_t i) { return int32_t(4 + 5 * (i % 5)); });
  };
  GoldenJob whole = run(false);
  GoldenJob switched = run(true);
  ASSERT_EQ(switched.stats.phaseSwitches.size(), 1u);
  EXPECT_EQ(switched.stats.phaseSwitches[0].live.size(), size_t(kTailSlots));
  EXPECT_GT(switched.stats.phaseSwitches[0].recomputedTokens, 0);
  ASSERT_EQ(switched.answers.size(), 12u);
  int64_t tokens = 0, same = 0;
  for (const auto &[index, answer] : whole.answers) {
    const std::vector<int32_t> &other = switched.answers[index];
    EXPECT_EQ(other.size(), answer.size()) << "request " << index;
    for (size_t t = 0; t < std::min(answer.size(), other.size()); ++t)
      same += answer[t] == other[t];
    tokens += int64_t(answer.size());
  }
  EXPECT_GE(double(same),
            GetParam().backend->recomputedTokenAgreement * double(tokens))
      << same << " of " << tokens << " tokens alike";
}

} // namespace

// The logits of every prompt position and of each step of HF's
// continuations, positions HF routed by a near-tie left out (fp8's rounding
// flips those experts and changes the logits wholesale), as the backend's
// own tolerance leaves them out against HF.
void GoldenQuantizedTest::expectAgreesWithBf16(
    const std::function<void(plan::PlanT &)> &edit,
    const LogitTolerance &tolerance, const std::string &what) {
  ASSERT_NE(plan_->plan().batching(), nullptr);
  Result<LoadedPlan> fp8Plan = editPlan(*plan_, edit);
  ASSERT_TRUE(fp8Plan.ok()) << fp8Plan.error().message();
  // Per step (0: the prompts, every position) the logits of a plan.
  auto logitsOf = [&](const LoadedPlan &plan,
                      std::vector<std::vector<float>> &steps) {
    std::unique_ptr<Backend> backend = makeBackend();
    Status status = backend->prepare(plan, *weights_, kSlots, kContext);
    ASSERT_TRUE(status.ok()) << status.error().message();
    for (size_t s = 0; s < golden_.generated[0].size(); ++s) {
      std::vector<float> &logits = steps.emplace_back();
      status = backend->forward(
          s == 0 ? promptBatch(golden_) : decodeBatch(golden_, s), logits);
      ASSERT_TRUE(status.ok()) << status.error().message();
    }
  };
  std::vector<std::vector<float>> bf16, fp8;
  ASSERT_NO_FATAL_FAILURE(logitsOf(*plan_, bf16));
  ASSERT_NO_FATAL_FAILURE(logitsOf(*fp8Plan, fp8));
  LogitComparison all(tolerance);
  size_t offset = 0;
  for (size_t p = 0; p < golden_.prompts.size(); ++p) {
    size_t positions = golden_.prompts[p].size();
    all.add("prompt " + std::to_string(p),
            fp8[0].data() + offset * golden_.vocab,
            bf16[0].data() + offset * golden_.vocab, int64_t(positions),
            golden_.vocab, routerTies(golden_, tolerance, p, 0, positions));
    offset += positions;
  }
  for (size_t s = 1; s < bf16.size(); ++s)
    for (size_t p = 0; p < golden_.prompts.size(); ++p)
      all.add("prompt " + std::to_string(p) + " step " + std::to_string(s),
              fp8[s].data() + p * golden_.vocab,
              bf16[s].data() + p * golden_.vocab, 1, golden_.vocab,
              routerTies(golden_, tolerance, p,
                         golden_.prompts[p].size() - 1 + s, 1));
  all.expectWithin(model() + " " + what);
}

namespace {

// runtime/model/KvFormat.h: E4M3 with a scale per token and head. E4M3
// keeps 3 mantissa bits to bf16's 7: the logits may move by 10% (rel-L2),
// and greedy picks agree at 98% of the positions or more, counting as
// agreeing a swap of two picks within 10% of the row's logit RMS. A
// position whose expert choice the rounding flips moves by up to half
// (the fp8 experts' block bar): DeepSeek-V3's group-limited routing swaps
// several experts at once, and on the GPU bf16 flips a few more.
TEST_P(GoldenFp8KvCache, GreedyPicksAgreeWithTheBf16Cache) {
  expectAgreesWithBf16(
      [](plan::PlanT &plan) { plan.batching->kv_dtype = plan::KvDType::fp8; },
      {.relativeL2 = 0.1,
       .blockRelativeL2 = 0.6,
       .top1Agreement = 0.98,
       .routerTieMargin = 1e-2},
      "fp8 KV vs bf16 KV");
}

// runtime/model/WeightFormat.h: E4M3 with a scale per 128 x 128 block. Every
// expert weight moves, not one cached row per token: on the fixtures'
// random weights, whose logits are nearly flat (RMS 1, top-2 margins of a
// few percent), 10% of rel-L2 flips up to 5% of greedy picks, and one
// position's expert choice flipped moves its logits by half (the block
// bound). A wrong layout or scale moves them all by 100%.
TEST_P(GoldenFp8Experts, GreedyPicksAgreeWithBf16Experts) {
  expectAgreesWithBf16(
      [](plan::PlanT &plan) {
        plan.batching->weight_dtype = plan::WeightDType::fp8;
      },
      {.relativeL2 = 0.1,
       .blockRelativeL2 = 0.6,
       .top1Agreement = 0.95,
       .routerTieMargin = 1e-2},
      "fp8 experts vs bf16 experts");
}

// runtime/model/WeightFormat.h: E2M1 with a power-of-two scale per 32
// inputs, GPT-OSS's format: one mantissa bit, so a weight moves by up to a
// twelfth of its block's largest one, and the logits of the fixtures'
// random experts (GPT-OSS's gate_up scaled up threefold, through a clamped
// SwiGLU) by about four times what fp8 moves them. A wrong nibble order or
// scale moves them by 100%.
TEST_P(GoldenMxfp4Experts, GreedyPicksAgreeWithBf16Experts) {
  expectAgreesWithBf16(
      [](plan::PlanT &plan) {
        plan.batching->weight_dtype = plan::WeightDType::mxfp4;
      },
      {.relativeL2 = 0.4,
       .blockRelativeL2 = 0.8,
       .top1Agreement = 0.75,
       .routerTieMargin = 1e-2},
      "mxfp4 experts vs bf16 experts");
}

} // namespace
} // namespace moe
