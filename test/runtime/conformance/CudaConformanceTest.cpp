// The CUDA backend in the conformance suite, within bf16's bars: logits
// rel-L2 ≤ 2e-2 over all positions and the same top-1 token at ≥ 99% of
// them, leaving out positions HF routed by a near-tie. Beside it, what only
// this backend has: greedy picks made on the GPU, its two expert GEMM paths,
// agreement with the CPU backend on the same inputs, decode steps replayed
// from CUDA graphs, plans that stream weights and keep KV in host memory,
// passes run in chunks, the plan's schedule followed as edited, traces, and
// the plans it refuses. Without a GPU
// every test skips, except the refusal, which needs none.

#include "runtime/backends/cpu/CpuBackend.h"
#include "runtime/backends/cuda/backend/CudaBackend.h"
#include "runtime/model/RingSchedule.h"
#include "runtime/trace/ChromeTrace.h"
#include "test/runtime/conformance/GoldenConformance.h"
#include "test/runtime/cuda/CudaTestSupport.h"
#include "test/runtime/golden/ScheduleEdits.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>

namespace moe {
namespace {

const BackendUnderTest kCuda{
    .name = "CUDA",
    .make = [] { return std::make_unique<cuda::CudaBackend>(); },
    .tolerance = {.relativeL2 = 2e-2,
                  .blockRelativeL2 = std::numeric_limits<double>::infinity(),
                  .top1Agreement = 0.99,
                  .routerTieMargin = 1e-2},
    // Recomputed bf16 caches come from prefill GEMMs of other shapes than
    // the decode steps' that wrote them.
    .recomputedTokenAgreement = 0.9,
    .unavailableReason = cuda::test::missingDeviceReason,
};

/// A traced step as Perfetto shows it: its process, tracks and spans (in
/// microseconds from the step's start).
struct TracedSpan {
  std::string name, track, category;
  double start, end;
};
struct TracedStep {
  std::string process;
  std::vector<std::string> tracks;
  std::vector<TracedSpan> spans; // in the order they were issued
};

TracedStep tracedStep(const ChromeTrace &trace) {
  nlohmann::json events = nlohmann::json::parse(trace.json())["traceEvents"];
  TracedStep step;
  std::map<int, std::string> tracks;
  for (const auto &e : events)
    if (e["name"] == "process_name")
      step.process = e["args"]["name"];
    else if (e["name"] == "thread_name")
      tracks[e["tid"]] = e["args"]["name"];
  for (const auto &[id, name] : tracks)
    step.tracks.push_back(name);
  for (const auto &e : events)
    if (e["ph"] == "X")
      step.spans.push_back({e["name"], tracks[e["tid"]], e["cat"],
                            e["ts"].get<double>(),
                            e["ts"].get<double>() + e["dur"].get<double>()});
  return step;
}

INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenConformance,
                         ::testing::ValuesIn(goldenCases(kCuda)),
                         goldenCaseName);
INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenFp8KvCache,
                         ::testing::ValuesIn(goldenCases(kCuda)),
                         goldenCaseName);
INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenFp8Experts,
                         ::testing::ValuesIn(goldenCases(kCuda)),
                         goldenCaseName);
INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenTailSwitch,
                         ::testing::ValuesIn(goldenCases(kCuda,
                                                         kModelsWithTailPlans)),
                         goldenCaseName);
INSTANTIATE_TEST_SUITE_P(HuggingFace, GoldenMxfp4Experts,
                         ::testing::ValuesIn(goldenCases(kCuda)),
                         goldenCaseName);

class CudaBackendGolden : public GoldenBackendTest {
protected:
  void expectReplaysMatchEagerSteps(bool sampled);
};

// The same batch on the GPU and on the CPU backend, the reference.
void forwardOnBoth(Backend &gpu, Backend &cpu, const StepBatch &batch,
                   std::vector<float> &got, std::vector<float> &reference) {
  Status status = gpu.forward(batch, got);
  ASSERT_TRUE(status.ok()) << status.error().message();
  status = cpu.forward(batch, reference);
  ASSERT_TRUE(status.ok()) << status.error().message();
  ASSERT_EQ(got.size(), reference.size());
}

// Greedy picks made on the GPU are the argmax of the logits forward()
// returns, on two backends fed the same batches (prefill, then decode steps
// on HF's generated tokens).
TEST_P(CudaBackendGolden, GreedyPicksOnTheGpuAreTheLogitsArgmax) {
  cuda::CudaBackend logitsBackend, greedyBackend;
  ASSERT_NO_FATAL_FAILURE(prepare(logitsBackend));
  ASSERT_NO_FATAL_FAILURE(prepare(greedyBackend));
  for (size_t s = 0; s < golden_.generated[0].size(); ++s) {
    StepBatch batch = s == 0 ? promptBatch(golden_) : decodeBatch(golden_, s);
    std::vector<float> logits;
    std::vector<int32_t> tokens;
    Status status = logitsBackend.forward(batch, logits);
    ASSERT_TRUE(status.ok()) << status.error().message();
    status = greedyBackend.forwardGreedy(batch, tokens);
    ASSERT_TRUE(status.ok()) << status.error().message();
    ASSERT_EQ(tokens.size(), batch.logitRows.size());
    for (size_t r = 0; r < tokens.size(); ++r) {
      const float *row = logits.data() + r * golden_.vocab;
      EXPECT_EQ(tokens[r], std::max_element(row, row + golden_.vocab) - row)
          << "step " << s << " logit row " << r;
    }
  }
}

