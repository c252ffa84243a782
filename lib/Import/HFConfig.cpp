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
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

using namespace mlir;
using namespace mlir::moe;
using namespace mlir::moe::hf;

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
  readModelSpec(config, spec, context);
  if (!config.ok())
    return nullptr;

  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  emitModel(spec, *module);
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
