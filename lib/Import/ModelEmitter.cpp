//===- ModelEmitter.cpp - ModelSpec to moe dialect IR ---------------------===//
//
// The function of the model: embedding, each layer's attention (softmax,
// latent or lightning) and MLP or MoE block with their residuals, the final
// norm and the LM head; every weight a moe.param named as in the hub
// checkpoint.
//
//===----------------------------------------------------------------------===//

#include "ModelEmitter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"

using namespace mlir;
using namespace mlir::moe;

namespace mlir::moe::hf {
namespace {

class ModelEmitter {
public:
  ModelEmitter(const ModelSpec &spec, ModuleOp module)
      : spec(spec), module(module), context(module.getContext()),
        builder(context), loc(module.getLoc()) {}

  void emit();

private:
  FlatSymbolRefAttr param(StringRef symbol, ArrayRef<int64_t> shape,
                          StringRef hfName, Type elementType = {}) {
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPoint(function);
    auto type =
        RankedTensorType::get(shape, elementType ? elementType : spec.dtype);
    ParamOp::create(builder, loc, symbol, type,
                    hfName.empty() ? StringAttr()
                                   : builder.getStringAttr(hfName),
                    PlacementAttr(), IntegerAttr());
    return FlatSymbolRefAttr::get(context, symbol);
  }
  /// A parameter of layer `l`: symbol "l<l>.<name>", hub name under
  /// "model.layers.<l>.".
  FlatSymbolRefAttr layerParam(int64_t l, StringRef name,
                               ArrayRef<int64_t> shape, StringRef hubSuffix,
                               Type elementType = {}) {
    return param(("l" + Twine(l) + "." + name).str(), shape,
                 ("model.layers." + Twine(l) + "." + hubSuffix).str(),
                 elementType);
  }

  RankedTensorType activations(int64_t width) {
    return RankedTensorType::get({ShapedType::kDynamic, width},
                                 builder.getF32Type());
  }
  RopeAttr ropeAttr() {
    const RopeSpec &r = spec.rope;
    return RopeAttr::get(context, r.style, APFloat(r.theta), r.rotaryDim,
                         r.scaling, APFloat(r.factor), r.originalMaxPosition,
                         APFloat(r.betaFast), APFloat(r.betaSlow), r.truncate,
                         APFloat(r.attentionFactor));
  }

  Value rmsNorm(Value input, FlatSymbolRefAttr weight,
                std::optional<int64_t> layer) {
    return RMSNormOp::create(builder, loc, input.getType(), input, weight,
                             builder.getF64FloatAttr(spec.normEps),
                             layer ? builder.getI64IntegerAttr(*layer)
                                   : IntegerAttr());
  }
  Value residual(Value skip, Value update, double skipScale = 1.0,
                 double updateScale = 1.0) {
    return ResidualOp::create(builder, loc, skip.getType(), skip, update,
                              builder.getF64FloatAttr(skipScale),
                              builder.getF64FloatAttr(updateScale));
  }

  Value softmaxAttention(Value input, int64_t l);
  Value latentAttention(Value input, int64_t l);
  Value lightningAttention(Value input, int64_t l);
  Value moeBlock(Value input, int64_t l);
  Value mlp(Value input, int64_t l, int64_t width, StringRef symbolPrefix,
            StringRef hubPrefix, bool sharedExperts, bool gated);