// The routed experts' two paths (one grouped launch, or one cuBLASLt GEMM
// per expert once groups are large) against HF on the same prompts.
TEST_P(CudaBackendGolden, BothExpertGemmPathsMatchHuggingFace) {
  cuda::CudaBackend perExpert({.perExpertGemmRows = 1});
  expectPromptsMatchHuggingFace(perExpert, "per-expert GEMMs vs HF");
  cuda::CudaBackend grouped({.perExpertGemmRows = int64_t{1} << 40});
  expectPromptsMatchHuggingFace(grouped, "grouped GEMM vs HF");
}

// Prefill then decode steps of `plan` on both backends, the same batches.
void expectMatchesCpuBackend(const Golden &golden, const LoadedPlan &plan,
                             const WeightSet &weights,
                             cuda::CudaBackendOptions options,
                             const LogitTolerance &tolerance,
                             const std::string &what) {
  cuda::CudaBackend gpu(options);
  CpuBackend cpu(2);
  for (Backend *backend :
       {static_cast<Backend *>(&gpu), static_cast<Backend *>(&cpu)}) {
    Status status = backend->prepare(plan, weights, kSlots, kContext);
    ASSERT_TRUE(status.ok()) << status.error().message();
  }
  LogitComparison all(tolerance);
  for (size_t s = 0; s < golden.generated[0].size(); ++s) {
    StepBatch batch = s == 0 ? promptBatch(golden) : decodeBatch(golden, s);
    std::vector<float> got, want;
    ASSERT_NO_FATAL_FAILURE(forwardOnBoth(gpu, cpu, batch, got, want));
    std::vector<bool> ties;
    for (size_t p = 0; p < golden.prompts.size(); ++p) {
      size_t length = golden.prompts[p].size();
      std::vector<bool> mine =
          s == 0 ? routerTies(golden, tolerance, p, 0, length)
                 : routerTies(golden, tolerance, p, length - 1 + s, 1);
      ties.insert(ties.end(), mine.begin(), mine.end());
    }
    all.add("step " + std::to_string(s), got.data(), want.data(),
            int64_t(batch.logitRows.size()), golden.vocab, ties);
  }
  all.expectWithin(what);
  EXPECT_FALSE(gpu.stageSeconds().empty());
}

// Prefill then decode steps on both backends, the same batches.
TEST_P(CudaBackendGolden, MatchesTheCpuBackendOnTheSameInputs) {
  expectMatchesCpuBackend(golden_, *plan_, *weights_, {}, tolerance(),
                          model() + " vs CPU backend");
}

// On the small card's plan (experts streamed through the weight ring).
class CudaQuantizedExperts : public GoldenQuantizedTest {};

// Quantized experts (fp8, mxfp4) hold on the GPU what the CPU backend, the
// reference, computes with: blocks along the same axis, the same codes and
// scales, streamed with their scales; on both expert GEMM paths (codes
// widened in the grouped kernel's tiles, or per-expert GEMMs: fp8 ones on
// inputs quantized to fp8 as well, or, as mxfp4's, on the layer widened to
// bf16 first). HF's router near-ties, which the comparison leaves
// out, are those of the unquantized model: quantized experts move the
// hidden states, so bf16 rounding flips a few other expert choices, and
// the bars are wider than bf16's. A block of the wrong axis, a nibble order
// or a scale moves the logits by about what quantizing does (≥ 0.1).
TEST_P(CudaQuantizedExperts, MatchTheCpuBackend) {
  const LogitTolerance quantizedTolerance{.relativeL2 = 0.08,
                                          .blockRelativeL2 = 0.3,
                                          .top1Agreement = 0.97,
                                          .routerTieMargin =
                                              tolerance().routerTieMargin};
  for (plan::WeightDType dtype :
       {plan::WeightDType::fp8, plan::WeightDType::mxfp4}) {
    Result<LoadedPlan> edited = editPlan(*plan_, [&](plan::PlanT &plan) {
      plan.batching->weight_dtype = dtype;
    });
    ASSERT_TRUE(edited.ok()) << edited.error().message();
    std::string name = plan::EnumNameWeightDType(dtype);
    expectMatchesCpuBackend(golden_, *edited, *weights_,
                            {.perExpertGemmRows = 1}, quantizedTolerance,
                            model() + " " + name + " per-expert vs CPU");
    if (dtype == plan::WeightDType::fp8)
      expectMatchesCpuBackend(
          golden_, *edited, *weights_,
          {.perExpertGemmRows = 1, .fp8ExpertInputs = false},
          quantizedTolerance,
          model() + " fp8 per-expert with bf16 inputs vs CPU");
    expectMatchesCpuBackend(
        golden_, *edited, *weights_, {.perExpertGemmRows = int64_t{1} << 40},
        quantizedTolerance, model() + " " + name + " grouped vs CPU");
  }
}

