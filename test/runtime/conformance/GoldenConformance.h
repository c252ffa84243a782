// The conformance suite: a backend reproduces HuggingFace transformers'
// outputs (test/golden) within its tolerance. The test bodies every backend
// shares are in GoldenConformance.cpp; each backend's file instantiates them
// with its factory and tolerance (as IREE's hal/cts does for its drivers)
// and holds the tests that only make sense for that backend, on the same
// fixture.
#pragma once

#include "runtime/engine/Backend.h"
#include "runtime/engine/Engine.h"
#include "test/runtime/golden/GoldenFixture.h"
#include "test/runtime/golden/LogitComparison.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace moe {

/// What the golden tests prepare a backend for: a slot for each prompt,
/// room for every prompt and its continuation.
inline constexpr int32_t kSlots = 4, kContext = 64;

struct BackendUnderTest {
  std::string name; // in messages
  std::function<std::unique_ptr<Backend>()> make;
  LogitTolerance tolerance;
  /// Least share of a job's tokens that stay the same when its sequences'
  /// caches are recomputed by a prefill (pauses, phase switches): 1 for a
  /// backend whose prefill and decode round alike.
  double recomputedTokenAgreement = 1;
  /// Empty when the backend can run on this machine, else why not (its
  /// tests skip).
  std::function<std::string()> unavailableReason = [] { return ""; };
};

struct GoldenCase {
  const BackendUnderTest *backend;
  std::string model;
};

/// gtest prints a failing test's parameter with this.
inline void PrintTo(const GoldenCase &golden, std::ostream *out) {
  *out << golden.model << " on the " << golden.backend->name << " backend";
}

/// The backend on every model of `models`.
std::vector<GoldenCase>
goldenCases(const BackendUnderTest &backend,
            const std::vector<std::string> &models = kGoldenModels);
/// A job through the engine: its answers by request index, and its stats.
struct GoldenJob {
  std::map<int64_t, std::vector<int32_t>> answers;
  EngineStats stats;
};
/// Runs `requests` requests on `backend` (prepared for `options`' slots):
/// request i is the golden's prompt i mod its prompts, with
/// `maxNewTokens(i)` new tokens. The run must succeed.
GoldenJob runGoldenJob(Backend &backend, const Golden &golden,
                       const EngineOptions &options, int64_t requests,
                       const std::function<int32_t(int64_t)> &maxNewTokens);

/// The model's name, '-' spelled '_' (gtest's test names allow no '-').
std::string goldenCaseName(const ::testing::TestParamInfo<GoldenCase> &info);

/// One model's golden, a plan of it and its weights, for one backend.
class GoldenBackendTest : public ::testing::TestWithParam<GoldenCase> {
protected:
  /// Which committed plan of the model the fixture loads.
  virtual std::string planName() const { return "resident"; }

  void SetUp() override;

  const std::string &model() const { return GetParam().model; }
  const LogitTolerance &tolerance() const {
    return GetParam().backend->tolerance;
  }
  std::unique_ptr<Backend> makeBackend() const {
    return GetParam().backend->make();
  }

  void prepare(Backend &backend, int32_t slots = kSlots);
  /// Every position of all prompts, in one prefill, against HF.
  void expectPromptsMatchHuggingFace(Backend &backend, const std::string &what);

  Golden golden_;
  std::optional<LoadedPlan> plan_;
  std::optional<WeightSet> weights_;
};

/// The tests every backend runs.
class GoldenConformance : public GoldenBackendTest {};

/// A plan edited to store something quantized (fp8, mxfp4) against the
/// bf16 plan, on the
/// plan for a small card (its KV in host memory and its experts streamed
/// where the backend has a host tier).
class GoldenQuantizedTest : public GoldenBackendTest {
protected:
  std::string planName() const override { return "small-card"; }
  /// The logits of every prompt position and of each step of HF's
  /// continuations agree with the bf16 plan's within `tolerance`.
  void expectAgreesWithBf16(const std::function<void(plan::PlanT &)> &edit,
                            const LogitTolerance &tolerance,
                            const std::string &what);
};
/// A job whose streamed plan carries a tail plan, finished on it.
class GoldenTailSwitch : public GoldenBackendTest {
protected:
  std::string planName() const override { return "streamed"; }
};
/// The golden models whose streamed plan carries a tail plan.
inline const std::vector<std::string> kModelsWithTailPlans = {
    "tiny-qwen2-moe", "tiny-deepseek-v2", "tiny-minimax-partial-rope"};

/// An fp8 KV cache against the bf16 one.
class GoldenFp8KvCache : public GoldenQuantizedTest {};
/// fp8 routed experts against bf16 ones.
class GoldenFp8Experts : public GoldenQuantizedTest {};
/// mxfp4 routed experts against bf16 ones.
class GoldenMxfp4Experts : public GoldenQuantizedTest {};

} // namespace moe
