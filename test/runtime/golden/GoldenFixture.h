// One HuggingFace golden fixture (test/golden/<model>): the prompts, HF's
// greedy continuations and its logits, the model's committed plans and its
// weights, and the batches that feed the prompts and continuations to a
// backend.
#pragma once

#include "runtime/engine/Backend.h"
#include "runtime/plan/LoadedPlan.h"
#include "runtime/weights/Safetensors.h"
#include "runtime/weights/WeightSet.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace moe {

/// Every fixture with HF outputs (test/golden/README.md).
inline const std::vector<std::string> kGoldenModels = {
    "tiny-mixtral",       "tiny-deepseek-v2",
    "tiny-deepseek-v3",   "tiny-deepseek-v3-fp8",
    "tiny-qwen2-moe",     "tiny-qwen3-moe",
    "tiny-qwen3-moe-fp8", "tiny-minimax-partial-rope",
    "tiny-gpt-oss",       "tiny-gpt-oss-mxfp4"};

/// test/golden, or MOE_GOLDEN_DIR from the environment: a test binary run on
/// a machine where the checkout lives elsewhere.
inline std::string goldenDir() {
  const char *dir = std::getenv("MOE_GOLDEN_DIR");
  return dir && *dir ? dir : MOE_GOLDEN_DIR;
}

/// test/golden/<model>/<name>.moeplan: "resident" (as imported),
/// "small-card" (B 2, experts streamed) or "streamed" (KV in host memory
/// too), made by scripts/golden-plans.sh.
inline Result<LoadedPlan> loadGoldenPlan(const std::string &model,
                                         const std::string &name) {
  return LoadedPlan::fromFile(goldenDir() + "/" + model + "/" + name +
                              ".moeplan");
}

/// `plan` as `edit` changes it (the schema's object API), verified again.
inline Result<LoadedPlan>
editPlan(const LoadedPlan &plan,
         const std::function<void(plan::PlanT &)> &edit) {
  std::unique_ptr<plan::PlanT> unpacked(plan.plan().UnPack());
  edit(*unpacked);
  flatbuffers::FlatBufferBuilder fb;
  plan::FinishSizePrefixedPlanBuffer(fb, plan::Plan::Pack(fb, unpacked.get()));
  return LoadedPlan::fromBytes(
      std::vector<uint8_t>(fb.GetBufferPointer(),
                           fb.GetBufferPointer() + fb.GetSize()),
      "edited plan");
}

inline Result<WeightSet> loadGoldenWeights(const std::string &model,
                                           const LoadedPlan &plan) {
  return WeightSet::fromCheckpoint(goldenDir() + "/" + model, plan.model());
}

struct Golden {
  std::vector<std::vector<int32_t>> prompts, generated;
  /// Per prompt, per position of the prompt and its continuation: HF's
  /// smallest top-k router gap over the layers (empty when not recorded).
  std::vector<std::vector<double>> routerGaps;
  std::unique_ptr<SafetensorsFile> logits;
  int64_t vocab = 0;

  /// Whether HF routed position `position` of prompt `prompt` by a top-k
  /// gap under `margin` (bf16 rounding can flip such a choice).
  bool routerTie(size_t prompt, size_t position, double margin) const {
    return prompt < routerGaps.size() && position < routerGaps[prompt].size() &&
           routerGaps[prompt][position] < margin;
  }

  /// A logits tensor ("prompt_logits_<i>", "generated_logits_<i>") as rows.
  std::vector<float> rows(const std::string &name) const {
    const TensorView *view = logits->find(name);
    EXPECT_TRUE(view) << name;
    const float *data = static_cast<const float *>(view->data);
    return std::vector<float>(data, data + view->numElements());
  }
};

/// Reads golden.json and golden_logits.safetensors of the fixture `model`.
inline Golden loadGolden(const std::string &model) {
  std::string dir = goldenDir() + "/" + model;
  Golden golden;
  std::ifstream file(dir + "/golden.json");
  nlohmann::json json = nlohmann::json::parse(file);
  for (const auto &prompt : json["prompts"]) {
    golden.prompts.push_back(prompt["input_ids"].get<std::vector<int32_t>>());
    golden.generated.push_back(
        prompt["generated_ids"].get<std::vector<int32_t>>());
  }
  if (json.contains("router_gap_per_position"))
    golden.routerGaps =
        json["router_gap_per_position"].get<std::vector<std::vector<double>>>();
  auto logits = SafetensorsFile::open(dir + "/golden_logits.safetensors");
  EXPECT_TRUE(logits.ok()) << logits.error().message();
  golden.logits = std::move(*logits);
  golden.vocab = golden.logits->find("prompt_logits_0")->shape[1];
  return golden;
}

/// Prompt p in slot slots[p] (increasing), or in slot p.
inline int32_t slotOf(const std::vector<int32_t> &slots, size_t p) {
  return slots.empty() ? int32_t(p) : slots[p];
}

/// All prompts in one prefill batch, every position's logits wanted.
inline StepBatch promptBatch(const Golden &golden,
                             const std::vector<int32_t> &slots = {}) {
  StepBatch batch;
  for (size_t p = 0; p < golden.prompts.size(); ++p)
    for (size_t t = 0; t < golden.prompts[p].size(); ++t) {
      batch.tokenIds.push_back(golden.prompts[p][t]);
      batch.rows.push_back({slotOf(slots, p), int32_t(t)});
      batch.logitRows.push_back(int32_t(batch.rows.size()) - 1);
    }
  return batch;
}

/// Step s >= 1 of greedy decoding, all prompts: HF's token of step s - 1.
inline StepBatch decodeBatch(const Golden &golden, size_t s,
                             const std::vector<int32_t> &slots = {}) {
  StepBatch batch;
  for (size_t p = 0; p < golden.prompts.size(); ++p) {
    batch.tokenIds.push_back(golden.generated[p][s - 1]);
    batch.rows.push_back(
        {slotOf(slots, p), int32_t(golden.prompts[p].size() + s - 1)});
    batch.logitRows.push_back(int32_t(p));
  }
  return batch;
}

/// Step s of greedy decoding as HF ran it: the prompts with only each one's
/// last position's logits wanted, then decodeBatch. Row p of the logits
/// compares with row s of HF's "generated_logits_<p>".
inline StepBatch greedyStepBatch(const Golden &golden, size_t s,
                                 const std::vector<int32_t> &slots = {}) {
  if (s > 0)
    return decodeBatch(golden, s, slots);
  StepBatch batch = promptBatch(golden, slots);
  batch.logitRows.clear();
  int32_t end = 0;
  for (const auto &prompt : golden.prompts)
    batch.logitRows.push_back((end += int32_t(prompt.size())) - 1);
  return batch;
}

} // namespace moe