INSTANTIATE_TEST_SUITE_P(HuggingFace, CudaQuantizedExperts,
                         ::testing::ValuesIn(goldenCases(kCuda)),
                         goldenCaseName);

// An fp8 KV cache holds on the GPU what the CPU backend, the reference,
// computes with: the same rows of codes and scales (MLA's latent in groups
// of its rope width). The GPU encodes K rows rounded to bf16 and the CPU
// its fp32 ones, so a code may differ by a step, and the bars are the
// quantized experts'; a wrong scale group or row layout moves the logits
// by about what fp8 itself does (≥ 0.1).
const LogitTolerance kFp8KvVsCpu{.relativeL2 = 0.08,
                                 .blockRelativeL2 = 0.3,
                                 .top1Agreement = 0.97,
                                 .routerTieMargin = 1e-2};

// `plan` (a planned one: it has a batching) with an fp8 KV cache.
Result<LoadedPlan> withFp8Kv(const LoadedPlan &plan) {
  if (plan.plan().batching() == nullptr)
    return makeError("the plan has no batching to give an fp8 KV cache");
  return editPlan(plan, [](plan::PlanT &edited) {
    edited.batching->kv_dtype = plan::KvDType::fp8;
  });
}

// On the small card's plan.
class CudaFp8KvCache : public GoldenQuantizedTest {};

TEST_P(CudaFp8KvCache, MatchesTheCpuBackend) {
  Result<LoadedPlan> edited = withFp8Kv(*plan_);
  ASSERT_TRUE(edited.ok()) << edited.error().message();
  expectMatchesCpuBackend(golden_, *edited, *weights_, {}, kFp8KvVsCpu,
                          model() + " fp8 KV vs CPU");
}

INSTANTIATE_TEST_SUITE_P(HuggingFace, CudaFp8KvCache,
                         ::testing::ValuesIn(goldenCases(kCuda)),
                         goldenCaseName);

// Decode steps replayed from CUDA graphs give what the same steps launched
// op by op give (a decode step launches the same kernels either way): the
// same greedy picks, or for sampling the same logits bit for bit, over a
// context's worth of steps fed the picks, the batch shrinking midway. Each
// shape runs eagerly once, is captured the next time and replayed from then
// on.
void CudaBackendGolden::expectReplaysMatchEagerSteps(bool sampled) {
  const Golden &golden = golden_;
  cuda::CudaBackend replayed, eager({.graphs = false});
  ASSERT_NO_FATAL_FAILURE(prepare(replayed));
  ASSERT_NO_FATAL_FAILURE(prepare(eager));
  constexpr int64_t kShrinkAfter = 6; // decode steps before slot 0 leaves
  StepBatch batch = greedyStepBatch(golden, 0);
  int64_t decodeSteps = 0;
  for (bool full = false; !full;) {
    std::vector<int32_t> picks;
    if (sampled) {
      std::vector<float> fromGraphs, fromEager;
      Status status = replayed.forward(batch, fromGraphs);
      ASSERT_TRUE(status.ok()) << status.error().message();
      status = eager.forward(batch, fromEager);
      ASSERT_TRUE(status.ok()) << status.error().message();
      ASSERT_EQ(fromGraphs, fromEager) << "after decode step " << decodeSteps;
      for (size_t r = 0; r < batch.logitRows.size(); ++r) {
        auto row = fromGraphs.begin() + int64_t(r) * golden.vocab;
        picks.push_back(
            int32_t(std::max_element(row, row + golden.vocab) - row));
      }
    } else {
      std::vector<int32_t> fromEager;
      Status status = replayed.forwardGreedy(batch, picks);
      ASSERT_TRUE(status.ok()) << status.error().message();
      status = eager.forwardGreedy(batch, fromEager);
      ASSERT_TRUE(status.ok()) << status.error().message();
      ASSERT_EQ(picks, fromEager) << "after decode step " << decodeSteps;
    }
    decodeSteps += isPrefill(batch.rows) ? 0 : 1;
    StepBatch next;
    for (size_t r = 0; r < batch.logitRows.size(); ++r) {
      const TokenRow &row = batch.rows[size_t(batch.logitRows[r])];
      full = full || row.position + 1 >= kContext;
      if (row.slot == 0 && decodeSteps == kShrinkAfter)
        continue;
      next.tokenIds.push_back(picks[r]);
      next.rows.push_back({row.slot, row.position + 1});
      next.logitRows.push_back(int32_t(next.rows.size()) - 1);
    }
    batch = std::move(next);
  }
  // The longest prompt's slot filled; two shapes (all slots, then one
  // fewer), each run eagerly once.
  ASSERT_GT(decodeSteps, kShrinkAfter + 2);
  BackendCounters counters = replayed.counters();
  EXPECT_EQ(counters.graphCaptureFailures, 0);
  EXPECT_EQ(counters.eagerDecodePasses, 2);
  EXPECT_EQ(counters.graphCaptures, 2);
  EXPECT_EQ(counters.graphReplays, decodeSteps - 2);
  EXPECT_GT(counters.graphKernelLaunches,
            counters.graphReplays * int64_t(golden.prompts.size()));
  EXPECT_GT(counters.deviceGraphBytes, 0);
  BackendCounters opByOp = eager.counters();
  EXPECT_EQ(opByOp.eagerDecodePasses, decodeSteps);
  EXPECT_EQ(opByOp.graphReplays, 0);
}

