//===- moe-opt.cpp - the moe compiler driver ------------------------------===//
//
// mlir-opt for this project: reads .mlir, or imports a HuggingFace model
// directory / config.json, then runs passes and prints the IR.
//
//===----------------------------------------------------------------------===//

#include "dialects/MoE/MoEDialect.h"
#include "dialects/Sched/SchedDialect.h"
#include "moe/Conversion/Passes.h"
#include "moe/Import/HFConfig.h"
#include "moe/Pipelines.h"
#include "moe/Target/Passes.h"
#include "moe/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <string>
#include <vector>

using namespace mlir;

/// Imports a model definition and hands it to MlirOptMain as IR text, so
/// every mlir-opt option works the same on a config as on a .mlir file.
static std::unique_ptr<llvm::MemoryBuffer>
importToBuffer(const DialectRegistry &registry, llvm::StringRef path) {
  MLIRContext context(registry);
  // "models/x/config.json: error: field ..." - the position inside the
  // file says nothing, the field name does.
  ScopedDiagnosticHandler handler(&context, [](Diagnostic &diag) {
    if (auto fileLoc = dyn_cast<FileLineColLoc>(diag.getLocation()))
      llvm::errs() << fileLoc.getFilename().getValue() << ": ";
    llvm::errs() << "error: " << diag.str() << "\n";
    return success();
  });
  OwningOpRef<ModuleOp> module = moe::importHFConfig(&context, path);
  if (!module)
    return nullptr;
  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  return llvm::MemoryBuffer::getMemBufferCopy(text, path);
}

int main(int argc, char **argv) {
  llvm::InitLLVM initLLVM(argc, argv);
  DialectRegistry registry;
  registry.insert<moe::MoEDialect, sched::SchedDialect, func::FuncDialect>();
  moe::registerMoEPasses();
  moe::registerMoETargetPasses();
  moe::registerMoEConversionPasses();
  moe::registerPlanPipeline();
  moe::registerCompileTailPass();
  registerCanonicalizerPass();
  registerCSEPass();
  registerSymbolDCEPass();

  // The LLVM libraries linked in register hundreds of code generation flags
  // (AMDGPU, Hexagon, ...) before main; --help shows this tool's options and
  // passes without them (--help-hidden still lists them).
  for (auto &[name, option] : llvm::cl::getRegisteredOptions())
    if (!name.starts_with("help") && name != "version")
      option->setHiddenFlag(llvm::cl::Hidden);
  // An error names its op without printing it: the op is usually the
  // module, the whole model's IR (hundreds of KB for DeepSeek-V3). Asked
  // for, it is printed as usual.
  std::vector<char *> args(argv, argv + argc);
  std::string quiet = "--mlir-print-op-on-diagnostic=false";
  if (std::none_of(args.begin(), args.end(), [](const char *arg) {
        return llvm::StringRef(arg).contains("mlir-print-op-on-diagnostic");
      }))
    args.insert(args.begin() + 1, quiet.data());
  auto [inputFilename, outputFilename] = registerAndParseCLIOptions(
      int(args.size()), args.data(),
      "moe-opt: import MoE models (HF model dir or config.json), run passes, "
      "print IR\n\n"
      "  Plan a model for a machine and a job (the options of --moe-plan are\n"
      "  under 'Pass Pipelines' below):\n"
      "    moe-opt MODEL_DIR --moe-plan=\"profile=PROFILE.json gpu-mem=GiB\n"
      "      host-mem=GiB prompt-len=N gen-len=N max-batch=B "
      "output=PLAN.moeplan\"\n"
      "      [--moe-explain-plan] -o /dev/null\n"
      "  See the model: moe-opt MODEL_DIR --moe-print-summary -o /dev/null\n"
      "  Export it unplanned (all resident): moe-opt MODEL_DIR\n"
      "      --moe-export-plan=output=PLAN.moeplan -o /dev/null\n"
      "  The project's passes are the moe-* ones under 'Passes' below.\n",
      registry);
  MlirOptMainConfig config = MlirOptMainConfig::createFromCLOptions();

  std::string errorMessage;
  std::unique_ptr<llvm::MemoryBuffer> input =
      moe::isHFConfigPath(inputFilename)
          ? importToBuffer(registry, inputFilename)
          : openInputFile(inputFilename, &errorMessage);
  if (!input) {
    if (!errorMessage.empty())
      llvm::errs() << "moe-opt: " << errorMessage << "\n";
    return 1;
  }
  std::unique_ptr<llvm::ToolOutputFile> output =
      openOutputFile(outputFilename, &errorMessage);
  if (!output) {
    llvm::errs() << "moe-opt: " << errorMessage << "\n";
    return 1;
  }
  if (failed(MlirOptMain(output->os(), std::move(input), registry, config)))
    return 1;
  output->keep();
  return 0;
}
