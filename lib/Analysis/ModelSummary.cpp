//===- ModelSummary.cpp - totals of a model's module costs ----------------===//

#include "moe/Analysis/ModelSummary.h"

#include "dialects/MoE/MoEOps.h"
#include "moe/Analysis/CostModelBridge.h"

#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/Support/Format.h"

using namespace mlir;
using namespace mlir::moe;
namespace json = llvm::json;

FailureOr<ModelSummary>
mlir::moe::summarizeModel(ModuleOp module, const CacheDtypes &cacheDtypes) {
  auto model = module->getAttrOfType<ModelAttr>(MoEDialect::kModelAttrName);
  if (!model)
    return module.emitError() << "module has no '" << MoEDialect::kModelAttrName
                              << "' attribute; import a model first";
  ModelSummary summary;
  summary.modelType = model.getModelType().str();
  summary.kvDtype = cacheDtypes.kv;
  summary.architecture = model.getArchitecture().str();
  summary.numLayers = model.getNumLayers();
  summary.hiddenSize = model.getHiddenSize();
  summary.vocabSize = model.getVocabSize();

  for (ParamOp param : module.getOps<ParamOp>()) {
    summary.totalParams += param.getNumElements();
    summary.weightBytes += param.getNumBytes();
  }
  summary.activeParams = summary.totalParams;

  SymbolTableCollection symbols;
  llvm::DenseSet<Attribute> embeddingTables;
  summary.fp8ExpertsWeightBytes = 2 * summary.totalParams;
  summary.mxfp4ExpertsWeightBytes = 2 * summary.totalParams;
  summary.storedExpertDtype = model.getExpertWeightDtype().str();
  summary.storedWeightBytes = summary.weightBytes;
  namespace wf = ::moe::model;
  wf::WeightDtype stored = wf::parseWeightDtype(summary.storedExpertDtype)
                               .value_or(wf::WeightDtype::bf16);
  module.walk([&](ModuleCostInterface op) {
    ModuleCost cost = op.getModuleCost(symbols, cacheDtypes);
    if (isa<ExpertsOp>(op.getOperation())) {
      SmallVector<ParamOp> params = referencedParams(op, symbols);
      summary.fp8ExpertsWeightBytes +=
          expertsWeightBytes(params, wf::WeightDtype::fp8) - 2 * cost.params;
      summary.mxfp4ExpertsWeightBytes +=
          expertsWeightBytes(params, wf::WeightDtype::mxfp4) - 2 * cost.params;
      if (stored != wf::WeightDtype::bf16)
        summary.storedWeightBytes +=
            expertsWeightBytes(params, stored) - cost.weightBytes;
    }
    ModuleKind kind = op.getModuleKind();
    ModuleCost &total = summary.byKind[kind];
    total.params += cost.params;
    total.activeParams += cost.activeParams;
    total.weightBytes += cost.weightBytes;
    total.flopsPerToken += cost.flopsPerToken;
    total.flopsPerContextToken += cost.flopsPerContextToken;
    total.kvBytesPerToken += cost.kvBytesPerToken;
    total.stateBytesPerSequence += cost.stateBytesPerSequence;

    summary.activeParams -= cost.params - cost.activeParams;
    summary.flopsPerToken += cost.flopsPerToken;
    summary.flopsPerContextToken += cost.flopsPerContextToken;
    summary.kvBytesPerToken += cost.kvBytesPerToken;
    summary.stateBytesPerSequence += cost.stateBytesPerSequence;
    // A tied LM head shares the embedding table: count it once.
    Attribute table;
    if (auto embedding = dyn_cast<EmbeddingOp>(op.getOperation()))
      table = embedding.getTableAttr();
    else if (auto head = dyn_cast<LMHeadOp>(op.getOperation()))
      table = head.getWeightAttr();
    if (table && embeddingTables.insert(table).second)
      summary.embeddingParams += cost.params;
  });
  return summary;
}

/// 46.70 B, 232.48 K: parameter counts as papers quote them.
static std::string billions(int64_t count) {
  double value = static_cast<double>(count);
  const char *unit = value >= 1e9 ? "B" : value >= 1e6 ? "M" : "K";
  double scale = value >= 1e9 ? 1e9 : value >= 1e6 ? 1e6 : 1e3;
  std::string text;
  llvm::raw_string_ostream(text) << llvm::format("%.2f %s", value / scale, unit);
  return text;
}

static std::string bytes(int64_t count) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(count);
  int unit = 0;
  while (value >= 1024.0 && unit < 4) {
    value /= 1024.0;
    ++unit;
  }
  std::string text;
  llvm::raw_string_ostream(text) << llvm::format("%.1f %s", value, units[unit]);
  return text;
}

