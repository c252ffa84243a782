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
  std::unique_ptr<SafetensorsFile> logits;
  int64_t vocab = 0;

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
  auto logits = SafetensorsFile::open(dir + "/golden_logits.safetensors");
  EXPECT_TRUE(logits.ok()) << logits.error().message();
  golden.logits = std::move(*logits);
  golden.vocab = golden.logits->find("prompt_logits_0")->shape[1];
  return golden;
}

} // namespace moe
