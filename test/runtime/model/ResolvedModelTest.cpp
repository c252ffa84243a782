// The model resolved once for every backend: the tiny models of every family
// resolve to the ops, values, caches and stages the backends rely on, and
// each class of malformed op is refused with an error naming it.

#include "runtime/model/ResolvedModel.h"
#include "test/runtime/model/TinyModels.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace moe::model {
namespace {

using test::ModelConfig;
using test::OpHarness;
using test::PlanBuilder;
using test::TestModel;

/// Resolves the plan as written, without LoadedPlan's checks, so that
/// resolve's own checks are reached too.
Result<ResolvedModel> resolve(const TestModel &m) {
  return ResolvedModel::resolve(
      *plan::GetSizePrefixedPlan(m.bytes.data())->model());
}

std::string errorOf(const TestModel &m) {
  Result<ResolvedModel> resolved = resolve(m);
  return resolved.ok() ? "resolved" : resolved.error().message();
}

ModelConfig family(const std::string &name) {
  for (const ModelConfig &config : test::modelConfigs())
    if (config.name == name)
      return config;
  ADD_FAILURE() << "no model " << name;
  return {};
}

Result<ResolvedModel> resolveFamily(const ModelConfig &config) {
  return resolve(test::buildModel(config));
}

std::vector<std::string> stageNames(const ResolvedModel &m) {
  std::vector<std::string> names;
  for (const ResolvedOp &op : m.ops)
    names.emplace_back(costmodel::stageName(op.stage));
  return names;
}

//===----------------------------------------------------------------------===//
// Resolution
//===----------------------------------------------------------------------===//

TEST(ResolvedModel, ResolvesEveryFamilyWithConsistentValues) {
  for (const ModelConfig &config : test::modelConfigs()) {
    SCOPED_TRACE(config.name);
    TestModel plan = test::buildModel(config);
    Result<ResolvedModel> m = resolve(plan);
    ASSERT_TRUE(m.ok()) << m.error().message();
    EXPECT_EQ(
        m->ops.size(),
        plan::GetSizePrefixedPlan(plan.bytes.data())->model()->ops()->size());
    EXPECT_EQ(m->embeddingVocab, config.vocab);
    EXPECT_EQ(m->hidden, config.hidden);
    EXPECT_EQ(m->headVocab, config.vocab);
    for (size_t i = 0; i < m->ops.size(); ++i) {
      for (int operand : m->ops[i].operands) {
        EXPECT_LT(m->values[operand].definedBy, static_cast<int>(i));
        EXPECT_GE(m->values[operand].lastUse, static_cast<int>(i));
      }
      for (int result : m->ops[i].results)
        EXPECT_EQ(m->values[result].definedBy, static_cast<int>(i));
    }
    const ValueInfo &logits = m->values[m->logits];
    EXPECT_EQ(logits.kind, ValueKind::logits);
    EXPECT_EQ(logits.lastUse, static_cast<int>(m->ops.size()));
    EXPECT_EQ(logits.definedBy, static_cast<int>(m->ops.size()) - 1);
  }
}

TEST(ResolvedModel, MixtralOpsValuesAndStages) {
  Result<ResolvedModel> m = resolveFamily(family("mixtral"));
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->modelType, "test");
  std::vector<std::string> layer{"norm",   "attention",      "residual", "norm",
                                 "router", "routed experts", "residual"};
  std::vector<std::string> stages{"embedding"};
  stages.insert(stages.end(), layer.begin(), layer.end());
  stages.insert(stages.end(), layer.begin(), layer.end());
  stages.insert(stages.end(), {"norm", "LM head"});
  EXPECT_EQ(stageNames(*m), stages);

  EXPECT_EQ(m->values[0].kind, ValueKind::tokens);
  EXPECT_EQ(m->values[0].lastUse, 0);
  const ResolvedOp &router = m->ops[5];
  ASSERT_EQ(router.kind(), OpKind::router);
  const ValueInfo &weights = m->values[router.results[0]];
  const ValueInfo &indices = m->values[router.results[1]];
  EXPECT_EQ(weights.kind, ValueKind::routeWeights);
  EXPECT_EQ(indices.kind, ValueKind::routeIndices);
  EXPECT_EQ(weights.width, 2);
  EXPECT_EQ(indices.experts, 6);
  const auto &experts = std::get<ExpertsSpec>(m->ops[6].spec);
  EXPECT_EQ(experts.topK, 2);
  EXPECT_FALSE(experts.clamped());
  EXPECT_EQ(experts.gateUp, kAbsent);
  EXPECT_EQ(experts.downBias, kAbsent);