TEST_P(CudaBackendGolden, DecodeStepsReplayedFromGraphsMatchEagerOnes) {
  expectReplaysMatchEagerSteps(false);
}

TEST_P(CudaBackendGolden, SampledDecodeStepsReplayedFromGraphsMatchEagerOnes) {
  expectReplaysMatchEagerSteps(true);
}

INSTANTIATE_TEST_SUITE_P(HuggingFace, CudaBackendGolden,
                         ::testing::ValuesIn(goldenCases(kCuda)),
                         goldenCaseName);

// The tiny models planned for a card too small for them (the committed
// "streamed" plans): experts streamed through the weight ring from pinned
// memory, most slots' KV in host memory and staged one sequence per
// attention micro-batch.
class CudaBackendStreamed : public GoldenBackendTest {
protected:
  std::string planName() const override { return "streamed"; }

  // The prompts spread over `slotCount` slots, then the generated tokens
  // step by step: logits against HF and the CPU backend.
  void expectStepsMatch(cuda::CudaBackend &gpu, int32_t slotCount,
                        const std::string &what) {
    expectStepsMatch(gpu, slotCount, what, tolerance(), tolerance());
  }
  // vsHfBars: none leaves HF out (a plan that quantizes what HF does not).
  void expectStepsMatch(cuda::CudaBackend &gpu, int32_t slotCount,
                        const std::string &what,
                        const LogitTolerance &vsCpuBars,
                        std::optional<LogitTolerance> vsHfBars) {
    size_t prompts = golden_.prompts.size(),
           steps = golden_.generated[0].size();
    std::vector<int32_t> slots;
    for (size_t p = 0; p < prompts; ++p)
      slots.push_back(int32_t(p * (slotCount - 1) / (prompts - 1)));
    CpuBackend cpu(2);
    ASSERT_NO_FATAL_FAILURE(prepare(gpu, slotCount));
    ASSERT_NO_FATAL_FAILURE(prepare(cpu, slotCount));
    std::vector<std::vector<float>> want(prompts);
    for (size_t p = 0; p < prompts; ++p)
      want[p] = golden_.rows("generated_logits_" + std::to_string(p));
    LogitComparison vsHf(vsHfBars.value_or(tolerance())), vsCpu(vsCpuBars);
    for (size_t s = 0; s < steps; ++s) {
      StepBatch batch = greedyStepBatch(golden_, s, slots);
      std::vector<float> got, reference;
      ASSERT_NO_FATAL_FAILURE(forwardOnBoth(gpu, cpu, batch, got, reference));
      std::vector<bool> ties;
      for (size_t p = 0; p < prompts; ++p)
        ties.push_back(golden_.routerTie(p, golden_.prompts[p].size() - 1 + s,
                                         tolerance().routerTieMargin));
      std::string step = "step " + std::to_string(s);
      vsCpu.add(step, got.data(), reference.data(), int64_t(prompts),
                golden_.vocab, ties);
      for (size_t p = 0; p < prompts; ++p)
        vsHf.add("prompt " + std::to_string(p) + " " + step,
                 got.data() + p * golden_.vocab,
                 want[p].data() + s * golden_.vocab, 1, golden_.vocab,
                 {ties[p]});
    }
    if (vsHfBars)
      vsHf.expectWithin(what + " vs HF");
    vsCpu.expectWithin(what + " vs CPU backend");
    BackendCounters moved = gpu.counters();
    std::printf("[ metrics  ] %s: weights to GPU %lld B, KV to GPU %lld B, KV "
                "to host %lld B, hidden states to host %lld B and back %lld "
                "B\n",
                what.c_str(), (long long)moved.weightBytesToDevice,
                (long long)moved.kvBytesToDevice,
                (long long)moved.kvBytesToHost,
                (long long)moved.hiddenBytesToHost,
                (long long)moved.hiddenBytesToDevice);
  }
};

// For the plan's B and for four slots, the prompts spread over the slots so
// that host and GPU slots mix: prefill and decode logits match HF and the CPU
// backend, and the weights and KV really moved.
TEST_P(CudaBackendStreamed, MatchesHuggingFaceAndTheCpuBackend) {
  const plan::Batching *batching = plan_->plan().batching();
  ASSERT_NE(batching, nullptr);
  ASSERT_LT(batching->kv_gpu_fraction(), 1.0) << "the plan keeps all KV";
  int32_t planned = int32_t(batching->resident_batch());
  for (int32_t slotCount : {int32_t(golden_.prompts.size()), planned}) {
    std::string what = model() + ", " + std::to_string(slotCount) + " slots";
    cuda::CudaBackend gpu;
    ASSERT_NO_FATAL_FAILURE(expectStepsMatch(gpu, slotCount, what));
    BackendCounters moved = gpu.counters();
    EXPECT_GT(moved.weightBytesToDevice, 0) << what;
    EXPECT_GT(moved.kvBytesToDevice, 0) << what;
    EXPECT_GT(moved.kvBytesToHost, 0) << what;
  }
}

