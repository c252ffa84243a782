// One HuggingFace golden fixture (test/golden/<model>): the prompts, HF's
// greedy continuations and its logits, shared by the CPU and CUDA backend
// tests.
#pragma once

#include "runtime/weights/Safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace moe {

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

/// Reads golden.json and golden_logits.safetensors of the fixture `dir`.
inline Golden loadGolden(const std::string &dir) {
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

} // namespace moe