  const auto &attention = std::get<AttentionSpec>(m->ops[2].spec);
  EXPECT_EQ(attention.qBias, kAbsent);
  EXPECT_EQ(attention.sinks, kAbsent);
  EXPECT_EQ(attention.qNorm, kAbsent);
  EXPECT_TRUE(attention.ownsKv);
  ASSERT_EQ(m->kvCaches.size(), 2u);
  EXPECT_EQ(m->kvCaches[1].layer, 1);
  EXPECT_EQ(m->kvCaches[1].width(), 16);
  EXPECT_TRUE(m->latentCaches.empty());
  EXPECT_TRUE(m->lightningStates.empty());
}

// The planner's stage names (costmodel::stageName): every attention is
// "attention", an MLP is shared experts or a dense MLP by its flag.
TEST(ResolvedModel, StagesAreThePlannersForEveryAttentionAndMlp) {
  Result<ResolvedModel> v3 = resolveFamily(family("deepseek_v3"));
  ASSERT_TRUE(v3.ok()) << v3.error().message();
  std::vector<std::string> stages = stageNames(*v3);
  EXPECT_EQ(stages[2], "attention");
  EXPECT_EQ(stages[5], "dense MLP");
  EXPECT_EQ(std::count(stages.begin(), stages.end(), "shared experts"), 1);

  Result<ResolvedModel> minimax = resolveFamily(family("minimax"));
  ASSERT_TRUE(minimax.ok()) << minimax.error().message();
  ASSERT_EQ(minimax->ops[2].kind(), OpKind::lightning);
  EXPECT_EQ(costmodel::stageName(minimax->ops[2].stage), "attention");
}

TEST(ResolvedModel, SharedKvCachesLatentCachesAndLightningStates) {
  // Yi-Lightning: layer 1 reads layer 0's K/V; layer 2 has its own.
  Result<ResolvedModel> yi = resolveFamily(family("yi_lightning"));
  ASSERT_TRUE(yi.ok()) << yi.error().message();
  ASSERT_EQ(yi->kvCaches.size(), 2u);
  EXPECT_EQ(yi->kvCaches[0].layer, 0);
  EXPECT_EQ(yi->kvCaches[1].layer, 2);
  std::vector<const AttentionSpec *> attention;
  for (const ResolvedOp &op : yi->ops)
    if (const auto *spec = std::get_if<AttentionSpec>(&op.spec))
      attention.push_back(spec);
  ASSERT_EQ(attention.size(), 3u);
  EXPECT_EQ(attention[1]->cache, 0);
  EXPECT_FALSE(attention[1]->ownsKv);
  EXPECT_EQ(attention[1]->k, kAbsent);
  EXPECT_EQ(attention[1]->kNorm, kAbsent);
  EXPECT_EQ(attention[2]->cache, 1);
  EXPECT_EQ(attention[0]->window, 4);

  ModelConfig c = family("deepseek_v3");
  Result<ResolvedModel> v3 = resolveFamily(c);
  ASSERT_TRUE(v3.ok()) << v3.error().message();
  ASSERT_EQ(v3->latentCaches.size(), 2u);
  EXPECT_EQ(v3->latentCaches[1].width, c.kvLoraRank + c.ropeDim);
  EXPECT_EQ(v3->latentCaches[1].layer, 1);
  EXPECT_TRUE(v3->kvCaches.empty());
  const auto &mla = std::get<LatentAttentionSpec>(v3->ops[2].spec);
  EXPECT_EQ(mla.q, kAbsent);
  EXPECT_NE(mla.qA, kAbsent);
  EXPECT_EQ(mla.rope.rotaryDim, c.ropeDim);
  EXPECT_TRUE(mla.rope.yarn);

  c = family("minimax");
  Result<ResolvedModel> minimax = resolveFamily(c);
  ASSERT_TRUE(minimax.ok()) << minimax.error().message();
  ASSERT_EQ(minimax->lightningStates.size(), 2u);
  EXPECT_EQ(minimax->lightningStates[1].layer, 2);
  EXPECT_EQ(minimax->lightningStates[1].elementsPerSlot(),
            c.heads * c.headDim * c.headDim);
  ASSERT_EQ(minimax->kvCaches.size(), 1u);
  EXPECT_EQ(minimax->kvCaches[0].layer, 1);
  const auto &lightning = std::get<LightningSpec>(minimax->ops[2].spec);
  EXPECT_EQ(lightning.decays.size(), static_cast<size_t>(c.heads));
  EXPECT_EQ(lightning.state, 0);
}