// fp8 KV rows, MLA's latent among them, go to host slots and come back
// staged at a byte a value: the logits match the CPU backend's fp8 cache.
TEST_P(CudaBackendStreamed, Fp8KvCacheInHostSlotsMatchesTheCpuBackend) {
  Result<LoadedPlan> edited = withFp8Kv(*plan_);
  ASSERT_TRUE(edited.ok()) << edited.error().message();
  plan_ = std::move(*edited);
  int32_t slotCount = int32_t(plan_->plan().batching()->resident_batch());
  std::string what =
      model() + " fp8 KV, " + std::to_string(slotCount) + " slots";
  cuda::CudaBackend gpu;
  ASSERT_NO_FATAL_FAILURE(
      expectStepsMatch(gpu, slotCount, what, kFp8KvVsCpu, std::nullopt));
  EXPECT_GT(gpu.counters().kvBytesToDevice, 0) << what;
  EXPECT_GT(gpu.counters().kvBytesToHost, 0) << what;
}

// With a third of the step memory the prefill needed, each pass runs in
// chunks of rows layer by layer, the chunks' hidden states parked in host
// memory in between: the results do not change.
TEST_P(CudaBackendStreamed, PassesInChunksParkHiddenStatesAndMatch) {
  int32_t slotCount = int32_t(golden_.prompts.size());
  cuda::CudaBackend whole;
  ASSERT_NO_FATAL_FAILURE(
      expectStepsMatch(whole, slotCount, model() + ", whole"));
  BackendCounters unchunked = whole.counters();
  EXPECT_EQ(unchunked.hiddenBytesToHost, 0);
  cuda::CudaBackendOptions options;
  options.maxStepBytes = size_t(unchunked.devicePeakStepBytes) / 3;
  cuda::CudaBackend chunked(options);
  std::string what = model() + ", chunked";
  ASSERT_NO_FATAL_FAILURE(expectStepsMatch(chunked, slotCount, what));
  BackendCounters moved = chunked.counters();
  EXPECT_GT(moved.hiddenBytesToHost, 0) << what;
  EXPECT_GT(moved.hiddenBytesToDevice, 0) << what;
  EXPECT_LE(moved.devicePeakStepBytes, int64_t(options.maxStepBytes)) << what;
}

// A decode step of every slot, traced: a span per op on the compute stream,
// per streamed weight copy and per KV load and store on their streams, each
// where the device ran it, and an op that streams its weights starting after
// their copy has ended.
TEST_P(CudaBackendStreamed, TracesADecodeStepOnEveryStream) {
  int32_t slotCount = int32_t(golden_.prompts.size());
  cuda::CudaBackend gpu;
  ChromeTrace trace;
  gpu.traceNextDecodeStep(&trace);
  ASSERT_NO_FATAL_FAILURE(expectStepsMatch(gpu, slotCount, model()));
  TracedStep step = tracedStep(trace);
  EXPECT_EQ(step.process, "cuda backend: decode step (measured)");
  for (const char *track : {"compute", "h2d weights", "h2d KV", "d2h KV"})
    EXPECT_NE(std::find(step.tracks.begin(), step.tracks.end(), track),
              step.tracks.end())
        << track;
  std::vector<TracedSpan> compute, copies;
  for (const TracedSpan &span : step.spans) {
    EXPECT_GE(span.start, 0) << span.name;
    EXPECT_GE(span.end, span.start) << span.name;
    (span.track == "compute" ? compute : copies).push_back(span);
  }
  // One stream runs its work in order.
  for (size_t i = 1; i < compute.size(); ++i)
    EXPECT_GE(compute[i].start, compute[i - 1].start) << compute[i].name;
  int weightCopies = 0;
  for (const TracedSpan &copy : copies) {
    if (copy.track != "h2d weights")
      continue;
    ++weightCopies;
    // "layer 3 routed experts weights (ring buffer 0)": that op waits for
    // them (timing events resolve about half a microsecond).
    std::string op = copy.name.substr(0, copy.name.rfind(" weights"));
    EXPECT_TRUE(std::any_of(compute.begin(), compute.end(), [&](const auto &s) {
      return s.name == op && s.start >= copy.end - 1;
    })) << copy.name;
  }
  EXPECT_GT(weightCopies, 0);
}

// The plan's expert micro-batch b_e edited to 2 rows: each expert's
// cuBLASLt GEMMs take at most 2 rows at a time, with the same results.
TEST_P(CudaBackendStreamed, PerExpertGemmsTakeThePlansExpertMicroBatch) {
  Result<LoadedPlan> edited = editPlan(
      *plan_, [](plan::PlanT &plan) { plan.batching->expert_micro_batch = 2; });
  ASSERT_TRUE(edited.ok()) << edited.error().message();
  plan_.emplace(std::move(*edited));
  cuda::CudaBackend perExpert({.perExpertGemmRows = 1});
  ASSERT_NO_FATAL_FAILURE(expectStepsMatch(
      perExpert, int32_t(golden_.prompts.size()), model() + ", b_e of 2 rows"));
}

