// Error paths of the HF config importer: every bad config gives exactly one
// diagnostic that names the offending field.

#include "moe/Import/HFConfig.h"

#include "dialects/MoE/MoEOps.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using namespace mlir;

namespace {

/// A valid tiny Mixtral config; tests break one field at a time.
constexpr const char *kMixtral = R"({
  "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
  "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 8,
  "num_experts_per_tok": 2, "vocab_size": 256, "rms_norm_eps": 1e-5,
  "rope_theta": 1000000.0, "torch_dtype": "float32"
})";

/// A valid tiny DeepSeek-V2 config (its class has no num_experts_per_tok
/// default).
constexpr const char *kDeepSeekV2 = R"({
  "model_type": "deepseek_v2", "hidden_size": 64, "intermediate_size": 128,
  "moe_intermediate_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 4, "kv_lora_rank": 32, "qk_nope_head_dim": 16,
  "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 8,
  "num_experts_per_tok": 2, "vocab_size": 256
})";

struct ImportResult {
  bool ok = false;
  std::vector<std::string> errors;
};

/// Replaces `"key": old` by `"key": replacement` (replacement may be empty
/// to drop the key's value, which makes it an invalid JSON).
std::string withField(std::string text, const std::string &key,
                      const std::string &replacement) {
  std::string needle = "\"" + key + "\": ";
  size_t at = text.find(needle);
  EXPECT_NE(at, std::string::npos) << key;
  size_t end = text.find_first_of(",}", at + needle.size());
  if (text[at + needle.size()] == '[')
    end = text.find(']', at) + 1;
  return text.replace(at + needle.size(), end - at - needle.size(),
                      replacement);
}

std::string withoutField(std::string text, const std::string &key) {
  std::string needle = "\"" + key + "\": ";
  size_t at = text.find(needle);
  size_t end = text.find_first_of(",}", at + needle.size());
  if (text[end] == ',')
    ++end;
  return text.erase(at, end - at);
}

ImportResult import(const std::string &text) {
  MLIRContext context;
  ImportResult result;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
    result.errors.push_back(diag.str());
    return success();
  });
  OwningOpRef<ModuleOp> module =
      mlir::moe::importHFConfigText(&context, text, "config.json");
  result.ok = static_cast<bool>(module);
  return result;
}

void expectOneError(const std::string &text, const std::string &expected) {
  ImportResult result = import(text);
  EXPECT_FALSE(result.ok);
  ASSERT_EQ(result.errors.size(), 1u);
  EXPECT_NE(result.errors[0].find(expected), std::string::npos)
      << "got: " << result.errors[0];
}

TEST(HFConfigImport, ValidConfigImports) {
  ImportResult result = import(kMixtral);
  EXPECT_TRUE(result.ok);
  EXPECT_TRUE(result.errors.empty());
}

TEST(HFConfigImport, NotJson) {
  expectOneError("{\"model_type\": ", "not valid JSON");
}

TEST(HFConfigImport, NotAnObject) {
  expectOneError("[1, 2]", "expected a JSON object");
}

TEST(HFConfigImport, MissingModelType) {
  expectOneError(withoutField(kMixtral, "model_type"),
                 "field 'model_type' is missing");
}

TEST(HFConfigImport, UnknownModelType) {
  expectOneError(withField(kMixtral, "model_type", "\"llama\""),
                 "field 'model_type' 'llama' is not supported (supported: "
                 "mixtral, deepseek_v2");
}

// Mixtral's config class has a default for every field the importer reads;
// DeepSeek-V2's num_experts_per_tok has none.
TEST(HFConfigImport, MissingRequiredField) {
  expectOneError(withoutField(kDeepSeekV2, "num_experts_per_tok"),
                 "field 'num_experts_per_tok' is missing");
}

TEST(HFConfigImport, WrongFieldType) {
  expectOneError(withField(kMixtral, "num_hidden_layers", "\"two\""),
                 "field 'num_hidden_layers' must be an integer");
}

TEST(HFConfigImport, NonPositiveSize) {
  expectOneError(withField(kMixtral, "vocab_size", "0"),
                 "field 'vocab_size' must be positive, got 0");
}

TEST(HFConfigImport, KvHeadsMustDivideHeads) {
  expectOneError(withField(kMixtral, "num_key_value_heads", "3"),
                 "field 'num_key_value_heads' (3) must divide "
                 "num_attention_heads (4)");
}

TEST(HFConfigImport, HeadsMustDivideHidden) {
  expectOneError(withField(kMixtral, "num_attention_heads", "6"),
                 "field 'num_attention_heads' (6) must divide hidden_size");
}

TEST(HFConfigImport, TopKAboveExperts) {
  expectOneError(withField(kMixtral, "num_experts_per_tok", "9"),
                 "field 'num_experts_per_tok' (9) exceeds the number of "
                 "experts (8)");
}

TEST(HFConfigImport, UnsupportedDtype) {
  expectOneError(withField(kMixtral, "torch_dtype", "\"int8\""),
                 "field 'torch_dtype' must be float32, float16 or bfloat16");
}

