// Tiny models of every family the runtime runs (Mixtral, Qwen2/3-MoE,
// OLMoE, GPT-OSS, DeepSeek-V2/V3, MiniMax, Yi-Lightning) as plans with seeded
// fp32 weights: the models the backend and resolution tests share.
#pragma once

#include "test/runtime/model/TestPlans.h"

#include <cmath>
#include <string>
#include <vector>

namespace moe::test {

enum class AttentionKind { gqa, mla, lightning };

struct LayerConfig {
  AttentionKind attention = AttentionKind::gqa;
  int64_t window = 0;
  int kvSource = -1;
  bool moe = true;
};

struct ModelConfig {
  std::string name;
  int64_t hidden = 24, vocab = 40;
  std::vector<LayerConfig> layers{{}, {}};
  // Softmax attention.
  int heads = 4, kvHeads = 2, headDim = 8;
  plan::RopeStyle ropeStyle = plan::RopeStyle::neox;
  int rotaryDim = 8;
  double theta = 10000;
  bool yarn = false, truncate = true;
  double factor = 1, attentionFactor = 1;
  int64_t originalMax = 0;
  bool qkvBias = false, oBias = false, sinks = false;
  plan::QKNorm qkNorm = plan::QKNorm::none;
  // MLA.
  int qLoraRank = 12, kvLoraRank = 10, nope = 6, ropeDim = 4, vDim = 6;
  // Lightning.
  int blockSize = 4;
  // MoE and MLPs.
  int experts = 6, topK = 2, width = 10;
  plan::RouterScoring scoring = plan::RouterScoring::softmax;
  plan::RouterSelection selection = plan::RouterSelection::greedy;
  int groups = 1, keptGroups = 1;
  bool normalize = true;
  double scaling = 1;
  bool routerBias = false, correctionBias = false, fused = false;
  double swigluLimit = 0.6;
  int sharedWidth = 0;
  bool sharedGate = false;
  int denseWidth = 12;
  bool postNorm = false;
  double alpha = 1.0;
};

inline flatbuffers::Offset<plan::Rope>
rope(PlanBuilder &b, const ModelConfig &c, int rotaryDim) {
  return plan::CreateRope(
      b.fb, c.ropeStyle, c.theta, rotaryDim,
      c.yarn ? plan::RopeScaling::yarn : plan::RopeScaling::none, c.factor,
      c.originalMax, 32.0, 1.0, c.truncate, c.attentionFactor);
}

/// A dense layer's MLP, or a MoE layer's shared experts (`shared`), with an
/// output gate (`gated`, Qwen2-MoE's shared expert gate) or without.
inline int mlp(PlanBuilder &b, int x, int64_t hidden, int width, bool shared,
               bool gated, int layer) {
  int gate = b.linear(width, hidden), up = b.linear(width, hidden),
      down = b.linear(hidden, width);
  int outputGate = gated ? b.linear(1, hidden) : -1;
  return b.op(plan::Module::MLP,
              plan::CreateMLP(b.fb, width, gate, up, down, outputGate, shared),
              {x}, 1, layer);
}

inline int moeBlock(PlanBuilder &b, const ModelConfig &c, int x, int layer) {
  int64_t h = c.hidden, e = c.experts, w = c.width;
  int weight = b.linear(e, h);
  int bias = c.routerBias ? b.bias(e) : -1;
  int correction = c.correctionBias ? b.bias(e) : -1;
  int weights = b.op(plan::Module::Router,
                     plan::CreateRouter(b.fb, e, c.topK, c.scoring, c.selection,
                                        c.groups, c.keptGroups, c.normalize,
                                        c.scaling, weight, bias, correction),
                     {x}, 2, layer);
  flatbuffers::Offset<plan::Experts> spec;
  if (c.fused) {
    int gateUp = b.random({e, h, 2 * w}, std::sqrt(3.0f / h));
    int gateUpBias = b.bias(e * 2 * w);
    int down = b.random({e, w, h}, std::sqrt(3.0f / w));
    int downBias = b.bias(e * h);
    spec = plan::CreateExperts(
        b.fb, e, w, plan::ExpertActivation::swiglu_clamped,
        plan::ExpertLayout::fused_interleaved_transposed, c.swigluLimit, 1.702,
        -1, -1, gateUp, down, gateUpBias, downBias);
  } else {
    int gate = b.random({e, w, h}, std::sqrt(3.0f / h));
    int up = b.random({e, w, h}, std::sqrt(3.0f / h));
    int down = b.random({e, h, w}, std::sqrt(3.0f / w));
    spec = plan::CreateExperts(b.fb, e, w, plan::ExpertActivation::silu_gated,
                               plan::ExpertLayout::separate, 0, 0, gate, up, -1,
                               down);
  }
  int routed =
      b.op(plan::Module::Experts, spec, {x, weights, weights + 1}, 1, layer);
  if (c.sharedWidth == 0)
    return routed;
  int shared = mlp(b, x, h, c.sharedWidth, true, c.sharedGate, layer);
  return b.op(plan::Module::Residual, plan::CreateResidual(b.fb),
              {routed, shared}, 1, layer);
}

inline int attention(PlanBuilder &b, const ModelConfig &c, int x, int layer) {
  const LayerConfig &lc = c.layers[layer];
  int64_t h = c.hidden;
  if (lc.attention == AttentionKind::lightning) {
    int64_t w = c.heads * c.headDim;
    double decayScale = 1.0 - layer / (c.layers.size() - 1 + 1e-5) + 1e-5;
    int qkv = b.linear(3 * w, h), gate = b.linear(w, h), norm = b.norm(w),
        out = b.linear(h, w);
    return b.op(plan::Module::LightningAttention,
                plan::CreateLightningAttention(b.fb, c.heads, c.headDim,
                                               decayScale, c.blockSize, 1e-6,
                                               qkv, gate, norm, out),
                {x}, 1, layer);
  }
  if (lc.attention == AttentionKind::mla) {
    int64_t qk = c.nope + c.ropeDim;
    int q = -1, qa = -1, qaNorm = -1, qb = -1;
    if (c.qLoraRank > 0) {
      qa = b.linear(c.qLoraRank, h);
      qaNorm = b.norm(c.qLoraRank);
      qb = b.linear(c.heads * qk, c.qLoraRank);
    } else {
      q = b.linear(c.heads * qk, h);
    }
    int kva = b.linear(c.kvLoraRank + c.ropeDim, h),
        kvaNorm = b.norm(c.kvLoraRank),
        kvb = b.linear(c.heads * (c.nope + c.vDim), c.kvLoraRank),
        o = b.linear(h, c.heads * c.vDim);
    double scale = 1.3 / std::sqrt(static_cast<double>(qk));
    return b.op(plan::Module::MLAttention,
                plan::CreateMLAttention(b.fb, c.heads, c.qLoraRank,
                                        c.kvLoraRank, c.nope, c.ropeDim, c.vDim,
                                        rope(b, c, c.ropeDim), scale, 1e-6, q,
                                        qa, qaNorm, qb, kva, kvaNorm, kvb, o),
                {x}, 1, layer);
  }
  int64_t qw = c.heads * c.headDim, kvw = c.kvHeads * c.headDim;
  bool owns = lc.kvSource < 0;
  bool perHead = c.qkNorm == plan::QKNorm::per_head;
  int q = b.linear(qw, h);
  int k = owns ? b.linear(kvw, h) : -1, v = owns ? b.linear(kvw, h) : -1;
  int o = b.linear(h, qw);
  int qb = c.qkvBias ? b.bias(qw) : -1;
  int kb = c.qkvBias && owns ? b.bias(kvw) : -1;
  int vb = c.qkvBias && owns ? b.bias(kvw) : -1;
  int ob = c.oBias ? b.bias(h) : -1;
  int qn =
      c.qkNorm != plan::QKNorm::none ? b.norm(perHead ? c.headDim : qw) : -1;
  int kn = c.qkNorm != plan::QKNorm::none && owns
               ? b.norm(perHead ? c.headDim : kvw)
               : -1;
  int sinks = c.sinks ? b.random({c.heads}, 1.0f) : -1;
  return b.op(plan::Module::Attention,
              plan::CreateAttention(
                  b.fb, c.heads, c.kvHeads, c.headDim, rope(b, c, c.rotaryDim),
                  1.0 / std::sqrt(c.headDim), q, k, v, o, qb, kb, vb, ob,
                  c.qkNorm, qn, kn, 1e-6, lc.window, sinks, lc.kvSource),
              {x}, 1, layer);
}

inline TestModel buildModel(const ModelConfig &c, uint32_t seed = 1) {
  PlanBuilder b(seed);
  int64_t h = c.hidden;
  auto norm = [&](int x, int layer) {
    return b.op(plan::Module::RMSNorm,
                plan::CreateRMSNorm(b.fb, b.norm(h), 1e-6), {x}, 1, layer);
  };
  auto residual = [&](int skip, int update, double scale, int layer) {
    return b.op(plan::Module::Residual, plan::CreateResidual(b.fb, scale, 1.0),
                {skip, update}, 1, layer);
  };
  int x = b.op(plan::Module::Embedding,
               plan::CreateEmbedding(b.fb, b.random({c.vocab, h}, 1.0f)), {0});
  for (int l = 0; l < static_cast<int>(c.layers.size()); ++l) {
    int n1 = norm(x, l);
    int a = attention(b, c, n1, l);
    x = c.postNorm ? residual(n1, a, c.alpha, l) : residual(x, a, 1.0, l);
    int n2 = norm(x, l);
    int m = c.layers[l].moe ? moeBlock(b, c, n2, l)
                            : mlp(b, n2, h, c.denseWidth, false, false, l);
    x = c.postNorm ? residual(n2, m, c.alpha, l) : residual(x, m, 1.0, l);
  }
  int final = norm(x, -1);
  int logits = b.op(plan::Module::LMHead,
                    plan::CreateLMHead(b.fb, b.linear(c.vocab, h)), {final});
  return b.finish(logits, c.vocab, h);
}

inline std::vector<ModelConfig> modelConfigs() {
  std::vector<ModelConfig> configs;
  ModelConfig mixtral;
  mixtral.name = "mixtral";
  configs.push_back(mixtral);

  ModelConfig qwen3 = mixtral;
  qwen3.name = "qwen3";
  qwen3.qkNorm = plan::QKNorm::per_head;
  configs.push_back(qwen3);

  ModelConfig olmoe = mixtral;
  olmoe.name = "olmoe";
  olmoe.kvHeads = 4;
  olmoe.qkNorm = plan::QKNorm::full_width;
  olmoe.normalize = false;
  configs.push_back(olmoe);

  ModelConfig qwen2 = mixtral;
  qwen2.name = "qwen2";
  qwen2.qkvBias = true;
  qwen2.normalize = false;
  qwen2.sharedWidth = 14;
  qwen2.sharedGate = true;
  configs.push_back(qwen2);

  ModelConfig gptOss = mixtral;
  gptOss.name = "gpt_oss";
  gptOss.layers = {{AttentionKind::gqa, 3}, {}};
  gptOss.qkvBias = gptOss.oBias = gptOss.sinks = true;
  gptOss.theta = 150000;
  gptOss.yarn = true;
  gptOss.factor = 32;
  gptOss.originalMax = 4096;
  gptOss.truncate = false;
  gptOss.attentionFactor = 0.1 * std::log(32.0) + 1.0;
  gptOss.routerBias = true;
  gptOss.fused = true;
  configs.push_back(gptOss);

  ModelConfig v3 = mixtral;
  v3.name = "deepseek_v3";
  v3.layers = {{AttentionKind::mla, 0, -1, false}, {AttentionKind::mla}};
  v3.ropeStyle = plan::RopeStyle::interleaved;
  v3.yarn = true;
  v3.factor = 40;
  v3.originalMax = 4096;
  v3.scoring = plan::RouterScoring::sigmoid;
  v3.selection = plan::RouterSelection::noaux_tc;
  v3.groups = 3;
  v3.keptGroups = 2;
  v3.scaling = 2.5;
  v3.correctionBias = true;
  v3.sharedWidth = 8;
  configs.push_back(v3);

  ModelConfig v2 = v3;
  v2.name = "deepseek_v2";
  v2.yarn = false;
  v2.qLoraRank = 0;
  v2.layers = {{AttentionKind::mla}, {AttentionKind::mla}};
  v2.scoring = plan::RouterScoring::softmax;
  v2.selection = plan::RouterSelection::group_limited_greedy;
  v2.correctionBias = false;
  v2.normalize = false;
  v2.scaling = 16;
  configs.push_back(v2);

  ModelConfig minimax = mixtral;
  minimax.name = "minimax";
  minimax.layers = {{AttentionKind::lightning}, {}, {AttentionKind::lightning}};
  minimax.rotaryDim = 4;
  minimax.theta = 1e7;
  minimax.postNorm = true;
  minimax.alpha = 1.7;
  configs.push_back(minimax);

  ModelConfig yi = mixtral;
  yi.name = "yi_lightning";
  yi.layers = {
      {AttentionKind::gqa, 4, -1, false}, {AttentionKind::gqa, 4, 0, true}, {}};
  yi.sharedWidth = 8;
  yi.selection = plan::RouterSelection::group_limited_greedy;
  yi.groups = 3;
  yi.keptGroups = 2;
  configs.push_back(yi);
  return configs;
}

} // namespace moe::test