// The schedule in the plan is what runs: the streamed plan's ring of one
// buffer edited to two, layers alternating between them and each layer's
// copies waiting for the layer two back, and its two KV staging buffers
// edited to three. The traced decode step copies each streamed op in the
// edited schedule's order into the buffer it names, starts no copy before
// the ops it waits for have ended, and takes the three KV staging buffers
// in turn; the logits still match HF and the CPU backend.
TEST_P(CudaBackendStreamed, RunsTheScheduleAsThePlanSaysIt) {
  Result<LoadedPlan> edited = editPlan(*plan_, [](plan::PlanT &plan) {
    alternateRingBuffers(plan);
    stageKvIn(plan, 3);
    // Room for the third staging buffer, sized for the test's context
    // (twice the plan's).
    plan.batching->gpu_budget_bytes *= 2;
  });
  ASSERT_TRUE(edited.ok()) << edited.error().message();
  plan_.emplace(std::move(*edited));
  Result<model::ResolvedModel> resolved =
      model::ResolvedModel::resolve(plan_->model());
  ASSERT_TRUE(resolved.ok()) << resolved.error().message();
  Result<model::RingSchedule> ring =
      model::resolveRingSchedule(plan_->plan(), *resolved);
  ASSERT_TRUE(ring.ok()) << ring.error().message();
  ASSERT_EQ(ring->buffers, 2);

  cuda::CudaBackend gpu;
  ChromeTrace trace;
  gpu.traceNextDecodeStep(&trace);
  ASSERT_NO_FATAL_FAILURE(expectStepsMatch(gpu, int32_t(golden_.prompts.size()),
                                           model() + ", edited schedule"));
  // A decode step of a few rows runs in one chunk: the compute stream's
  // spans other than weight waits are the ops in program order.
  std::vector<TracedSpan> ops, copies, kvLoads;
  for (const TracedSpan &span : tracedStep(trace).spans)
    if (span.track == "compute" && span.category != "weight wait")
      ops.push_back(span);
    else if (span.track == "h2d weights")
      copies.push_back(span);
    else if (span.track == "h2d KV")
      kvLoads.push_back(span);
  ASSERT_EQ(ops.size(), resolved->ops.size());
  const std::vector<model::RingLoad> &loads = ring->decode.loads;
  ASSERT_EQ(copies.size(), loads.size());
  std::set<int> buffersUsed;
  for (size_t i = 0; i < loads.size(); ++i) {
    const model::RingLoad &load = loads[i];
    int buffer = ring->bufferOf[size_t(load.op)];
    buffersUsed.insert(buffer);
    EXPECT_EQ(copies[i].name, fmt::format("{} weights (ring buffer {})",
                                          ops[size_t(load.op)].name, buffer));
    for (int op : load.after)
      EXPECT_GE(copies[i].start, ops[size_t(op)].end - 1)
          << copies[i].name << " waits for op " << op;
    EXPECT_GE(ops[size_t(load.op)].start, copies[i].end - 1)
        << ops[size_t(load.op)].name << " waits for its weights";
  }
  EXPECT_EQ(buffersUsed, (std::set<int>{0, 1}));

  // KV loads take the staging buffers in turn across the layers, as the
  // schedule's kv_load jobs take the kv_staging pool's.
  const plan::Schedule &schedule = *plan_->plan().schedule();
  int staging = 0;
  for (const plan::BufferPool *pool : *schedule.pools())
    if (pool->kind() == plan::PoolKind::kv_staging)
      staging = pool->count();
  ASSERT_EQ(staging, 3);
  int planned = 0;
  for (const plan::Job *job : *schedule.decode()->jobs()) {
    if (job->kind() == plan::JobKind::kv_load) {
      EXPECT_EQ(job->buffer(), planned++ % staging);
    }
  }
  ASSERT_FALSE(kvLoads.empty());
  for (size_t i = 0; i < kvLoads.size(); ++i)
    EXPECT_NE(kvLoads[i].name.find(
                  fmt::format("(staging buffer {})", int(i) % staging)),
              std::string::npos)
        << kvLoads[i].name;
}

INSTANTIATE_TEST_SUITE_P(
    HuggingFace, CudaBackendStreamed,
    ::testing::ValuesIn(goldenCases(kCuda, {"tiny-mixtral", "tiny-qwen2-moe",
                                            "tiny-deepseek-v2"})),
    goldenCaseName);

// The softmax-attention models planned for the small card and a host that
// attends half of the sequences in decode (the committed "host-attention"
// plans): the last slots' decode rows are attended on the host's cores over
// their KV in pinned memory, beside the GPU attending the others, and the
// logits match HF and the CPU backend, in one chunk and in several.
class CudaBackendHostAttention : public CudaBackendStreamed {
protected:
  std::string planName() const override { return "host-attention"; }
};

