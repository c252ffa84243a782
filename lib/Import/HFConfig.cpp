//===- HFConfig.cpp - HuggingFace config.json → moe dialect ---------------===//
//
// Two steps: each family's reader turns config.json into a ModelSpec
// (FamilyReaders.cpp), then one emitter builds the IR from the spec
// (ModelEmitter.cpp). Adding a family means writing a reader; the emitter is
// shared.
//
//===----------------------------------------------------------------------===//

#include "moe/Import/HFConfig.h"

#include "ConfigReader.h"
#include "FamilyReaders.h"
#include "ModelEmitter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::hf;

/// The verifier, the summary, the cost model and the planner count weights
/// and bytes in 64 bits; sizes that multiply past any model's would wrap
/// them (2^48 weights is 400 times DeepSeek-V3). Reports the tensor that
/// crosses the bound, with its shape, since its name says which sizes made it.
static LogicalResult checkWeightCount(ModuleOp module, Location loc) {
  constexpr int64_t kMaxWeights = int64_t(1) << 48;
  int64_t total = 0;
  for (ParamOp param : module.getOps<ParamOp>()) {
    int64_t count = 1;
    bool overflow = false;
    for (int64_t dim : param.getTensorType().getShape())
      overflow |= llvm::MulOverflow(count, dim, count);
    overflow |= llvm::AddOverflow(total, count, total);
    if (overflow || total > kMaxWeights) {
      InFlightDiagnostic diag = emitError(loc);
      diag << "the config's sizes are beyond any model's: "
           << param.getHfName().value_or(param.getSymName()) << " (";
      llvm::interleave(param.getTensorType().getShape(), diag, " x ");
      diag << ") takes the model past 2^48 weights";
      return failure();
    }
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

ArrayRef<StringLiteral> mlir::moe::supportedModelTypes() {
  static constexpr StringLiteral types[] = {
      "mixtral", "deepseek_v2",     "deepseek_v3", "qwen2_moe", "qwen3_moe",
      "minimax", "minimax_text_01", "minimax_m1",  "gpt_oss",   "yi_lightning"};
  return types;
}

bool mlir::moe::isHFConfigPath(StringRef path) {
  return llvm::sys::fs::is_directory(path) || path.ends_with(".json");
}

OwningOpRef<ModuleOp> mlir::moe::importHFConfigText(MLIRContext *context,
                                                    StringRef text,
                                                    StringRef fileName) {
  context->loadDialect<MoEDialect, func::FuncDialect>();
  Location loc = FileLineColLoc::get(context, fileName, 1, 1);
  llvm::Expected<json::Value> parsed = json::parse(text);
  if (!parsed) {
    emitError(loc) << "not valid JSON: " << llvm::toString(parsed.takeError());
    return nullptr;
  }
  const json::Object *object = parsed->getAsObject();
  if (!object) {
    emitError(loc) << "expected a JSON object at the top level";
    return nullptr;
  }
  ConfigReader config(*object, loc);
  ModelSpec spec;
  spec.modelType = config.string("model_type");
  if (!config.ok())
    return nullptr;
  if (spec.modelType.empty()) {
    config.fail("model_type", "is missing");
    return nullptr;
  }
  if (!llvm::is_contained(supportedModelTypes(), spec.modelType)) {
    config.fail("model_type",
                "'" + spec.modelType + "' is not supported (supported: " +
                    llvm::join(supportedModelTypes(), ", ") + ")");
    return nullptr;
  }
  json::Object withDefaults = withClassDefaults(*object, spec.modelType);
  ConfigReader full(withDefaults, loc);
  readModelSpec(full, spec, context);
  if (!full.ok())
    return nullptr;

  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  emitModel(spec, *module);
  if (failed(checkWeightCount(*module, loc)))
    return nullptr;
  if (failed(mlir::verify(*module))) {
    emitError(loc) << "the imported model does not verify";
    return nullptr;
  }
  return module;
}

OwningOpRef<ModuleOp> mlir::moe::importHFConfig(MLIRContext *context,
                                                StringRef path) {
  llvm::SmallString<256> file(path);
  if (llvm::sys::fs::is_directory(path))
    llvm::sys::path::append(file, "config.json");
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(file);
  if (!buffer) {
    emitError(UnknownLoc::get(context))
        << "cannot read " << file << ": " << buffer.getError().message();
    return nullptr;
  }
  return importHFConfigText(context, (*buffer)->getBuffer(), file);
}
