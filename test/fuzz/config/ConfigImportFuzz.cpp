// config.json text, as a user's or a hub's broken config would hold it,
// through moe-opt's import: the importer must refuse it with exactly one
// error naming the field (or saying the JSON is bad), never crash, and never
// hand the dialect's verifier a model it rejects. An imported model must
// print and parse back, as moe-opt's import feeds MlirOptMain.
#include "moe/Import/HFConfig.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/raw_ostream.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

using namespace mlir;

// What the importer may say when it refuses a config: a field, the JSON, or
// the tensor whose sizes take the model past the weights it counts.
static bool isImporterError(llvm::StringRef message) {
  return message.starts_with("field '") ||
         message.starts_with("not valid JSON") ||
         message.starts_with("expected a JSON object") ||
         message.starts_with("the config's sizes are beyond any model's");
}

[[noreturn]] static void fail(const llvm::Twine &why,
                              const std::vector<std::string> &errors) {
  llvm::errs() << "config import fuzz: " << why << "\n";
  for (const std::string &error : errors)
    llvm::errs() << "  error: " << error << "\n";
  std::abort();
}

// LLVM's BumpPtrAllocator poisons its slabs in an ASan build and unpoisons
// each allocation. Its out-of-line half is instrumented here, its inline
// half inside the prebuilt MLIR libraries is not: the unpoisoning never
// happens and every MLIR allocation would read as use-after-poison. Manual
// poisoning is off; ASan's own checks stay on.
extern "C" const char *__asan_default_options() {
  return "allow_user_poisoning=0";
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // A fresh context per input: interned attributes and types (the params'
  // names and shapes) would otherwise grow with every input.
  MLIRContext context(MLIRContext::Threading::DISABLED);
  std::vector<std::string> errors;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
    if (diag.getSeverity() == DiagnosticSeverity::Error)
      errors.push_back(diag.str());
    return success();
  });
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  OwningOpRef<ModuleOp> module =
      moe::importHFConfigText(&context, text, "config.json");
  if (!module) {
    if (errors.size() != 1 || !isImporterError(errors.front()))
      fail("a refused config must give one error naming the field", errors);
    return 0;
  }
  if (!errors.empty())
    fail("an imported config reported errors", errors);

  std::string printed;
  llvm::raw_string_ostream os(printed);
  module->print(os);
  if (!parseSourceString<ModuleOp>(printed, ParserConfig(&context)))
    fail("the imported model does not parse back", errors);
  return 0;
}