TEST_P(CudaBackendHostAttention, MatchesHuggingFaceAndTheCpuBackend) {
  const plan::Batching *batching = plan_->plan().batching();
  ASSERT_NE(batching, nullptr);
  ASSERT_GT(batching->cpu_attention_share(), 0.0);
  int32_t planned = int32_t(batching->resident_batch());
  for (int32_t slotCount : {int32_t(golden_.prompts.size()), planned}) {
    std::string what = model() + ", " + std::to_string(slotCount) + " slots";
    cuda::CudaBackend gpu;
    ASSERT_NO_FATAL_FAILURE(expectStepsMatch(gpu, slotCount, what));
    BackendCounters moved = gpu.counters();
    EXPECT_GT(moved.hostKvBytesRead, 0) << what;
    EXPECT_GT(moved.hostAttentionBytes, 0) << what;
    EXPECT_GT(moved.kvBytesToHost, 0) << what;
    double hostSeconds = 0;
    for (const StageTime &stage : gpu.stageSeconds())
      if (stage.phase == "decode" && stage.stage == "host attention")
        hostSeconds += stage.seconds;
    EXPECT_GT(hostSeconds, 0) << what;
  }
  cuda::CudaBackend whole;
  ASSERT_NO_FATAL_FAILURE(expectStepsMatch(
      whole, int32_t(golden_.prompts.size()), model() + ", whole"));
  cuda::CudaBackendOptions options;
  options.maxStepBytes = size_t(whole.counters().devicePeakStepBytes) / 3;
  cuda::CudaBackend chunked(options);
  ASSERT_NO_FATAL_FAILURE(expectStepsMatch(
      chunked, int32_t(golden_.prompts.size()), model() + ", chunked"));
  EXPECT_GT(chunked.counters().hiddenBytesToHost, 0);
  EXPECT_GT(chunked.counters().hostKvBytesRead, 0);
}

// Host slots' KV in pages wherever the pool has them: twin sequences (the
// same tokens in the same batches), one on pages apart in the pool, the
// other on consecutive ones, give the same logits bit for bit, through the
// staging buffers (twins among the first host slots) and on the host's
// cores (the plan's last slots), over a page's end and on. Three other host
// slots take pages first, and each pair's prompts come once one of them has
// given its page back: the first twin takes that page, then one past the
// rest. The plan's GPU budget and host pool, made for its 32-token
// contexts, make way for 512-token ones: a larger budget, every host slot's
// whole context.
TEST_P(CudaBackendHostAttention, TwinSequencesOnScatteredPagesAgree) {
  auto plan = editPlan(*plan_, [](plan::PlanT &edited) {
    edited.batching->gpu_budget_bytes = int64_t(256) << 20;
    edited.batching->host_kv_pool_tokens = 0;
  });
  ASSERT_TRUE(plan.ok()) << plan.error().message();
  const plan::Batching *batching = plan->plan().batching();
  const int32_t slots = int32_t(batching->resident_batch()), context = 512;
  const int32_t gpuSlots =
      int32_t(std::llround(batching->kv_gpu_fraction() * slots));
  const int32_t hostAttended =
      int32_t(std::llround(batching->cpu_attention_share() * slots));
  ASSERT_GE(slots - gpuSlots - hostAttended, 2) << "two staged host slots";
  ASSERT_GE(hostAttended, 2) << "two host-attended slots";
  ASSERT_GE(slots - gpuSlots, 7) << "twins and three more host slots";
  cuda::CudaBackend gpu;
  Status prepared = gpu.prepare(*plan, *weights_, slots, context);
  ASSERT_TRUE(prepared.ok()) << prepared.error().message();
  const KvPages &pages = gpu.kvPages();
  ASSERT_EQ(pages.pageTokens(), 256);
  // Staged twins, host-attended twins; the slots that take pages first.
  const std::vector<std::pair<int32_t, int32_t>> twins = {
      {gpuSlots, gpuSlots + 1}, {slots - 2, slots - 1}};
  const std::vector<int32_t> others = {gpuSlots + 2, gpuSlots + 3,
                                       gpuSlots + 4};
  uint32_t seed = 1;
  auto token = [&] {
    seed = seed * 1103515245u + 12345u;
    return int32_t((seed >> 8) % uint32_t(golden_.vocab));
  };
  std::vector<float> logits;
  auto run = [&](const StepBatch &batch) {
    Status status = gpu.forward(batch, logits);
    ASSERT_TRUE(status.ok()) << status.error().message();
  };
  // Prompts of `length` tokens for `slots` (in order), their own or the
  // same for each pair of twins.
  auto prompts = [&](const std::vector<int32_t> &forSlots, int32_t length) {
    StepBatch batch;
    std::vector<int32_t> prompt;
    for (int32_t slot : forSlots) {
      bool secondTwin = false;
      for (auto [a, b] : twins)
        secondTwin |= slot == b;
      if (!secondTwin) {
        prompt.clear();
        for (int32_t t = 0; t < length; ++t)
          prompt.push_back(token());
      }
      for (int32_t t = 0; t < length; ++t) {
        batch.tokenIds.push_back(prompt[size_t(t)]);
        batch.rows.push_back({slot, t});
      }
      batch.logitRows.push_back(int32_t(batch.rows.size()) - 1);
    }
    return batch;
  };
  ASSERT_NO_FATAL_FAILURE(run(prompts(others, 100)));
  gpu.resetSlot(others[0]);
  StepBatch staged = prompts({twins[0].first, twins[0].second}, 300);
  ASSERT_NO_FATAL_FAILURE(run(staged));
  std::vector<float> stagedLogits = logits;
  gpu.resetSlot(others[1]);
  StepBatch attended = prompts({twins[1].first, twins[1].second}, 300);
  ASSERT_NO_FATAL_FAILURE(run(attended));
  auto consecutive = [&](int32_t slot) {
    std::span<const int32_t> table = pages.table(slot);
    return table.size() == 2 && table[1] == table[0] + 1;
  };
  for (auto [a, b] : twins) {
    EXPECT_FALSE(consecutive(a)) << "slot " << a;
    EXPECT_TRUE(consecutive(b)) << "slot " << b;
  }
  auto expectTwinsAgree = [&](const StepBatch &batch,
                              const std::vector<float> &rows,
                              const std::string &what) {
    std::map<int32_t, size_t> logitOf;
    for (size_t r = 0; r < batch.logitRows.size(); ++r)
      logitOf[batch.rows[size_t(batch.logitRows[r])].slot] = r;
    for (auto [a, b] : twins)
      if (logitOf.count(a)) {
        const float *x = rows.data() + logitOf.at(a) * golden_.vocab;
        const float *y = rows.data() + logitOf.at(b) * golden_.vocab;
        EXPECT_TRUE(std::equal(x, x + golden_.vocab, y))
            << what << ": slots " << a << " and " << b;
      }
  };
  expectTwinsAgree(staged, stagedLogits, "prompts");
  expectTwinsAgree(attended, logits, "prompts");
  std::map<int32_t, int32_t> length;
  std::map<int32_t, int32_t> next;
  for (const auto &[batch, rows] :
       {std::pair{&staged, &stagedLogits}, std::pair{&attended, &logits}})
    for (size_t r = 0; r < batch->logitRows.size(); ++r) {
      const float *row = rows->data() + r * golden_.vocab;
      int32_t slot = batch->rows[size_t(batch->logitRows[r])].slot;
      next[slot] = int32_t(std::max_element(row, row + golden_.vocab) - row);
      length[slot] = 300;
    }
  std::vector<int32_t> order;
  for (auto [a, b] : twins)
    order.insert(order.end(), {a, b});
  std::sort(order.begin(), order.end());
  for (int step = 0; step < 40; ++step) {
    // Both twins take the first twin's greedy pick.
    StepBatch batch;
    for (int32_t slot : order) {
      int32_t first = slot;
      for (auto [a, b] : twins)
        if (slot == b)
          first = a;
      batch.tokenIds.push_back(next.at(first));
      batch.rows.push_back({slot, length[slot]++});
      batch.logitRows.push_back(int32_t(batch.rows.size()) - 1);
    }
    ASSERT_NO_FATAL_FAILURE(run(batch));
    expectTwinsAgree(batch, logits, "decode step " + std::to_string(step));
    for (size_t r = 0; r < batch.logitRows.size(); ++r) {
      const float *row = logits.data() + r * golden_.vocab;
      next[batch.rows[r].slot] =
          int32_t(std::max_element(row, row + golden_.vocab) - row);
    }
  }
  BackendCounters moved = gpu.counters();
  EXPECT_GT(moved.kvBytesToDevice, 0);
  EXPECT_GT(moved.hostKvBytesRead, 0);
}

