//===- ExplainPlan.cpp - the moe-explain-plan pass ------------------------===//
//
// Everything printed here was recorded by moe-select-batch-sizes; this pass
// only formats it, so the text and the JSON cannot disagree.
//
//===----------------------------------------------------------------------===//

#include "moe/Analysis/CostModelBridge.h"
#include "moe/Transforms/Passes.h"

#include "dialects/MoE/MoEOps.h"
#include "runtime/costmodel/Phases.h"
#include "runtime/model/KvFormat.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::moe {
#define GEN_PASS_DEF_EXPLAINPLAN
#include "moe/Transforms/Passes.h.inc"
} // namespace mlir::moe

using namespace mlir;
using namespace mlir::moe;
namespace json = llvm::json;

namespace {

json::Value toJSON(Attribute attr) {
  if (auto number = dyn_cast<FloatAttr>(attr))
    return number.getValueAsDouble();
  if (auto integer = dyn_cast<IntegerAttr>(attr))
    return integer.getInt();
  if (auto text = dyn_cast<StringAttr>(attr))
    return text.getValue().str();
  if (auto array = dyn_cast<ArrayAttr>(attr)) {
    json::Array values;
    for (Attribute element : array)
      values.push_back(toJSON(element));
    return values;
  }
  if (auto dictionary = dyn_cast<DictionaryAttr>(attr)) {
    json::Object object;
    for (NamedAttribute entry : dictionary)
      object[entry.getName().getValue()] = toJSON(entry.getValue());
    return object;
  }
  if (auto integers = dyn_cast<DenseI64ArrayAttr>(attr))
    return json::Array(integers.asArrayRef());
  if (auto numbers = dyn_cast<DenseF64ArrayAttr>(attr))
    return json::Array(numbers.asArrayRef());
  return nullptr;
}

/// A length distribution in a few words: "512", "1..8192 (spread
/// evenly)", or a job's own lengths by their range and mean.
std::string describeLengths(const ::moe::costmodel::LengthDistribution &d) {
  if (d.shortest() == d.longest())
    return std::to_string(d.longest());
  std::string range = llvm::formatv("{0}..{1}", d.shortest(), d.longest());
  if (d.bins().size() == 1)
    return range + " (spread evenly)";
  return llvm::formatv("{0} (mean {1:F0}, {2} bins)", range, d.mean(),
                       d.bins().size());
}

/// Bins as [shortest, longest, weight] lists.
json::Array binsToJSON(const ::moe::costmodel::LengthDistribution &d) {
  json::Array bins;
  for (const auto &bin : d.bins())
    bins.push_back(json::Array{bin.shortest, bin.longest, bin.weight});
  return bins;
}

json::Object batchingToJSON(BatchingAttr b) {
  ::moe::costmodel::GenerationLengths lengths = lengthsOf(b);
  return json::Object{
      {"resident_batch", b.getResidentBatch()},
      {"attention_micro_batch_prefill", b.getAttentionMicroBatchPrefill()},
      {"attention_micro_batch_decode", b.getAttentionMicroBatchDecode()},
      {"expert_micro_batch", b.getExpertMicroBatch()},
      {"prefetch_depth", b.getPrefetchDepth()},
      {"kv_staging_buffers", b.getKvStagingBuffers()},
      {"cpu_attention_share", b.getCpuAttentionShare().convertToDouble()},
      {"kv_gpu_fraction", b.getKvGpuFraction().convertToDouble()},
      {"resident_units", b.getResidentUnits()},
      {"prompt_tokens", b.getPromptTokens()},
      {"generated_tokens", b.getGeneratedTokens()},
      {"min_generated_tokens", b.getMinGeneratedTokens()},
      {"prompt_lengths", binsToJSON(lengths.prompts)},
      {"generated_lengths", binsToJSON(lengths.generated)},
      {"mean_prompt_tokens", lengths.prompts.mean()},
      {"mean_generated_tokens", lengths.generated.mean()},
      {"host_kv_pool_tokens", b.getHostKvPoolTokens()},
      {"gpu_budget_bytes", b.getGpuBudgetBytes()},
      {"host_budget_bytes", b.getHostBudgetBytes()},
      {"kv_dtype", b.getKvDtype()},
      {"weight_dtype", b.getWeightDtype()}};
}

double number(DictionaryAttr dictionary, StringRef key) {
  Attribute value = dictionary.get(key);
  if (auto f = dyn_cast_or_null<FloatAttr>(value))
    return f.getValueAsDouble();
  if (auto i = dyn_cast_or_null<IntegerAttr>(value))
    return static_cast<double>(i.getInt());
  return 0.0;
}

int64_t integer(DictionaryAttr dictionary, StringRef key) {
  return static_cast<int64_t>(number(dictionary, key));
}

std::string gib(double bytes) {
  return llvm::formatv("{0:F1} GiB", bytes / (1024.0 * 1024.0 * 1024.0)).str();
}
std::string gb(double bytes) {
  return llvm::formatv("{0:F2} GB", bytes / 1e9).str();
}

// One labelled line of the explanation.
void row(raw_ostream &os, StringRef label, const Twine &value) {
  os << llvm::format("  %-34s", label.str().c_str()) << value << "\n";
}

// Where a decision keeps its sequences' KV and attends them: the job's plan
// and the tail's say it alike.
void kvOnGpuRow(raw_ostream &os, BatchingAttr b) {
  row(os, "KV on the GPU",
      llvm::formatv("{0:P0} of the sequences",
                    b.getKvGpuFraction().convertToDouble()));
}
void hostAttentionRow(raw_ostream &os, BatchingAttr b) {
  double hostShare = b.getCpuAttentionShare().convertToDouble();
  row(os, "host attention (ω)",
      llvm::formatv("{0:P0} of the sequences ({1} decoded on the host's cores)",
                    hostShare,
                    std::llround(hostShare * double(b.getResidentBatch()))));
}

void printText(raw_ostream &os, ModelAttr model, BatchingAttr b,
               DictionaryAttr report) {
  ::moe::costmodel::GenerationLengths lengths = lengthsOf(b);
  os << "plan for " << model.getModelType() << ": prompt "
     << describeLengths(lengths.prompts) << " + "
     << describeLengths(lengths.generated) << " generated tokens, budgets GPU "
     << gib(b.getGpuBudgetBytes()) << ", host " << gib(b.getHostBudgetBytes())
     << "\n";
  os << "decision\n";
  row(os, "resident batch B", Twine(b.getResidentBatch()) + " sequences");
  row(os, "attention micro-batch, prefill",
      Twine(b.getAttentionMicroBatchPrefill()) + " sequences");
  row(os, "attention micro-batch, decode",
      Twine(b.getAttentionMicroBatchDecode()) + " sequences");
  row(os, "expert micro-batch b_e", Twine(b.getExpertMicroBatch()) + " tokens");
  row(os, "prefetch depth", Twine(b.getPrefetchDepth()) + " layers");
  row(os, "KV staging buffers", Twine(b.getKvStagingBuffers()));
  kvOnGpuRow(os, b);
  if (int64_t pool = b.getHostKvPoolTokens())
    row(os, "host KV pool",
        llvm::formatv("{0} tokens in pages of {1}", pool,
                      ::moe::model::hostKvPageTokens(lengths.maxContext())));
  hostAttentionRow(os, b);
  row(os, "decode context, steady state",
      llvm::formatv("{0} tokens on average ({1:F2} sequences finish a step; "
                    "contexts reach {2})",
                    lengths.meanDecodeContext(),
                    lengths.finishedPerStep(b.getResidentBatch()),
                    lengths.maxContext()));
  row(os, "resident weight units",
      Twine(b.getResidentUnits()) +
          " (modules or single experts, greedy order)");
  if (!report)
    return;
  double step = number(report, "decode_step_seconds");
  os << "predicted";
  if (auto priced = report.getAs<DictionaryAttr>("profile"))
    os << " on " << priced.getAs<StringAttr>("device").getValue() << " ("
       << priced.getAs<StringAttr>("file").getValue() << ")";
  os << "\n";
  row(os, "decode",
      llvm::formatv("{0:F1} tok/s (step {1:F4} s)",
                    number(report, "decode_tokens_per_second"), step));
  row(os, "prefill",
      llvm::formatv("{0:F1} tok/s ({1:F3} s for B prompts)",
                    number(report, "prefill_tokens_per_second"),
                    number(report, "prefill_seconds")));
  if (auto refill = report.getAs<DictionaryAttr>("refill")) {
    int64_t slots = integer(refill, "slots");
    int64_t prompts = integer(refill, "prompts");
    auto pass = llvm::formatv("a pass of {0} {1} ({2:F3} s)", prompts,
                              prompts == 1 ? "prompt" : "prompts",
                              number(refill, "pass_seconds"));
    double steps = number(refill, "steps_between");
    if (number(refill, "idle_slots") == 0 && prompts == b.getResidentBatch())
      row(os, "refill",
          llvm::formatv("all slots at once after {0:F0} decode steps "
                        "(generations of one length end together): {1}",
                        steps, pass.str()));
    else if (number(refill, "weight_seconds") <= 0)
      row(os, "refill",
          llvm::formatv("as soon as a slot is free, every {0:F1} steps: {1} "
                        "(the plan streams no weights)",
                        steps, pass.str()));
    else
      row(os, "refill",
          llvm::formatv("when {0} {1} free, every {2:F1} steps: {3}, "
                        "{4:F3} s of it streaming weights; {5:F1} slots "
                        "idle meanwhile",
                        slots, slots == 1 ? "slot is" : "slots are", steps,
                        pass.str(), number(refill, "weight_seconds"),
                        number(refill, "idle_slots")));
    double job = number(report, "job_tokens_per_second");
    row(os, "job, steady state",
        llvm::formatv("{0:F1} new tok/s with its refill passes ({1:P1} of "
                      "the decode rate)",
                      job, job / number(report, "decode_tokens_per_second")));
  }
  auto roofline = report.getAs<DictionaryAttr>("roofline");
  row(os, "roofline bound",
      llvm::formatv(
          "{0}, {1:F4} s = {2:P0} of the predicted step (pcie "
          "{3:F4} s, compute {4:F4} s, hbm {5:F4} s, host kv {6:F4} s)",
          cast<StringAttr>(roofline.get("bound")).getValue(),
          number(roofline, "seconds"), number(roofline, "fraction_of_step"),
          number(roofline, "pcie_seconds"), number(roofline, "compute_seconds"),
          number(roofline, "hbm_seconds"),
          number(roofline, "host_kv_seconds")));
  auto stages = [&](StringRef title, StringRef key) {
    os << title << ", time per stage\n";
    for (NamedAttribute stage : report.getAs<DictionaryAttr>(key))
      row(os, stage.getName().getValue(),
          llvm::formatv("{0:F4} s",
                        cast<FloatAttr>(stage.getValue()).getValueAsDouble()));
  };
  stages("decode step", "decode_stage_seconds");
  os << "decode step, busy time per stream\n";
  for (NamedAttribute stream :
       report.getAs<DictionaryAttr>("decode_stream_busy_seconds"))
    row(os, stream.getName().getValue(),
        llvm::formatv("{0:F4} s",
                      cast<FloatAttr>(stream.getValue()).getValueAsDouble()));
  auto bytes = report.getAs<DictionaryAttr>("decode_bytes_per_step");
  os << "decode step, bytes per link\n";
  row(os, "host->GPU weights", gb(number(bytes, "h2d_weights")));
  row(os, "host->GPU KV", gb(number(bytes, "h2d_kv")));
  row(os, "host->GPU hidden states", gb(number(bytes, "h2d_hidden")));
  row(os, "GPU->host", gb(number(bytes, "d2h")));
  row(os, "KV read from HBM", gb(number(bytes, "hbm_kv_read")));
  row(os, "KV read by the host's cores", gb(number(bytes, "host_kv_read")));
  row(os, "FLOPs",
      llvm::formatv("{0:F2} TFLOP", number(bytes, "flops") / 1e12));
  stages("prefill of B prompts", "prefill_stage_seconds");
  auto pool = [&](StringRef name, DictionaryAttr memory) {
    os << name << " memory: " << gib(number(memory, "total")) << " of "
       << gib(number(memory, "budget")) << "\n";
    for (NamedAttribute part : memory)
      if (part.getName() != "total" && part.getName() != "budget")
        row(os, part.getName().getValue(),
            gib(number(memory, part.getName().getValue())));
  };
  pool("GPU", report.getAs<DictionaryAttr>("gpu_memory"));
  pool("host", report.getAs<DictionaryAttr>("host_memory"));
  os << "runner-ups (of "
     << static_cast<int64_t>(number(report, "candidates_evaluated"))
     << " candidates)\n";
  for (auto [index, entry] :
       llvm::enumerate(report.getAs<ArrayAttr>("runner_ups"))) {
    auto runnerUp = cast<DictionaryAttr>(entry);
    auto plan = runnerUp.getAs<DictionaryAttr>("plan");
    os << llvm::formatv(
        "  {0}. B={1} b_a={2} b_e={3} prefetch={4} "
        "kv_gpu={5:P0} host_attention={6:P0} resident={7}: {8}\n",
        index + 1, integer(plan, "resident_batch"),
        integer(plan, "attention_micro_batch_decode"),
        integer(plan, "expert_micro_batch"), integer(plan, "prefetch_depth"),
        number(plan, "kv_gpu_fraction"), number(plan, "cpu_attention_share"),
        integer(plan, "resident_units"),
        cast<StringAttr>(runnerUp.get("why_lost")).getValue());
  }
}

// The tail's plan beside the job's: when it takes over and what it saves.
void printTail(raw_ostream &os, BatchingAttr main, DictionaryAttr mainReport,
               DictionaryAttr tail) {
  auto b = tail.getAs<BatchingAttr>("batching");
  auto report = tail.getAs<DictionaryAttr>("report");
  auto mainSteps =
      mainReport ? mainReport.getAs<DictionaryAttr>("drain_steps") : nullptr;
  auto tailSteps = tail.getAs<DictionaryAttr>("tail_steps");
  if (!b || !report || !mainSteps || !tailSteps)
    return;
  os << "the job's tail (after the last admission), its own plan\n";
  row(os, "tail plan B",
      llvm::formatv(
          "{0} sequences: it can take over from {0} live sequences on",
          b.getResidentBatch()));
  row(os, "resident weight units",
      llvm::formatv("{0} (this plan {1})", b.getResidentUnits(),
                    main.getResidentUnits()));
  kvOnGpuRow(os, b);
  if (int64_t pool = b.getHostKvPoolTokens())
    row(os, "host KV pool",
        llvm::formatv("{0} tokens: every host slot's whole context", pool));
  hostAttentionRow(os, b);
  os << llvm::formatv("  decode step by live sequences, at context {0}\n",
                      integer(tail, "context_tokens"));
  ::moe::costmodel::LiveStepCurve mainCurve{
      mainSteps.getAs<DenseI64ArrayAttr>("live").asArrayRef().vec(),
      mainSteps.getAs<DenseF64ArrayAttr>("seconds").asArrayRef().vec()};
  ArrayRef<int64_t> tailLive =
      tailSteps.getAs<DenseI64ArrayAttr>("live").asArrayRef();
  ArrayRef<double> tailSeconds =
      tailSteps.getAs<DenseF64ArrayAttr>("seconds").asArrayRef();
  os << "    live   this plan   tail plan\n";
  for (size_t i = 0; i < tailLive.size(); ++i)
    os << llvm::formatv("  {0,6}  {1,8:F4} s  {2,8:F4} s\n", tailLive[i],
                        mainCurve.at(double(tailLive[i])), tailSeconds[i]);
  // A tiny model's tail takes milliseconds: three significant digits.
  auto seconds = [&](StringRef key) {
    double value = number(tail, key);
    return llvm::formatv("{0} s",
                         llvm::format(value >= 100 ? "%.0f" : "%.3g", value))
        .str();
  };
  row(os, "tail",
      llvm::formatv("{0} steps, {1} on this plan; the tail plan "
                    "saves {2} net of {3} recomputing the live caches",
                    integer(tail, "tail_step_count"),
                    seconds("main_tail_seconds"), seconds("saved_seconds"),
                    seconds("recompute_seconds")));
}

struct ExplainPlanPass
    : public mlir::moe::impl::ExplainPlanBase<ExplainPlanPass> {
  using ExplainPlanBase::ExplainPlanBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto model = module->getAttrOfType<ModelAttr>(MoEDialect::kModelAttrName);
    auto batching =
        module->getAttrOfType<BatchingAttr>(MoEDialect::kBatchingAttrName);
    auto report =
        module->getAttrOfType<DictionaryAttr>(MoEDialect::kPlanReportAttrName);
    auto tail =
        module->getAttrOfType<DictionaryAttr>(MoEDialect::kTailAttrName);
    if (!model || !batching) {
      module.emitError() << "nothing to explain: run moe-select-batch-sizes "
                            "on an imported model first";
      return signalPassFailure();
    }
    if (json) {
      json::Object object{{"model_type", model.getModelType().str()},
                          {"decision", batchingToJSON(batching)}};
      if (report)
        object["report"] = toJSON(report);
      if (tail) {
        json::Object entry;
        for (NamedAttribute field : tail)
          if (field.getName() == "batching")
            entry["decision"] =
                batchingToJSON(cast<BatchingAttr>(field.getValue()));
          else if (field.getName() != "plan") // the compiled plan's bytes
            entry[field.getName().getValue()] = toJSON(field.getValue());
        object["tail"] = std::move(entry);
      }
      llvm::outs() << llvm::formatv("{0:2}", json::Value(std::move(object)))
                   << "\n";
    } else {
      printText(llvm::outs(), model, batching, report);
      if (tail)
        printTail(llvm::outs(), batching, report, tail);
    }
    markAllAnalysesPreserved();
  }
};

} // namespace