TEST(HFConfigImport, UnsupportedRopeType) {
  std::string text = withField(kMixtral, "rope_theta",
                               "1e6, \"rope_scaling\": {\"rope_type\": "
                               "\"dynamic\", \"factor\": 2.0}");
  expectOneError(text, "field 'rope_scaling.rope_type' 'dynamic' is not "
                       "supported");
}

TEST(HFConfigImport, YarnNeedsItsFields) {
  std::string text = withField(kMixtral, "rope_theta",
                               "1e6, \"rope_scaling\": {\"type\": \"yarn\", "
                               "\"original_max_position_embeddings\": 4096}");
  expectOneError(text, "field 'rope_scaling.factor' is missing");
}

TEST(HFConfigImport, GptOssTopKAboveExperts) {
  std::string text = withField(kMixtral, "model_type", "\"gpt_oss\"");
  text = withField(text, "num_experts_per_tok", "9");
  expectOneError(text, "field 'num_experts_per_tok' (9) exceeds the number of "
                       "experts (8)");
}

TEST(HFConfigImport, LayerTypesLengthMustMatch) {
  std::string text = withField(kMixtral, "model_type", "\"gpt_oss\"");
  text = withField(text, "num_local_experts",
                   "8, \"layer_types\": [\"full_attention\"], "
                   "\"sliding_window\": 128");
  expectOneError(text, "field 'layer_types' has 1 entries but "
                       "num_hidden_layers is 2");
}

constexpr const char *kDeepSeek = R"({
  "model_type": "deepseek_v3", "hidden_size": 64, "intermediate_size": 128,
  "moe_intermediate_size": 32, "num_hidden_layers": 2,
  "num_attention_heads": 4, "q_lora_rank": 48, "kv_lora_rank": 32,
  "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
  "n_routed_experts": 16, "n_shared_experts": 1, "num_experts_per_tok": 4,
  "first_k_dense_replace": 1, "n_group": 4, "topk_group": 2,
  "topk_method": "noaux_tc", "scoring_func": "sigmoid", "vocab_size": 256,
  "norm_topk_prob": true, "routed_scaling_factor": 2.5
})";

TEST(HFConfigImport, DeepSeekImports) { EXPECT_TRUE(import(kDeepSeek).ok); }

TEST(HFConfigImport, GroupsMustDivideExperts) {
  expectOneError(withField(kDeepSeek, "n_group", "3"),
                 "field 'n_group' (3) must divide n_routed_experts (16)");
}

TEST(HFConfigImport, UnknownTopkMethod) {
  expectOneError(withField(kDeepSeek, "topk_method", "\"random\""),
                 "field 'topk_method' 'random' is not greedy");
}

TEST(HFConfigImport, DenseLayerNeedsIntermediateSize) {
  expectOneError(withField(kDeepSeek, "intermediate_size", "0"),
                 "field 'intermediate_size' must be positive: layer 0 is a "
                 "dense MLP layer");
}

constexpr const char *kYi = R"({
  "model_type": "yi_lightning", "hidden_size": 64, "num_hidden_layers": 4,
  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
  "vocab_size": 256, "moe_intermediate_size": 32, "n_routed_experts": 8,
  "n_shared_experts": 1, "num_experts_per_tok": 2,
  "layer_types": ["sliding_attention", "sliding_attention", "full_attention", "full_attention"],
  "sliding_window": 8, "kv_source_layers": [0, 0, 2, 2]
})";

TEST(HFConfigImport, YiLightningImports) { EXPECT_TRUE(import(kYi).ok); }

TEST(HFConfigImport, KvSourceMustBeEarlier) {
  expectOneError(withField(kYi, "kv_source_layers", "[0, 2, 2, 2]"),
                 "field 'kv_source_layers' entry 1 is 2: a layer can only "
                 "read the K/V of an earlier layer");
}

TEST(HFConfigImport, KvSourceMustNotChain) {
  std::string text = withField(kYi, "layer_types",
                               "[\"full_attention\", \"full_attention\", "
                               "\"full_attention\", \"full_attention\"]");
  expectOneError(withField(text, "kv_source_layers", "[0, 0, 1, 3]"),
                 "field 'kv_source_layers' entry 2 reads layer 1, which "
                 "itself reads layer 0");
}

TEST(HFConfigImport, KvSourceMustHaveTheSameWindow) {
  expectOneError(withField(kYi, "kv_source_layers", "[0, 0, 0, 2]"),
                 "field 'kv_source_layers' entry 2 reads layer 0, which has a "
                 "different attention window");
}

TEST(HFConfigImport, MiniMaxSharedExpertsRejected) {
  std::string text = withField(kMixtral, "model_type", "\"minimax\"");
  text = withField(text, "num_local_experts",
                   "8, \"shared_intermediate_size\": 64, \"layer_types\": "
                   "[\"linear_attention\", \"full_attention\"]");
  expectOneError(text, "field 'shared_intermediate_size' must be 0");
}

TEST(HFConfigImport, UnreadableFile) {
  MLIRContext context;
  std::vector<std::string> errors;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
    errors.push_back(diag.str());
    return success();
  });
  EXPECT_FALSE(mlir::moe::importHFConfig(&context, "/nonexistent/config.json"));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("cannot read /nonexistent/config.json"),
            std::string::npos);
}

} // namespace
