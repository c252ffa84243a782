// Builds small plans with seeded fp32 weights, for the tests of the model's
// resolution and of the backends.
#pragma once

#include "runtime/plan/LoadedPlan.h"
#include "runtime/schemas/PlanVersion.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace moe::test {

struct TestModel {
  std::vector<uint8_t> bytes;
  std::vector<std::vector<float>> weights;
  LoadedPlan plan() const {
    return std::move(LoadedPlan::fromBytes(bytes, "test.moeplan").value());
  }
};

class PlanBuilder {
public:
  explicit PlanBuilder(uint32_t seed) : rng_(seed) {}

  flatbuffers::FlatBufferBuilder fb;

  int values(std::vector<int64_t> shape, std::vector<float> data) {
    std::string name = "p" + std::to_string(params_.size());
    params_.push_back(plan::CreateParamDirect(fb, name.c_str(), nullptr, &shape,
                                              plan::DType::f32));
    weights_.push_back(std::move(data));
    return static_cast<int>(weights_.size()) - 1;
  }
  /// Uniform in offset ± scale.
  int random(std::vector<int64_t> shape, float scale, float offset = 0) {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    std::uniform_real_distribution<float> dist(-scale, scale);
    std::vector<float> data(n);
    for (float &x : data)
      x = offset + dist(rng_);
    return values(std::move(shape), std::move(data));
  }
  /// A Linear weight [out, in] keeping activations O(1).
  int linear(int64_t out, int64_t in) {
    return random({out, in}, std::sqrt(3.0f / static_cast<float>(in)));
  }
  int norm(int64_t n) { return random({n}, 0.2f, 1.0f); }
  int bias(int64_t n) { return random({n}, 0.2f); }

  /// Appends an op; returns its first result value.
  template <typename T>
  int op(plan::Module type, flatbuffers::Offset<T> spec,
         std::vector<int> operands, int results = 1, int layer = -1) {
    std::vector<int> out;
    for (int r = 0; r < results; ++r)
      out.push_back(numValues_++);
    ops_.push_back(
        plan::CreateOpDirect(fb, type, spec.Union(), layer, &operands, &out));
    numLayers_ = std::max(numLayers_, layer + 1);
    return out[0];
  }

  TestModel finish(int logits, int64_t vocab, int64_t hidden) {
    std::vector<int64_t> eos{1};
    auto model =
        plan::CreateModelDirect(fb, "test", "", vocab, hidden, numLayers_, 64,
                                -1, &eos, &params_, &ops_, numValues_, logits);
    plan::FinishSizePrefixedPlanBuffer(
        fb, plan::CreatePlan(fb, plan::kSchemaVersion, model));
    TestModel m;
    m.bytes.assign(fb.GetBufferPointer(), fb.GetBufferPointer() + fb.GetSize());
    m.weights = std::move(weights_);
    return m;
  }

private:
  std::mt19937 rng_;
  int numLayers_ = 0;
  std::vector<flatbuffers::Offset<plan::Param>> params_;
  std::vector<std::vector<float>> weights_;
  std::vector<flatbuffers::Offset<plan::Op>> ops_;
  int numValues_ = 1;
};

/// Embedding → op → LM head with an identity weight, so the logits are the
/// op's output.
struct OpHarness {
  PlanBuilder b{9};
  int64_t hidden, vocab = 20;
  int embedding, table;
  explicit OpHarness(int64_t width) : hidden(width) {
    table = b.random({vocab, hidden}, 1.0f);
    embedding =
        b.op(plan::Module::Embedding, plan::CreateEmbedding(b.fb, table), {0});
  }
  TestModel finish(int output) {
    std::vector<float> identity(hidden * hidden, 0.0f);
    for (int64_t i = 0; i < hidden; ++i)
      identity[i * hidden + i] = 1.0f;
    int head =
        b.op(plan::Module::LMHead,
             plan::CreateLMHead(b.fb, b.values({hidden, hidden}, identity)),
             {output});
    return b.finish(head, hidden, hidden);
  }
};

} // namespace moe::test