TEST(ResolvedModel, GptOssFusedExpertsAndOptionalWeights) {
  Result<ResolvedModel> m = resolveFamily(family("gpt_oss"));
  ASSERT_TRUE(m.ok()) << m.error().message();
  const auto &attention = std::get<AttentionSpec>(m->ops[2].spec);
  EXPECT_NE(attention.sinks, kAbsent);
  EXPECT_NE(attention.kBias, kAbsent);
  EXPECT_EQ(attention.window, 3);
  EXPECT_TRUE(attention.rope.yarn);
  const auto &experts = std::get<ExpertsSpec>(m->ops[6].spec);
  EXPECT_TRUE(experts.clamped());
  EXPECT_EQ(experts.gate, kAbsent);
  EXPECT_NE(experts.gateUp, kAbsent);
  EXPECT_NE(experts.gateUpBias, kAbsent);
  EXPECT_NE(experts.downBias, kAbsent);
  const auto &router = std::get<RouterSpec>(m->ops[5].spec);
  EXPECT_NE(router.bias, kAbsent);
  EXPECT_EQ(router.correction, kAbsent);
}

//===----------------------------------------------------------------------===//
// Errors
//===----------------------------------------------------------------------===//

constexpr int64_t kHidden = 8;

flatbuffers::Offset<plan::Rope> rope(PlanBuilder &b, int rotaryDim,
                                     double theta = 10000, bool yarn = false) {
  return plan::CreateRope(b.fb, plan::RopeStyle::neox, theta, rotaryDim,
                          yarn ? plan::RopeScaling::yarn
                               : plan::RopeScaling::none);
}

/// Softmax attention over the harness's embedding: 2 heads of 4 over one
/// kv head.
struct AttentionShape {
  int heads = 2, kvHeads = 1, headDim = 4, rotaryDim = 4;
  double theta = 10000;
  bool yarn = false;
  int kvSource = -1;
  int layer = 0;
  int64_t window = 0;
};
int attention(OpHarness &t, const AttentionShape &s, int input) {
  PlanBuilder &b = t.b;
  int64_t qw = s.heads * s.headDim, kvw = s.kvHeads * s.headDim;
  bool owns = s.kvSource < 0;
  int q = b.linear(qw, kHidden), o = b.linear(kHidden, qw);
  int k = owns ? b.linear(kvw, kHidden) : -1;
  int v = owns ? b.linear(kvw, kHidden) : -1;
  return b.op(plan::Module::Attention,
              plan::CreateAttention(b.fb, s.heads, s.kvHeads, s.headDim,
                                    rope(b, s.rotaryDim, s.theta, s.yarn), 0.5,
                                    q, k, v, o, -1, -1, -1, -1,
                                    plan::QKNorm::none, -1, -1, 0, s.window, -1,
                                    s.kvSource),
              {input}, 1, s.layer);
}

/// The error resolving embedding → one attention → LM head.
std::string attentionError(const AttentionShape &s) {
  OpHarness t(kHidden);
  return errorOf(t.finish(attention(t, s, t.embedding)));
}

TEST(ResolvedModelErrors, ExpertsFedByTokenIds) {
  PlanBuilder b(3);
  int64_t h = 8, e = 4;
  int x = b.op(plan::Module::Embedding,
               plan::CreateEmbedding(b.fb, b.random({16, h}, 1.0f)), {0});
  int routed = b.op(plan::Module::Router,
                    plan::CreateRouter(b.fb, e, 1, plan::RouterScoring::softmax,
                                       plan::RouterSelection::greedy, 1, 1,
                                       false, 1.0, b.linear(e, h)),
                    {x}, 2);
  int y =
      b.op(plan::Module::Experts,
           plan::CreateExperts(
               b.fb, e, 4, plan::ExpertActivation::silu_gated,
               plan::ExpertLayout::separate, 0, 0, b.random({e, 4, h}, 0.5f),
               b.random({e, 4, h}, 0.5f), -1, b.random({e, h, 4}, 0.5f)),
           {x, routed, 0});
  int logits = b.op(plan::Module::LMHead,
                    plan::CreateLMHead(b.fb, b.linear(16, h)), {y});
  EXPECT_EQ(errorOf(b.finish(logits, 16, h)),
            "op 2 (Experts, layer -1): operand 2 (value 0) is not a router "
            "result");
}