  const ModelSpec &spec;
  ModuleOp module;
  MLIRContext *context;
  OpBuilder builder;
  Location loc;
  func::FuncOp function;
};

Value ModelEmitter::softmaxAttention(Value input, int64_t l) {
  const SoftmaxAttentionSpec &a = spec.softmax;
  const LayerSpec &layer = spec.layerSpecs[l];
  int64_t h = spec.hidden, qWidth = a.heads * a.headDim,
          kvWidth = a.kvHeads * a.headDim;
  bool ownsKv = !layer.kvSourceLayer;
  auto proj = [&](StringRef name, ArrayRef<int64_t> shape, bool present) {
    return present ? layerParam(l, ("attn." + name).str(), shape,
                                ("self_attn." + name + "_proj.weight").str())
                   : FlatSymbolRefAttr();
  };
  auto bias = [&](StringRef name, int64_t width, bool present) {
    return present ? layerParam(l, ("attn." + name + "_bias").str(), {width},
                                ("self_attn." + name + "_proj.bias").str())
                   : FlatSymbolRefAttr();
  };
  FlatSymbolRefAttr q = proj("q", {qWidth, h}, true);
  FlatSymbolRefAttr k = proj("k", {kvWidth, h}, ownsKv);
  FlatSymbolRefAttr v = proj("v", {kvWidth, h}, ownsKv);
  FlatSymbolRefAttr o = proj("o", {h, qWidth}, true);
  FlatSymbolRefAttr qBias = bias("q", qWidth, a.qkvBias);
  FlatSymbolRefAttr kBias = bias("k", kvWidth, a.qkvBias && ownsKv);
  FlatSymbolRefAttr vBias = bias("v", kvWidth, a.qkvBias && ownsKv);
  FlatSymbolRefAttr oBias = bias("o", h, a.oBias);
  FlatSymbolRefAttr qNorm, kNorm;
  if (a.qkNorm != QKNorm::none) {
    bool perHead = a.qkNorm == QKNorm::per_head;
    qNorm = layerParam(l, "attn.q_norm", {perHead ? a.headDim : qWidth},
                       "self_attn.q_norm.weight");
    if (ownsKv)
      kNorm = layerParam(l, "attn.k_norm", {perHead ? a.headDim : kvWidth},
                         "self_attn.k_norm.weight");
  }
  FlatSymbolRefAttr sinks =
      a.sinks ? layerParam(l, "attn.sinks", {a.heads}, "self_attn.sinks")
              : FlatSymbolRefAttr();
  auto optionalInt = [&](std::optional<int64_t> value) {
    return value ? builder.getI64IntegerAttr(*value) : IntegerAttr();
  };
  return AttentionOp::create(
      builder, loc, input.getType(), input, builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(a.heads), builder.getI64IntegerAttr(a.kvHeads),
      builder.getI64IntegerAttr(a.headDim), ropeAttr(),
      builder.getF64FloatAttr(a.scale), q, k, v, o, qBias, kBias, vBias, oBias,
      QKNormAttr::get(context, a.qkNorm), qNorm, kNorm,
      a.qkNorm != QKNorm::none ? builder.getF64FloatAttr(spec.normEps)
                               : FloatAttr(),
      optionalInt(layer.slidingWindow), sinks,
      optionalInt(layer.kvSourceLayer));
}

Value ModelEmitter::latentAttention(Value input, int64_t l) {
  const LatentAttentionSpec &a = spec.latent;
  int64_t h = spec.hidden, qkDim = a.nopeDim + a.ropeDim;
  FlatSymbolRefAttr q, qA, qANorm, qB;
  if (a.qLoraRank == 0) {
    q = layerParam(l, "attn.q", {a.heads * qkDim, h},
                   "self_attn.q_proj.weight");
  } else {
    qA = layerParam(l, "attn.q_a", {a.qLoraRank, h},
                    "self_attn.q_a_proj.weight");
    qANorm = layerParam(l, "attn.q_a_norm", {a.qLoraRank},
                        "self_attn.q_a_layernorm.weight");
    qB = layerParam(l, "attn.q_b", {a.heads * qkDim, a.qLoraRank},
                    "self_attn.q_b_proj.weight");
  }
  FlatSymbolRefAttr kvA =
      layerParam(l, "attn.kv_a", {a.kvLoraRank + a.ropeDim, h},
                 "self_attn.kv_a_proj_with_mqa.weight");
  FlatSymbolRefAttr kvANorm = layerParam(l, "attn.kv_a_norm", {a.kvLoraRank},
                                         "self_attn.kv_a_layernorm.weight");
  FlatSymbolRefAttr kvB =
      layerParam(l, "attn.kv_b", {a.heads * (a.nopeDim + a.vDim), a.kvLoraRank},
                 "self_attn.kv_b_proj.weight");
  FlatSymbolRefAttr o =
      layerParam(l, "attn.o", {h, a.heads * a.vDim}, "self_attn.o_proj.weight");
  return MLAttentionOp::create(
      builder, loc, input.getType(), input, builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(a.heads),
      builder.getI64IntegerAttr(a.qLoraRank),
      builder.getI64IntegerAttr(a.kvLoraRank),
      builder.getI64IntegerAttr(a.nopeDim),
      builder.getI64IntegerAttr(a.ropeDim), builder.getI64IntegerAttr(a.vDim),
      ropeAttr(), builder.getF64FloatAttr(a.scale),
      builder.getF64FloatAttr(spec.normEps), q, qA, qANorm, qB, kvA, kvANorm,
      kvB, o);
}

Value ModelEmitter::lightningAttention(Value input, int64_t l) {
  const LightningSpec &a = spec.lightning;
  int64_t h = spec.hidden, width = a.heads * a.headDim;
  // HF's per-layer decay factor; layer 0 decays fastest, the last barely.
  double decayScale =
      1.0 -
      static_cast<double>(l) / (static_cast<double>(spec.layers) - 1.0 + 1e-5) +
      1e-5;
  FlatSymbolRefAttr qkv =
      layerParam(l, "attn.qkv", {3 * width, h}, "self_attn.qkv_proj.weight");
  FlatSymbolRefAttr gate =
      layerParam(l, "attn.gate", {width, h}, "self_attn.output_gate.weight");
  FlatSymbolRefAttr norm =
      layerParam(l, "attn.norm", {width}, "self_attn.norm.weight");
  FlatSymbolRefAttr out =
      layerParam(l, "attn.out", {h, width}, "self_attn.out_proj.weight");
  return LightningAttentionOp::create(
      builder, loc, input.getType(), input, builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(a.heads), builder.getI64IntegerAttr(a.headDim),
      builder.getF64FloatAttr(decayScale),
      builder.getI64IntegerAttr(a.blockSize),
      builder.getF64FloatAttr(a.normEps), qkv, gate, norm, out);
}

Value ModelEmitter::mlp(Value input, int64_t l, int64_t width,
                        StringRef symbolPrefix, StringRef hubPrefix,
                        bool sharedExperts, bool gated) {
  int64_t h = spec.hidden;
  auto weight = [&](StringRef name, ArrayRef<int64_t> shape) {
    return layerParam(l, (symbolPrefix + "." + name).str(), shape,
                      (hubPrefix + "." + name + "_proj.weight").str());
  };
  FlatSymbolRefAttr gate = weight("gate", {width, h});
  FlatSymbolRefAttr up = weight("up", {width, h});
  FlatSymbolRefAttr down = weight("down", {h, width});
  FlatSymbolRefAttr outputGate =
      gated ? layerParam(l, (symbolPrefix + ".gate_logit").str(), {1, h},
                         (hubPrefix + "_gate.weight").str())
            : FlatSymbolRefAttr();
  return MLPOp::create(
      builder, loc, input.getType(), input, builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(width), gate, up, down, outputGate,
      sharedExperts ? builder.getUnitAttr() : UnitAttr());
}

Value ModelEmitter::moeBlock(Value input, int64_t l) {
  const MoESpec &m = spec.moe;
  const TensorNaming &names = spec.names;
  int64_t h = spec.hidden, e = m.experts, w = m.width;
  std::string block = names.moeBlock;
  std::string router = block + "." + names.router;
  Type f32 = builder.getF32Type();
  FlatSymbolRefAttr routerWeight =
      layerParam(l, "router.weight", {e, h}, router + ".weight");
  FlatSymbolRefAttr routerBias =
      m.routerBias ? layerParam(l, "router.bias", {e}, router + ".bias")
                   : FlatSymbolRefAttr();
  // DeepSeek-V3 keeps the correction bias in fp32 in every checkpoint.
  FlatSymbolRefAttr correction =
      m.correctionBias ? layerParam(l, "router.correction_bias", {e},
                                    router + ".e_score_correction_bias", f32)
                       : FlatSymbolRefAttr();
  auto weightsType = RankedTensorType::get({ShapedType::kDynamic, m.topK}, f32);
  auto indicesType = RankedTensorType::get({ShapedType::kDynamic, m.topK},
                                           builder.getI32Type());
  auto route = RouterOp::create(
      builder, loc, weightsType, indicesType, input,
      builder.getI64IntegerAttr(l), builder.getI64IntegerAttr(e),
      builder.getI64IntegerAttr(m.topK),
      RouterScoringAttr::get(context, m.scoring),
      RouterSelectionAttr::get(context, m.selection),
      builder.getI64IntegerAttr(m.groups),
      builder.getI64IntegerAttr(m.keptGroups), builder.getBoolAttr(m.normalize),
      builder.getF64FloatAttr(m.scaling), routerWeight, routerBias, correction);

  std::string experts = block + ".experts";
  FlatSymbolRefAttr gate, up, gateUp, down, gateUpBias, downBias;
  if (m.layout == ExpertLayout::separate) {
    auto stacked = [&](StringRef name, StringRef hubName,
                       ArrayRef<int64_t> shape) {
      return layerParam(l, ("experts." + name).str(), shape,
                        (experts + ".{e}." + hubName + ".weight").str());
    };
    gate = stacked("gate", names.expertGate, {e, w, h});
    up = stacked("up", names.expertUp, {e, w, h});
    down = stacked("down", names.expertDown, {e, h, w});
  } else {
    gateUp = layerParam(l, "experts.gate_up", {e, h, 2 * w},
                        experts + ".gate_up_proj");
    gateUpBias = layerParam(l, "experts.gate_up_bias", {e, 2 * w},
                            experts + ".gate_up_proj_bias");
    down = layerParam(l, "experts.down", {e, w, h}, experts + ".down_proj");
    downBias =
        layerParam(l, "experts.down_bias", {e, h}, experts + ".down_proj_bias");
  }
  bool clamped = m.activation == ExpertActivation::swiglu_clamped;
  Value routed = ExpertsOp::create(
      builder, loc, input.getType(), input, route.getWeights(),
      route.getIndices(), builder.getI64IntegerAttr(l),
      builder.getI64IntegerAttr(e), builder.getI64IntegerAttr(w),
      ExpertActivationAttr::get(context, m.activation),
      ExpertLayoutAttr::get(context, m.layout),
      clamped ? builder.getF64FloatAttr(m.swigluLimit) : FloatAttr(),
      clamped ? builder.getF64FloatAttr(m.swigluAlpha) : FloatAttr(), gate, up,
      gateUp, down, gateUpBias, downBias);
  if (m.sharedWidth == 0)
    return routed;
  Value shared =
      mlp(input, l, m.sharedWidth, "shared", block + "." + names.shared,
          /*sharedExperts=*/true, m.sharedGated);
  return residual(routed, shared);
}

void ModelEmitter::emit() {
  builder.setInsertionPointToEnd(module.getBody());
  auto idsType =
      RankedTensorType::get({ShapedType::kDynamic}, builder.getI32Type());
  auto logitsType = activations(spec.vocab);
  function = func::FuncOp::create(builder, loc, "forward",
                                  builder.getFunctionType(idsType, logitsType));
  Block *body = function.addEntryBlock();

  FlatSymbolRefAttr embed =
      param("embed", {spec.vocab, spec.hidden}, "model.embed_tokens.weight");
  builder.setInsertionPointToEnd(body);
  Value x = EmbeddingOp::create(builder, loc, activations(spec.hidden),
                                body->getArgument(0), embed);
  for (int64_t l = 0; l < spec.layers; ++l) {
    const LayerSpec &layer = spec.layerSpecs[l];
    Value h = rmsNorm(
        x, layerParam(l, "input_norm", {spec.hidden}, "input_layernorm.weight"),
        l);
    Value a;
    switch (layer.attention) {
    case AttentionKind::Softmax:
      a = softmaxAttention(h, l);
      break;
    case AttentionKind::Latent:
      a = latentAttention(h, l);
      break;
    case AttentionKind::Lightning:
      a = lightningAttention(h, l);
      break;
    }
    x = spec.postNorm ? residual(h, a, spec.attnAlpha[l], spec.attnBeta[l])
                      : residual(x, a);
    Value h2 = rmsNorm(x,
                       layerParam(l, "post_norm", {spec.hidden},
                                  "post_attention_layernorm.weight"),
                       l);
    Value m = layer.moe ? moeBlock(h2, l)
                        : mlp(h2, l, spec.denseWidth, "mlp", "mlp",
                              /*sharedExperts=*/false, /*gated=*/false);
    x = spec.postNorm ? residual(h2, m, spec.mlpAlpha, spec.mlpBeta)
                      : residual(x, m);
  }
  Value normed = rmsNorm(
      x, param("final_norm", {spec.hidden}, "model.norm.weight"), std::nullopt);
  FlatSymbolRefAttr head =
      spec.tieEmbeddings
          ? embed
          : param("lm_head", {spec.vocab, spec.hidden}, "lm_head.weight");
  Value logits = LMHeadOp::create(builder, loc, logitsType, normed, head);
  func::ReturnOp::create(builder, loc, logits);

  module->setAttr(MoEDialect::kModelAttrName,
                  ModelAttr::get(context, spec.modelType, spec.architecture,
                                 spec.vocab, spec.hidden, spec.layers,
                                 spec.maxPosition, spec.bos,
                                 spec.expertWeightDtype, spec.eos));
}

} // namespace

void emitModel(const ModelSpec &spec, ModuleOp module) {
  ModelEmitter(spec, module).emit();
}

} // namespace mlir::moe::hf