void mlir::moe::printModelSummary(raw_ostream &os,
                                  const ModelSummary &summary) {
  auto row = [&](StringRef label, const Twine &value) {
    os << llvm::format("  %-34s", label.str().c_str()) << value << "\n";
  };
  os << "model " << summary.modelType;
  if (!summary.architecture.empty())
    os << " (" << summary.architecture << ")";
  os << ": " << summary.numLayers << " layers, hidden " << summary.hiddenSize
     << ", vocab " << summary.vocabSize << "\n";
  row("total parameters", billions(summary.totalParams) + " (" +
                              Twine(summary.totalParams) + ")");
  row("active parameters per token", billions(summary.activeParams) + " (" +
                                         Twine(summary.activeParams) + ")");
  row("active without embedding/head",
      billions(summary.activeParams - summary.embeddingParams));
  row("weights in bf16", llvm::formatv("{0:F2} GB ({1})",
                                       2.0 * summary.totalParams / 1e9,
                                       bytes(2 * summary.totalParams)));
  row("weights as declared",
      llvm::formatv("{0:F2} GB ({1})", summary.weightBytes / 1e9,
                    bytes(summary.weightBytes)));
  row("weights with fp8 experts",
      llvm::formatv("{0:F2} GB ({1})", summary.fp8ExpertsWeightBytes / 1e9,
                    bytes(summary.fp8ExpertsWeightBytes)));
  row("weights with mxfp4 experts",
      llvm::formatv("{0:F2} GB ({1})", summary.mxfp4ExpertsWeightBytes / 1e9,
                    bytes(summary.mxfp4ExpertsWeightBytes)));
  row("weights as stored (" + summary.storedExpertDtype + " experts)",
      llvm::formatv("{0:F2} GB ({1})", summary.storedWeightBytes / 1e9,
                    bytes(summary.storedWeightBytes)));
  std::string kvLabel = "KV bytes per token (" +
                        std::string(::moe::model::kvDtypeName(summary.kvDtype)) +
                        ")";
  row(kvLabel, Twine(summary.kvBytesPerToken));
  row("fixed state per sequence", bytes(summary.stateBytesPerSequence) + " (" +
                                      Twine(summary.stateBytesPerSequence) +
                                      " B)");
  row("GFLOP per token (no attention)",
      llvm::formatv("{0:F2}", summary.flopsPerToken / 1e9));
  row("attention FLOP per context token",
      llvm::formatv("{0:F0}", summary.flopsPerContextToken));
  os << "  by module kind:                   params        active        "
        "weights\n";
  for (auto &[kind, cost] : summary.byKind)
    os << llvm::format("    %-18s", std::string(::moe::costmodel::moduleKindName(kind)).c_str())
       << llvm::format("%26s", billions(cost.params).c_str())
       << llvm::format("%14s", billions(cost.activeParams).c_str())
       << llvm::format("%15s", bytes(cost.weightBytes).c_str()) << "\n";
}

llvm::json::Value mlir::moe::modelSummaryToJSON(const ModelSummary &summary) {
  json::Object byKind;
  for (auto &[kind, cost] : summary.byKind)
    byKind[std::string(::moe::costmodel::moduleKindName(kind))] = json::Object{
        {"params", cost.params},
        {"active_params", cost.activeParams},
        {"weight_bytes", cost.weightBytes},
        {"flops_per_token", cost.flopsPerToken},
        {"flops_per_context_token", cost.flopsPerContextToken},
        {"kv_bytes_per_token", cost.kvBytesPerToken},
        {"state_bytes_per_sequence", cost.stateBytesPerSequence}};
  return json::Object{
      {"model_type", summary.modelType},
      {"architecture", summary.architecture},
      {"num_layers", summary.numLayers},
      {"hidden_size", summary.hiddenSize},
      {"vocab_size", summary.vocabSize},
      {"total_params", summary.totalParams},
      {"active_params", summary.activeParams},
      {"active_params_without_embeddings",
       summary.activeParams - summary.embeddingParams},
      {"bf16_weight_bytes", 2 * summary.totalParams},
      {"weight_bytes", summary.weightBytes},
      {"fp8_experts_weight_bytes", summary.fp8ExpertsWeightBytes},
      {"mxfp4_experts_weight_bytes", summary.mxfp4ExpertsWeightBytes},
      {"stored_expert_dtype", summary.storedExpertDtype},
      {"stored_weight_bytes", summary.storedWeightBytes},
      {"flops_per_token", summary.flopsPerToken},
      {"flops_per_context_token", summary.flopsPerContextToken},
      {"kv_bytes_per_token", summary.kvBytesPerToken},
      {"kv_dtype", std::string(::moe::model::kvDtypeName(summary.kvDtype))},
      {"state_bytes_per_sequence", summary.stateBytesPerSequence},
      {"by_module_kind", std::move(byKind)}};
}