TEST(ResolvedModelErrors, OperandsOfTheWrongKindCountOrId) {
  auto norm = [](OpHarness &t, std::vector<int> operands) {
    return t.b.op(plan::Module::RMSNorm,
                  plan::CreateRMSNorm(t.b.fb, t.b.norm(kHidden), 1e-6),
                  std::move(operands));
  };
  OpHarness tokens(kHidden);
  EXPECT_EQ(errorOf(tokens.finish(norm(tokens, {0}))),
            "op 1 (RMSNorm, layer -1): operand 0 (value 0) is not an "
            "activation");
  OpHarness two(kHidden);
  EXPECT_EQ(errorOf(two.finish(norm(two, {1, 1}))),
            "op 1 (RMSNorm, layer -1): expects 1 operands and 1 results");
  OpHarness missing(kHidden);
  EXPECT_EQ(errorOf(missing.finish(norm(missing, {9}))),
            "op 1 (RMSNorm, layer -1): operand value 9 does not exist");
}

TEST(ResolvedModelErrors, WeightsMissingOutOfRangeOrOfTheWrongSize) {
  OpHarness size(kHidden);
  int weight = size.b.norm(kHidden + 1);
  int normed =
      size.b.op(plan::Module::RMSNorm,
                plan::CreateRMSNorm(size.b.fb, weight, 1e-6), {size.embedding});
  EXPECT_EQ(errorOf(size.finish(normed)),
            "op 1 (RMSNorm, layer -1): 'weight' (param 1) has 9 values, the "
            "op needs 8");

  OpHarness missing(kHidden);
  PlanBuilder &b = missing.b;
  int mlp = b.op(
      plan::Module::MLP,
      plan::CreateMLP(b.fb, 4, -1, b.linear(4, kHidden), b.linear(kHidden, 4)),
      {missing.embedding}, 1, 0);
  EXPECT_EQ(errorOf(missing.finish(mlp)),
            "op 1 (MLP, layer 0): 'gate' is missing");

  OpHarness range(kHidden);
  int head = range.b.op(plan::Module::LMHead,
                        plan::CreateLMHead(range.b.fb, 99), {range.embedding});
  EXPECT_EQ(errorOf(range.b.finish(head, 20, kHidden)),
            "op 1 (LMHead, layer -1): 'weight' refers to param 99, which "
            "does not exist");
}

TEST(ResolvedModelErrors, RopeDimensionsThetaAndYarn) {
  EXPECT_EQ(attentionError({.rotaryDim = 3}),
            "op 1 (Attention, layer 0): rope rotary_dim 3 must be even and at "
            "most 4");
  EXPECT_EQ(attentionError({.rotaryDim = 6}),
            "op 1 (Attention, layer 0): rope rotary_dim 6 must be even and at "
            "most 4");
  EXPECT_EQ(attentionError({.theta = 1}),
            "op 1 (Attention, layer 0): rope theta 1 must exceed 1");
  EXPECT_EQ(attentionError({.yarn = true}),
            "op 1 (Attention, layer 0): yarn rope needs a positive factor "
            "and original_max_position");
  EXPECT_EQ(attentionError({.rotaryDim = 0, .theta = 0}), "resolved");
}

TEST(ResolvedModelErrors, AttentionHeadsWindowAndKvSource) {
  EXPECT_EQ(attentionError({.heads = 3, .kvHeads = 2}),
            "op 1 (Attention, layer 0): heads 3 / kv heads 2 / head_dim 4 are "
            "invalid");
  EXPECT_EQ(attentionError({.window = -1}),
            "op 1 (Attention, layer 0): sliding_window -1 is negative");
  EXPECT_EQ(attentionError({.kvSource = 0}),
            "op 1 (Attention, layer 0): kv_source_layer 0 has no K/V cache "
            "before this op");

  OpHarness t(kHidden);
  int first = attention(t, {}, t.embedding);
  int second = attention(t, {.kvHeads = 2, .kvSource = 0, .layer = 1}, first);
  EXPECT_EQ(errorOf(t.finish(second)),
            "op 2 (Attention, layer 1): kv_source_layer 0 caches 1 heads of "
            "4, this layer reads 2 of 4");
}