INSTANTIATE_TEST_SUITE_P(
    HuggingFace, CudaBackendHostAttention,
    ::testing::ValuesIn(goldenCases(kCuda, {"tiny-mixtral", "tiny-qwen2-moe",
                                            "tiny-qwen3-moe", "tiny-gpt-oss"})),
    goldenCaseName);

// What `backend` says when it refuses `model`'s committed plan `planName`
// edited by `edit`; such refusals come before anything touches the GPU, so
// these run without a device too.
std::string refusalOf(cuda::CudaBackend &backend, const std::string &model,
                      const std::string &planName,
                      const std::function<void(plan::PlanT &)> &edit) {
  auto committed = loadGoldenPlan(model, planName);
  EXPECT_TRUE(committed.ok()) << committed.error().message();
  auto plan = editPlan(*committed, edit);
  EXPECT_TRUE(plan.ok()) << plan.error().message();
  auto weights = loadGoldenWeights(model, *plan);
  EXPECT_TRUE(weights.ok()) << weights.error().message();
  Status status = backend.prepare(*plan, *weights, kSlots, kContext);
  EXPECT_FALSE(status.ok());
  return status.ok() ? "" : status.error().message();
}

// Lightning attention's states stay on the GPU: a plan that keeps some
// sequences' KV and states in host memory is refused (the planner keeps
// such a model's KV on the GPU; an edited plan does not).
TEST(CudaBackendRefuses, LightningStatesInHostMemory) {
  cuda::CudaBackend backend;
  std::string message = refusalOf(
      backend, "tiny-minimax-partial-rope", "streamed",
      [](plan::PlanT &edited) { edited.batching->kv_gpu_fraction = 0.5; });
  EXPECT_NE(message.find("the CUDA backend keeps those states on the GPU"),
            std::string::npos)
      << message;
  std::vector<float> logits;
  EXPECT_FALSE(backend.forward(StepBatch{}, logits).ok());
}

} // namespace
} // namespace moe