TEST(ResolvedModelErrors, LatentAndLightningDimensions) {
  OpHarness mla(kHidden);
  PlanBuilder &b = mla.b;
  int latent = b.op(plan::Module::MLAttention,
                    plan::CreateMLAttention(
                        b.fb, 2, 0, 4, 2, 2, 2, rope(b, 4), 0.5, 1e-6,
                        b.linear(8, kHidden), -1, -1, -1, b.linear(6, kHidden),
                        b.norm(4), b.linear(8, 4), b.linear(kHidden, 4)),
                    {mla.embedding}, 1, 0);
  EXPECT_EQ(errorOf(mla.finish(latent)),
            "op 1 (MLAttention, layer 0): rope rotary_dim 4 differs from "
            "qk_rope_head_dim 2");

  OpHarness zero(kHidden);
  int none = zero.b.op(
      plan::Module::MLAttention,
      plan::CreateMLAttention(zero.b.fb, 2, 0, 0, 2, 2, 2, rope(zero.b, 2)),
      {zero.embedding}, 1, 0);
  EXPECT_EQ(errorOf(zero.finish(none)),
            "op 1 (MLAttention, layer 0): MLA dimensions are invalid");

  OpHarness lightning(kHidden);
  int linear = lightning.b.op(
      plan::Module::LightningAttention,
      plan::CreateLightningAttention(lightning.b.fb, 2, 4, 1.0, 0, 1e-6),
      {lightning.embedding}, 1, 0);
  EXPECT_EQ(errorOf(lightning.finish(linear)),
            "op 1 (LightningAttention, layer 0): lightning heads, head_dim "
            "and block_size must be positive and at most 1048576");
}

/// Router of 4 experts (top 2) → experts of width 4, as `experts` says.
std::string moeError(int groups, int keptGroups,
                     plan::ExpertActivation activation,
                     plan::ExpertLayout layout, bool gateUpBias) {
  OpHarness t(kHidden);
  PlanBuilder &b = t.b;
  int64_t e = 4, w = 4, h = kHidden;
  int routed = b.op(plan::Module::Router,
                    plan::CreateRouter(b.fb, e, 2, plan::RouterScoring::softmax,
                                       plan::RouterSelection::greedy, groups,
                                       keptGroups, false, 1.0, b.linear(e, h)),
                    {t.embedding}, 2, 0);
  bool separate = layout == plan::ExpertLayout::separate;
  int gate = separate ? b.random({e, w, h}, 0.5f) : -1;
  int up = separate ? b.random({e, w, h}, 0.5f) : -1;
  int gateUp = separate ? -1 : b.random({e, h, 2 * w}, 0.5f);
  int down = b.random({e, w, h}, 0.5f);
  int bias = gateUpBias ? b.bias(e * 2 * w) : -1;
  int y = b.op(plan::Module::Experts,
               plan::CreateExperts(b.fb, e, w, activation, layout, 7.0, 1.702,
                                   gate, up, gateUp, down, bias),
               {t.embedding, routed, routed + 1}, 1, 0);
  return errorOf(t.finish(y));
}

TEST(ResolvedModelErrors, RouterGroupsAndExpertLayouts) {
  using plan::ExpertActivation, plan::ExpertLayout;
  constexpr auto fused = ExpertLayout::fused_interleaved_transposed;
  EXPECT_EQ(moeError(1, 1, ExpertActivation::silu_gated, ExpertLayout::separate,
                     false),
            "resolved");
  EXPECT_EQ(moeError(1, 1, ExpertActivation::swiglu_clamped, fused, true),
            "resolved");
  EXPECT_EQ(moeError(3, 2, ExpertActivation::silu_gated, ExpertLayout::separate,
                     false),
            "op 1 (Router, layer 0): router groups 3 / kept 2 do not fit 4 "
            "experts");
  EXPECT_EQ(moeError(1, 1, ExpertActivation::silu_gated, fused, false),
            "op 2 (Experts, layer 0): the fused layout needs swiglu_clamped");
  EXPECT_EQ(moeError(1, 1, ExpertActivation::swiglu_clamped,
                     ExpertLayout::separate, false),
            "op 2 (Experts, layer 0): swiglu_clamped needs the fused layout");
  EXPECT_EQ(moeError(1, 1, ExpertActivation::silu_gated, ExpertLayout::separate,
                     true),
            "op 2 (Experts, layer 0): gate_up_bias needs the fused layout");
}

TEST(ResolvedModelErrors, ResidualWidthsAndLogitsFromAHead) {
  OpHarness widths(kHidden);
  PlanBuilder &b = widths.b;
  int narrow = b.op(plan::Module::Embedding,
                    plan::CreateEmbedding(b.fb, b.random({20, 4}, 1.0f)), {0});
  int sum = b.op(plan::Module::Residual, plan::CreateResidual(b.fb),
                 {widths.embedding, narrow});
  EXPECT_EQ(errorOf(widths.finish(sum)),
            "op 2 (Residual, layer -1): skip and update differ in width");

  OpHarness noHead(kHidden);
  int normed = noHead.b.op(
      plan::Module::RMSNorm,
      plan::CreateRMSNorm(noHead.b.fb, noHead.b.norm(kHidden), 1e-6),
      {noHead.embedding});
  EXPECT_EQ(errorOf(noHead.b.finish(normed, 20, kHidden)),
            "the logits value 2 is not an LM head's result");
}

} // namespace
} // namespace moe::model
