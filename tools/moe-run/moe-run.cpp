//===- moe-run.cpp - execute a plan over a file of prompts ----------------===//
//
// Thin: parse the command line, load and verify the plan, bind weights,
// hand prompts to the engine, write answers and stats. A request that
// cannot run is an error line in the answers, the job goes on, and the exit
// code is 2; every other failure is one line on stderr and exit code 1,
// with the answers finished so far kept for the same command to resume.
//
//===----------------------------------------------------------------------===//

#include "Checkpoint.h"
#include "DescribePrompts.h"
#include "JobLengths.h"
#include "Shards.h"

#include "runtime/backends/cpu/CpuBackend.h"
#ifdef MOE_HAVE_CUDA
#include "runtime/backends/cuda/HardwareProfiler.h"
#include "runtime/backends/cuda/backend/CudaBackend.h"

#include <cuda_runtime_api.h>
#endif
#include "runtime/engine/Engine.h"
#include "runtime/engine/TailSwitch.h"
#include "runtime/io/Jsonl.h"
#include "runtime/model/ResolvedModel.h"
#include "runtime/plan/LoadedPlan.h"
#include "runtime/tokenizer/Tokenizer.h"
#include "runtime/trace/PlanTimeline.h"
#include "runtime/weights/WeightSet.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <thread>
#include <unistd.h>

using namespace moe;

namespace {

/// New tokens a request asks for where neither its line, --max-new-tokens
/// nor the plan says.
constexpr int32_t kDefaultNewTokens = 128;

struct Options {
  std::string plan, checkpoint, prompts, output = "-", stats, trace;
  std::string profileHardware;  // measure the machine into this file instead
  bool describePrompts = false; // describe the job for the planner instead
  std::string observedAnswers;  // where the description's generation lengths
                                // come from instead of the requests' caps
  std::string backend = "auto";
  std::optional<uint64_t> syntheticSeed;
  int32_t threads = static_cast<int32_t>(std::thread::hardware_concurrency());
  std::optional<int32_t> batch, maxContext, maxNewTokens, refillSlots;
  std::optional<int64_t> kvPoolTokens; // KV of the sequences it pages
  SamplingParams sampling;
  bool progress = true;
  double progressInterval = 30; // seconds between lines in a log
  bool enforceEager = false;    // no CUDA graphs
  bool tailPlan = true;         // the plan's tail phase, where it saves time
  std::string phase;            // run the whole job on this phase's plan
  std::optional<std::string> shardFlag; // --shard S/N
  Shard shard;                          // of the flag or the launcher
};

/// Accepts a finite number that `allowed` accepts; otherwise the option's
/// error says `rule` ("--top-p: must be in (0, 1], not 2").
CLI::Validator numberIn(std::function<bool(double)> allowed, std::string rule) {
  return CLI::Validator(
      [allowed, rule](const std::string &text) -> std::string {
        char *end = nullptr;
        double value = std::strtod(text.c_str(), &end);
        bool number = end != text.c_str() && *end == '\0';
        if (number && std::isfinite(value) && allowed(value))
          return {};
        return "must be " + rule + ", not " + text;
      },
      rule);
}

/// Requests in a prompts file (non-blank lines); -1 for a pipe or device,
/// which is read only once, as the job goes.
int64_t countPromptLines(const std::string &path) {
  if (!std::filesystem::is_regular_file(path))
    return -1;
  std::ifstream file(path);
  std::string line;
  int64_t count = 0;
  while (std::getline(file, line))
    count += line.find_first_not_of(" \t\r") != std::string::npos;
  return count;
}

/// What decides a job's answers, so that a resumed job is the same job.
std::string jobDescription(const Options &options, const EngineOptions &engine,
                           int32_t maxNewTokens, const Shard &shard) {
  auto fileOf = [](const std::string &path) {
    std::error_code error;
    nlohmann::json file{
        {"path", std::filesystem::weakly_canonical(path, error).string()}};
    if (std::filesystem::is_regular_file(path))
      file["bytes"] = std::filesystem::file_size(path, error);
    return file;
  };
  nlohmann::json job{{"plan", fileOf(options.plan)},
                     {"prompts", fileOf(options.prompts)},
                     {"weights", options.syntheticSeed
                                     ? nlohmann::json{{"synthetic_seed",
                                                       *options.syntheticSeed}}
                                     : fileOf(options.checkpoint)},
                     {"backend", options.backend},
                     {"batch", engine.residentBatch},
                     {"max_context", engine.maxContext},
                     {"max_new_tokens", maxNewTokens},
                     {"eos_token_ids", engine.eosTokenIds},
                     {"temperature", options.sampling.temperature},
                     {"top_k", options.sampling.topK},
                     {"top_p", options.sampling.topP},
                     {"seed", options.sampling.seed}};
  // Index -1: the whole job in `count` shards.
  if (shard.sharded())
    job["shard"] = shard.index < 0 ? nlohmann::json{{"count", shard.count}}
                                   : nlohmann::json{{"index", shard.index},
                                                    {"count", shard.count}};
  return job.dump();
}

/// Set by SIGINT or SIGTERM: the job stops after the step in flight.
volatile std::sig_atomic_t stopSignal = 0;

void installStopHandlers() {
  struct sigaction action {};
  action.sa_handler = [](int signal) { stopSignal = signal; };
  // A second signal acts as if there were no handler.
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

/// A memory figure of this process from /proc/self/status ("VmRSS:" now,
/// "VmHWM:" the peak), in bytes; 0 where unavailable.
int64_t processMemoryBytes(std::string_view field) {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == field) {
      int64_t kib = 0;
      status >> kib;
      return kib * 1024;
    }
    status.ignore(1 << 16, '\n');
  }
  return 0;
}

std::string duration(double seconds) {
  auto whole = static_cast<int64_t>(seconds);
  if (whole >= 3600)
    return fmt::format("{}h{:02}m", whole / 3600, whole / 60 % 60);
  if (whole >= 60)
    return fmt::format("{}m{:02}s", whole / 60, whole % 60);
  return fmt::format("{:.1f}s", seconds);
}

/// Progress on stderr: on a terminal one line redrawn in place (at most four
/// times a second); in a log (stderr not a terminal: batch systems, files) a
/// line every `interval` seconds, so that the log shows the job moving.
class ProgressLine {
public:
  ProgressLine(bool enabled, bool terminal, double interval)
      : enabled_(enabled), terminal_(terminal), interval_(interval) {}

  /// `text()` is made only when a line is shown.
  template <typename Text> void show(Text &&text, bool last) {
    if (!enabled_)
      return;
    double elapsed = seconds();
    double every = terminal_ ? 0.25 : interval_;
    if (!last && lastShown_ >= 0 && elapsed - lastShown_ < every)
      return;
    lastShown_ = last ? -1 : elapsed;
    if (terminal_)
      std::fprintf(stderr, "\r%s   %s", text().c_str(), last ? "\n" : "");
    else
      std::fprintf(stderr, "moe-run: %s\n", text().c_str());
  }
  /// Ends a terminal's line that no `last` show ended.
  void end() {
    if (enabled_ && terminal_ && lastShown_ >= 0)
      std::fputc('\n', stderr);
    lastShown_ = -1;
  }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                         start_)
        .count();
  }

private:
  bool enabled_, terminal_;
  double interval_;
  std::chrono::steady_clock::time_point start_ =
      std::chrono::steady_clock::now();
  double lastShown_ = -1;
};

/// The job's progress: "[=====>    ] 12/40 requests  310 new tok/s  ETA
/// 1m05s  host 3.1 GB  GPU 70.2 GB" (without a total, from a pipe: no bar,
/// no ETA). New tokens per second as the stats count them: sampled tokens
/// over the time generating.
std::string jobProgress(int64_t done, int64_t total, int64_t newTokens,
                        double elapsed, const BackendCounters &held,
                        bool terminal) {
  double rate = elapsed > 0 ? double(newTokens) / elapsed : 0.0;
  std::string text;
  if (total < 0) {
    text = fmt::format("{} requests  {:.0f} new tok/s", done, rate);
  } else {
    double fraction = total > 0 ? double(done) / double(total) : 0.0;
    if (terminal) {
      int filled = static_cast<int>(fraction * 30);
      std::string bar(static_cast<size_t>(filled), '=');
      if (filled < 30)
        bar += '>' + std::string(static_cast<size_t>(29 - filled), ' ');
      text = "[" + bar + "] ";
    }
    std::string eta = done > 0 && done < total
                          ? duration(elapsed / fraction - elapsed)
                          : std::string("-");
    text += fmt::format("{}/{} requests  {:.0f} new tok/s  ETA {}", done, total,
                        rate, eta);
  }
  text += fmt::format("  host {:.1f} GB",
                      double(processMemoryBytes("VmRSS:")) / 1e9);
  if (held.deviceFixedBytes > 0)
    text += fmt::format(
        "  GPU {:.1f} GB",
        double(held.deviceFixedBytes + held.devicePeakStepBytes) / 1e9);
  return text;
}

/// A backend of kind `kind` ("cuda" or "cpu") prepared for `plan` with
/// `slots` slots; `options.kvPoolTokens` sizes its host KV pool where
/// `ownPool` is false.
Result<std::unique_ptr<Backend>>
prepareBackend(const std::string &kind, const Options &options,
               const LoadedPlan &plan, const WeightSet &weights, int32_t slots,
               int32_t maxContext, bool ownPool) {
  int64_t poolTokens = ownPool ? 0 : options.kvPoolTokens.value_or(0);
#ifdef MOE_HAVE_CUDA
  if (kind == "cuda") {
    auto gpu = std::make_unique<cuda::CudaBackend>(cuda::CudaBackendOptions{
        .graphs = !options.enforceEager, .hostKvPoolTokens = poolTokens});
    auto placing = std::make_shared<ProgressLine>(
        options.progress, isatty(STDERR_FILENO), options.progressInterval);
    gpu->setPrepareProgress([placing](double fraction) {
      placing->show(
          [&] {
            double elapsed = placing->seconds();
            std::string eta = fraction > 0
                                  ? duration(elapsed / fraction - elapsed)
                                  : std::string("-");
            return fmt::format("placing weights: {:3.0f}%  ETA {}",
                               100 * fraction, eta);
          },
          false);
    });
    Status prepared = gpu->prepare(plan, weights, slots, maxContext);
    placing->end();
    MOE_RETURN_IF_ERROR(prepared);
    return std::unique_ptr<Backend>(std::move(gpu));
  }
#endif
  auto cpu = std::make_unique<CpuBackend>(CpuBackendOptions{
      .threads = options.threads, .kvPoolTokens = poolTokens});
  MOE_RETURN_IF_ERROR(cpu->prepare(plan, weights, slots, maxContext));
  return std::unique_ptr<Backend>(std::move(cpu));
}

/// The backend to run on: `cuda` where a GPU is present and the CUDA backend
/// runs the plan (auto), else the CPU reference backend.
Result<std::unique_ptr<Backend>> chooseBackend(const Options &options,
                                               const LoadedPlan &plan,
                                               const WeightSet &weights,
                                               const EngineOptions &engine,
                                               std::string &name) {
#ifdef MOE_HAVE_CUDA
  if (options.backend != "cpu") {
    int devices = 0;
    cudaError_t error = cudaGetDeviceCount(&devices);
    if (error != cudaSuccess || devices == 0) {
      // Without a GPU the runtime reports a missing driver as an old one.
      std::string none = fmt::format(
          "no CUDA GPU on this machine (the CUDA runtime says: {})",
          error == cudaSuccess ? "no device" : cudaGetErrorString(error));
      if (options.backend == "cuda")
        return makeError("--backend cuda: {}", none);
      std::fprintf(stderr, "moe-run: %s: using the CPU backend\n",
                   none.c_str());
    } else {
      Result<std::unique_ptr<Backend>> gpu =
          prepareBackend("cuda", options, plan, weights, engine.residentBatch,
                         engine.maxContext, false);
      if (gpu.ok()) {
        name = "cuda";
        return gpu;
      }
      if (options.backend == "cuda")
        return gpu.error();
      std::fprintf(stderr, "moe-run: using the CPU backend: %s\n",
                   gpu.error().message().c_str());
    }
  }
#else
  if (options.backend == "cuda")
    return makeError("--backend cuda: this moe-run was built without CUDA");
  if (options.backend == "auto")
    std::fprintf(stderr, "moe-run: built without CUDA: using the CPU "
                         "backend\n");
#endif
  name = "cpu";
  return prepareBackend("cpu", options, plan, weights, engine.residentBatch,
                        engine.maxContext, false);
}

/// Measures the machine for the planner and writes the profile JSON.
Status profileHardware(const std::string &path) {
#ifdef MOE_HAVE_CUDA
  cuda::ProfileOptions options;
  options.log = [](std::string_view line) {
    std::printf("%.*s\n", static_cast<int>(line.size()), line.data());
    std::fflush(stdout);
  };
  MOE_RETURN_IF_ERROR(cuda::measureProfileToFile(options, path));
  std::printf("wrote %s\n", path.c_str());
  return Status::success();
#else
  return makeError("--profile-hardware: this moe-run was built without CUDA");
#endif
}

nlohmann::json statsJson(const Options &options, const LoadedPlan &plan,
                         const EngineOptions &engine, const EngineStats &s,
                         const Backend &backend, const BackendTotals &totals,
                         int64_t tailSlots, const std::string &backendName,
                         double prepareSeconds, double wallSeconds,
                         const AnswerWriter &answers) {
  auto rate = [](double count, double seconds) {
    return seconds > 0 ? count / seconds : 0.0;
  };
  const BackendCounters &moved = totals.counters;
  nlohmann::json stats{
      {"plan", options.plan},
      {"backend", backendName},
      {"threads", options.threads},
      {"resident_batch", engine.residentBatch},
      {"tail_plan_slots", tailSlots},
      {"refill_slots", engine.refillSlots},
      {"max_context", engine.maxContext},
      {"kv_dtype", model::kvDtypeName(model::kvDtypeOf(plan.plan()))},
      {"weight_dtype",
       model::weightDtypeName(model::expertDtypeOf(plan.plan()))},
      {"prompts", s.prompts},
      {"answers_written", answers.written()},
      {"answers_resumed", answers.resumed()},
      {"failed_requests", answers.failed()},
      {"finish_reasons", answers.finishReasons()},
      {"lengths", lengthsSeen(plan, answers).json()},
      {"usage",
       {{"prompt_tokens", answers.promptTokens()},
        {"completion_tokens", answers.completionTokens()},
        {"total_tokens", answers.promptTokens() + answers.completionTokens()}}},
      {"prepare_seconds", prepareSeconds},
      {"wall_seconds", wallSeconds},
      {"new_tokens", s.newTokens},
      // As transformers' generate is timed: prefill and sampling included.
      {"new_tokens_per_second", rate(double(s.newTokens), wallSeconds)},
      {"prefill",
       {{"tokens", s.prefillTokens},
        {"steps", s.prefillSteps},
        {"seconds", s.prefillSeconds},
        {"tokens_per_second",
         rate(double(s.prefillTokens), s.prefillSeconds)}}},
      {"decode",
       {{"tokens", s.decodeTokens},
        {"steps", s.decodeSteps},
        {"seconds", s.decodeSeconds},
        {"tokens_per_second", rate(double(s.decodeTokens), s.decodeSeconds)},
        {"seconds_per_step",
         s.decodeSteps ? s.decodeSeconds / double(s.decodeSteps) : 0.0},
        {"mean_context",
         s.decodeTokens ? double(s.decodeContextTokens) / double(s.decodeTokens)
                        : 0.0}}},
      {"kv_pages",
       {{"page_tokens", backend.kvPages().pageTokens()},
        {"pages", backend.kvPages().pages()},
        {"peak_held", s.peakKvPages}}},
      {"sampling_seconds", s.samplingSeconds},
      {"peak_active_sequences", s.peakActiveSequences},
      {"paused_sequences", s.pausedSequences},
      {"recomputed_tokens", s.recomputedTokens},
      {"bytes_moved",
       {{"weights_host_to_device", moved.weightBytesToDevice},
        {"kv_host_to_device", moved.kvBytesToDevice},
        {"kv_device_to_host", moved.kvBytesToHost},
        {"hidden_device_to_host", moved.hiddenBytesToHost},
        {"hidden_host_to_device", moved.hiddenBytesToDevice},
        {"host_attention_kv_read", moved.hostKvBytesRead},
        {"host_attention_queries_and_outputs", moved.hostAttentionBytes},
        {"host_to_device_per_decode_step",
         s.decodeSteps
             ? double(moved.decodeBytesToDevice) / double(s.decodeSteps)
             : 0.0}}},
      {"memory",
       {{"host_peak_resident_bytes", processMemoryBytes("VmHWM:")},
        {"host_pinned_bytes", moved.pinnedHostBytes},
        {"device_fixed_bytes", moved.deviceFixedBytes},
        {"device_peak_activation_bytes", moved.devicePeakStepBytes},
        {"device_memory_trims", moved.deviceMemoryTrims},
        {"device_graph_bytes", moved.deviceGraphBytes}}},
      {"cuda_graphs",
       {{"eager_decode_passes", moved.eagerDecodePasses},
        {"captures", moved.graphCaptures},
        {"capture_failures", moved.graphCaptureFailures},
        {"capture_seconds", moved.graphCaptureSeconds},
        {"replays", moved.graphReplays},
        {"kernel_launches_replayed", moved.graphKernelLaunches}}}};
  nlohmann::json stages = nlohmann::json::object();
  for (const StageTime &stage : totals.stages)
    stages[stage.phase][stage.stage] = stage.seconds;
  stats["stage_seconds"] = stages;
  nlohmann::json switches = nlohmann::json::array();
  for (const PhaseSwitchStats &change : s.phaseSwitches) {
    int64_t contexts = 0;
    for (const LiveSequence &sequence : change.live)
      contexts += sequence.context;
    switches.push_back({{"phase", change.phase},
                        {"why", change.why},
                        {"decode_step", change.decodeStep},
                        {"live_sequences", change.live.size()},
                        {"live_context_tokens", contexts},
                        {"enter_seconds", change.enterSeconds},
                        {"recomputed_tokens", change.recomputedTokens}});
  }
  stats["phase_switches"] = switches;
  if (const plan::Prediction *predicted = plan.plan().prediction())
    stats["predicted"] = {
        {"decode_tokens_per_second", predicted->decode_tokens_per_second()},
        {"decode_step_seconds", predicted->decode_step_seconds()},
        {"prefill_tokens_per_second", predicted->prefill_tokens_per_second()},
        {"roofline_bound", predicted->roofline_bound()
                               ? predicted->roofline_bound()->str()
                               : std::string()},
        {"profile_device", predicted->profile_device()
                               ? predicted->profile_device()->str()
                               : std::string()},
        {"profile_file", predicted->profile_file()
                             ? predicted->profile_file()->str()
                             : std::string()}};
  return stats;
}

/// The plan of `options.phase` that `job` carries, to run a whole job on.
Result<LoadedPlan> phasePlan(const LoadedPlan &job, const Options &options) {
  std::vector<std::string> names;
  if (const auto *phases = job.plan().phases())
    for (uint32_t i = 0; i < phases->size(); ++i) {
      names.push_back(phases->Get(i)->name()->str());
      if (names.back() == options.phase)
        return job.phasePlans()[i];
    }
  return makeError("--phase {}: {} carries {}", options.phase, options.plan,
                   names.empty() ? std::string("no phase plans")
                                 : fmt::format("phase plans for: {}",
                                               fmt::join(names, ", ")));
}

/// How a job that ran to its end went (exit codes 0 and 2).
enum class RunOutcome { allAnswered, someRequestsFailed };

/// After this process's shard is answered: the shards merged into the
/// output once every one is, or what is left.
Status mergeWhenAnswered(const Options &options,
                         const std::function<std::string(int64_t)> &describe) {
  const Shard &shard = options.shard;
  MOE_ASSIGN_OR_RETURN(
      MergeOutcome merge,
      mergeShards(options.output, shard.count, describe(-1), describe));
  if (merge.merged)
    std::fprintf(stderr, "moe-run: every shard answered: %lld merged into %s\n",
                 static_cast<long long>(shard.count), options.output.c_str());
  else if (!merge.unanswered.empty())
    std::fprintf(stderr,
                 "moe-run: shard %lld of %lld answered; %s is written once "
                 "shard%s %s %s\n",
                 static_cast<long long>(shard.index),
                 static_cast<long long>(shard.count), options.output.c_str(),
                 merge.unanswered.size() > 1 ? "s" : "",
                 fmt::format("{}", fmt::join(merge.unanswered, ", ")).c_str(),
                 merge.unanswered.size() > 1 ? "are" : "is");
  return Status::success();
}

Result<RunOutcome> run(const Options &options) {
  Result<LoadedPlan> plan = LoadedPlan::fromFile(options.plan);
  if (!plan.ok())
    return plan.error();
  if (!options.phase.empty())
    plan = phasePlan(*plan, options);
  if (!plan.ok())
    return plan.error();
  const plan::Model &model = plan->model();
  ChromeTrace trace;
  if (!options.trace.empty())
    MOE_RETURN_IF_ERROR(addPlanTimelines(trace, plan->plan()));

  MOE_ASSIGN_OR_RETURN(std::optional<Tokenizer> tokenizer,
                       checkpointTokenizer(options.checkpoint));
  const Tokenizer *tokens = tokenizer ? &*tokenizer : nullptr;
  CheckpointChat chat = checkpointChat(options.checkpoint);

  // Batch and lengths: the plan's decision unless overridden.
  const plan::Batching *batching = plan->plan().batching();
  EngineOptions engine;
  engine.residentBatch = options.batch.value_or(
      batching ? static_cast<int32_t>(batching->resident_batch()) : 8);
  int64_t plannedContext =
      batching ? batching->prompt_tokens() + batching->generated_tokens() : 0;
  int64_t modelContext = model.max_position() > 0 ? model.max_position() : 4096;
  engine.maxContext = options.maxContext.value_or(static_cast<int32_t>(
      plannedContext > 0 ? std::min(plannedContext, modelContext)
                         : std::min<int64_t>(modelContext, 8192)));
  int32_t maxNewTokens = options.maxNewTokens.value_or(
      batching ? static_cast<int32_t>(batching->generated_tokens())
               : kDefaultNewTokens);
  if (model.eos_token_ids())
    for (int64_t id : *model.eos_token_ids())
      engine.eosTokenIds.push_back(static_cast<int32_t>(id));
  MOE_ASSIGN_OR_RETURN(std::vector<int32_t> generationEos,
                       generationConfigEos(options.checkpoint));
  for (int32_t id : generationEos)
    if (std::find(engine.eosTokenIds.begin(), engine.eosTokenIds.end(), id) ==
        engine.eosTokenIds.end())
      engine.eosTokenIds.push_back(id);
  engine.tokenizer = tokens;
  engine.sampling = options.sampling;
  engine.refillSlots = options.refillSlots.value_or(
      plannedRefillSlots(*plan, engine.residentBatch));
  if (engine.residentBatch <= 0 || engine.maxContext <= 1 || maxNewTokens <= 0)
    return makeError("--batch, --max-context and --max-new-tokens must be "
                     "positive (context at least 2)");
  // Overrides stay within what the plan's memory and the model allow.
  if (options.batch && batching && *options.batch > batching->resident_batch())
    return makeError("--batch {} is beyond the plan's B of {}, which its GPU "
                     "and host memory were planned for; plan again with "
                     "moe-opt (max-batch=...) for a larger batch",
                     *options.batch, batching->resident_batch());
  if (options.maxContext && model.max_position() > 0 &&
      *options.maxContext > model.max_position())
    return makeError("--max-context {} is beyond the model's {} positions",
                     *options.maxContext, model.max_position());
  if (options.maxContext && plannedContext > 0 &&
      *options.maxContext > plannedContext)
    std::fprintf(stderr,
                 "moe-run: warning: --max-context %d is beyond the %lld "
                 "tokens a sequence was planned for; the KV cache grows past "
                 "the plan's memory\n",
                 *options.maxContext, static_cast<long long>(plannedContext));

  std::error_code same;
  if (options.output != "-" &&
      (std::filesystem::weakly_canonical(options.output, same) ==
           std::filesystem::weakly_canonical(options.prompts, same) ||
       std::filesystem::equivalent(options.output, options.prompts, same)))
    return makeError("--output {} is the prompts file; answers go elsewhere",
                     options.output);
  const Shard &shard = options.shard;
  auto describe = [&](int64_t index) {
    return jobDescription(options, engine, maxNewTokens,
                          Shard{index, shard.count});
  };
  int64_t requests = countPromptLines(options.prompts);
  if (shard.sharded()) {
    if (options.output == "-")
      return makeError("a job in shards (--shard, or a launcher's rank and "
                       "size) writes its answers to a file: give --output");
    if (requests < 0)
      return makeError("{}: a job in shards needs a prompts file to count, "
                       "not a pipe",
                       options.prompts);
    if (shardsMerged(options.output, describe(-1))) {
      std::fprintf(stderr, "moe-run: every shard answered already: %s\n",
                   options.output.c_str());
      return failedAnswers(options.output) > 0 ? RunOutcome::someRequestsFailed
                                               : RunOutcome::allAnswered;
    }
    if (shardAnswered(options.output, shard, describe(shard.index))) {
      std::fprintf(stderr,
                   "moe-run: shard %lld of %lld: answered already in %s\n",
                   static_cast<long long>(shard.index),
                   static_cast<long long>(shard.count),
                   shard.path(options.output).c_str());
      MOE_RETURN_IF_ERROR(mergeWhenAnswered(options, describe));
      return failedAnswers(shard.path(options.output)) > 0
                 ? RunOutcome::someRequestsFailed
                 : RunOutcome::allAnswered;
    }
  }
  // Bound after the checks above: a shard answered already needs no weights.
  Result<WeightSet> weights =
      options.syntheticSeed
          ? WeightSet::synthetic(model, *options.syntheticSeed)
          : WeightSet::fromCheckpoint(options.checkpoint, model);
  if (!weights.ok())
    return weights.error();
  Result<PromptReader> prompts =
      PromptReader::open(options.prompts, tokens, maxNewTokens,
                         options.sampling, chat.prompting());
  if (!prompts.ok())
    return prompts.error();
  if (shard.sharded())
    MOE_RETURN_IF_ERROR(
        prompts->restrictTo(shard.first(requests), shard.end(requests)));
  Result<AnswerWriter> answers = AnswerWriter::open(
      shard.path(options.output), *prompts, tokens, describe(shard.index));
  if (!answers.ok())
    return answers.error();
  if (answers->resumed() > 0)
    std::fprintf(stderr, "moe-run: resuming: %lld answers kept in %s\n",
                 static_cast<long long>(answers->resumed()),
                 answers->partialPath().c_str());

  std::string backendName;
  auto prepareStart = std::chrono::steady_clock::now();
  Result<std::unique_ptr<Backend>> chosen =
      chooseBackend(options, *plan, *weights, engine, backendName);
  if (!chosen.ok())
    return chosen.error();
  double prepareSeconds = std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - prepareStart)
                              .count();
  std::unique_ptr<Backend> backend = std::move(chosen).value();
  if (!options.trace.empty())
    backend->traceNextDecodeStep(&trace);
  // What backends given back to a phase switch moved and timed.
  BackendTotals spent;
  std::optional<TailSwitch> tail;
  if (options.tailPlan && TailSwitch::hasTail(*plan)) {
    tail.emplace(*plan, prepareSeconds);
    engine.phaseSwitch = PhaseSwitch{
        [&](std::span<const LiveSequence> live) { return tail->decide(live); },
        [&](const PhaseChange &) -> Result<std::pair<Backend *, int32_t>> {
          spent.add(*backend);
          backend.reset(); // its GPU and pinned memory, for the next one's
          int32_t slots = static_cast<int32_t>(
              tail->tailPlan().plan().batching()->resident_batch());
          Result<std::unique_ptr<Backend>> next =
              prepareBackend(backendName, options, tail->tailPlan(), *weights,
                             slots, engine.maxContext, true);
          if (!next.ok())
            return next.error().withContext(
                "the tail plan (--no-tail-plan finishes a job on its own "
                "plan)");
          backend = std::move(next).value();
          return std::pair<Backend *, int32_t>(backend.get(), slots);
        }};
  }
  engine.stopRequested = [] { return stopSignal != 0; };
  installStopHandlers();
  Engine generator(*backend, static_cast<int32_t>(model.vocab_size()), engine);
  int64_t total =
      requests < 0 ? -1 : shard.end(requests) - shard.first(requests);
  int64_t toDo = total < 0 ? -1 : total - answers->resumed();
  bool terminal = isatty(STDERR_FILENO);
  ProgressLine progress(options.progress, terminal, options.progressInterval);
  auto showProgress = [&](const EngineStats &stats, bool last) {
    progress.show(
        [&] {
          return jobProgress(answers->written() - answers->resumed(), toDo,
                             stats.newTokens, progress.seconds(),
                             spent.with(*backend).counters, terminal);
        },
        last);
  };
  Status status = generator.run(
      [&] { return prompts->next(); },
      [&](Completion completion) {
        return answers->add(std::move(completion));
      },
      [&](const EngineStats &stats) { showProgress(stats, false); });
  const EngineStats &stats = generator.stats();
  showProgress(stats, true);
  double wall = progress.seconds();
  // Answers of a finished job first: a stats file that cannot be written
  // does not hold them back.
  if (status.ok())
    MOE_RETURN_IF_ERROR(answers->commit(/*keepDescription=*/shard.sharded()));
  // Stats are written even when the run failed part-way: they describe what
  // was done. They appear whole or not at all (written aside, then renamed),
  // so a reader never takes a cut-off file for a finished run.
  if (!options.stats.empty()) {
    std::string statsPath = shard.path(options.stats);
    std::string partial = statsPath + ".partial";
    std::ofstream file(partial);
    file << statsJson(options, *plan, engine, stats, *backend,
                      spent.with(*backend), tail ? tail->slots() : 0,
                      backendName, prepareSeconds, wall, *answers)
                .dump(2)
         << "\n";
    file.close();
    std::error_code renamed;
    if (file)
      std::filesystem::rename(partial, statsPath, renamed);
    if (!file || renamed) {
      std::filesystem::remove(partial, renamed);
      return makeError("{}: cannot write the stats file", statsPath);
    }
  }
  if (!options.trace.empty())
    MOE_RETURN_IF_ERROR(trace.write(options.trace));
  if (!status.ok()) {
    if (answers->partialPath().empty())
      return status.error();
    std::string why = status.error().message() == kInterrupted
                          ? "interrupted"
                          : status.error().message();
    return makeError("{}; {} answers are kept in {}: run the same command "
                     "to resume",
                     why, answers->written(), answers->partialPath());
  }
  std::string failed =
      answers->failed() > 0
          ? fmt::format(", {} failed (error lines in the answers)",
                        answers->failed())
          : std::string();
  std::fprintf(
      stderr,
      "moe-run: %lld answers%s on %s; %.1f new tok/s; prefill %.1f tok/s, "
      "decode %.1f tok/s (%lld steps, B=%d)\n",
      static_cast<long long>(answers->written()), failed.c_str(),
      backendName.c_str(), wall > 0 ? double(stats.newTokens) / wall : 0.0,
      stats.prefillSeconds > 0
          ? double(stats.prefillTokens) / stats.prefillSeconds
          : 0.0,
      stats.decodeSeconds > 0 ? double(stats.decodeTokens) / stats.decodeSeconds
                              : 0.0,
      static_cast<long long>(stats.decodeSteps), engine.residentBatch);
  if (std::string hint = lengthsSeen(*plan, *answers).hint(options.output);
      !hint.empty())
    std::fprintf(stderr, "%s\n", hint.c_str());
  if (shard.sharded())
    MOE_RETURN_IF_ERROR(mergeWhenAnswered(options, describe));
  return answers->failed() > 0 ? RunOutcome::someRequestsFailed
                               : RunOutcome::allAnswered;
}

/// Edits (insertions, deletions, substitutions) between two strings.
size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j)
    row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({above + 1, row[j - 1] + 1,
                         diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

/// " (did you mean --max-tokens?)" for the first unexpected option close to
/// one of `app`'s, else "".
std::string nearestOption(const CLI::App &app,
                          const std::vector<std::string> &unexpected) {
  for (const std::string &given : unexpected) {
    if (!given.starts_with("--"))
      continue;
    std::string name = given.substr(2, given.find('=') - 2);
    std::string best;
    size_t bestDistance = std::max<size_t>(2, name.size() / 3) + 1;
    for (const CLI::Option *option : app.get_options())
      for (const std::string &candidate : option->get_lnames())
        if (size_t d = editDistance(name, candidate); d < bestDistance)
          bestDistance = d, best = candidate;
    if (!best.empty())
      return " (did you mean --" + best + "?)";
  }
  return "";
}

} // namespace

int main(int argc, char **argv) {
  Options options;
  CLI::App app{"moe-run: generate answers for a file of prompts with a plan "
               "made by moe-opt"};
  auto *planOption = app.add_option("plan", options.plan, "The .moeplan file");
  app.add_option("--profile-hardware", options.profileHardware,
                 "Measure this GPU and host (PCIe, HBM, GEMM and attention "
                 "rates; minutes) into this JSON file for moe-opt's "
                 "--moe-plan=profile=..., then exit")
      ->excludes(planOption);
  auto *describe = app.add_flag(
      "--describe-prompts", options.describePrompts,
      "Print the job's shape (requests, longest and mean prompt in tokens, "
      "most new tokens asked: --max-new-tokens where a line sets none) as "
      "JSON for planning it, then exit; its \"prompt_tokens\" and "
      "\"generated_tokens\" histograms ([[length, count], ...]; each "
      "request's cap on new tokens unless --observed-answers) make it a "
      "file for moe-opt's lengths=");
  describe->excludes(planOption);
  app.add_option("--observed-answers", options.observedAnswers,
                 "With --describe-prompts: the answers of an earlier run of "
                 "similar prompts (moe-run's or an OpenAI batch output), "
                 "whose generated lengths make the \"generated_tokens\" "
                 "histogram instead of the requests' caps");
  auto *checkpoint =
      app.add_option("--checkpoint", options.checkpoint,
                     "HuggingFace checkpoint directory (safetensors)");
  auto *synthetic = app.add_option(
      "--synthetic-seed", options.syntheticSeed,
      "Use seeded random weights of the real shapes instead of a checkpoint");
  checkpoint->excludes(synthetic);
  app.add_option("--prompts", options.prompts,
                 "JSONL: {\"input_ids\": [...]} or {\"prompt\": \"...\"}");
  app.add_option("--output", options.output,
                 "Answers JSONL ('-': stdout), written as OUTPUT.partial and "
                 "renamed once every request is answered; a stopped job "
                 "resumes when run again with the same command");
  app.add_option("--stats", options.stats, "Write run statistics as JSON");
  app.add_option("--shard", options.shardFlag,
                 "S/N: answer shard S of N (contiguous runs of the requests) "
                 "into OUTPUT.shard-S-of-N (stats: STATS.shard-S-of-N); the "
                 "last shard to finish merges them into OUTPUT in input "
                 "order. Default: the launcher's rank and size (mpirun, "
                 "srun), else the whole job");
  app.add_option("--trace", options.trace,
                 "Write the plan's decode step and prefill pass and the first "
                 "decode step as run, as timelines in Chrome's trace format "
                 "(open in ui.perfetto.dev)");
  app.add_option("--backend", options.backend,
                 "auto (CUDA when a GPU runs the plan, else CPU), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_flag("--enforce-eager", options.enforceEager,
               "Launch every decode step op by op on the GPU (no CUDA "
               "graphs; vLLM's name)");
  app.add_option("--threads,-t", options.threads, "CPU threads")
      ->check(numberIn([](double v) { return v >= 1; }, "at least 1"));
  app.add_option("--batch", options.batch,
                 "Resident batch B (default: the plan's)");
  app.add_option("--max-context,--ctx-size,-c", options.maxContext,
                 "Tokens per sequence, prompt included (--ctx-size, -c as "
                 "llama.cpp names it)");
  app.add_flag("--tail-plan,!--no-tail-plan", options.tailPlan,
               "Once every request is admitted, hand the job's last "
               "sequences to the tail plan compiled beside the job's plan "
               "when its predicted saving outweighs preparing it and "
               "recomputing their caches (default on; the stats file's "
               "phase_switches say when and why)");
  app.add_option("--phase", options.phase,
                 "Run the whole job on the plan of this phase that the plan "
                 "carries (tail), to measure it");
  app.add_option("--kv-pool-tokens", options.kvPoolTokens,
                 "Tokens of KV cache in host memory, in pages: for all "
                 "sequences on the CPU backend (default: each one's whole "
                 "context), for those whose KV the plan keeps in host memory "
                 "on the CUDA backend (default: the plan's pool); sequences "
                 "take it as they grow, wait for it, and are paused and "
                 "resumed when it runs short, with the same answers")
      ->check(numberIn([](double v) { return v >= 1; }, "at least 1"));
  app.add_option("--refill-slots", options.refillSlots,
                 "Take new prompts in once this many slots are free "
                 "(default: where the plan streams weights, which a prefill "
                 "pass streams again however few prompts it holds, the count "
                 "that balances those passes against idle slots; 1: as soon "
                 "as one frees)")
      ->check(numberIn([](double v) { return v >= 1; }, "at least 1"));
  app.add_option("--max-new-tokens,--max-tokens,--n-predict,-n",
                 options.maxNewTokens,
                 "Default generation length (a prompt line may set its own; "
                 "--max-tokens as vLLM names it, --n-predict, -n as "
                 "llama.cpp does)");
  app.add_option("--temperature,--temp", options.sampling.temperature,
                 "0 = greedy")
      ->check(numberIn([](double v) { return v >= 0; }, "at least 0"));
  app.add_option("--top-k", options.sampling.topK, "0 = off")
      ->check(numberIn([](double v) { return v >= 0; }, "at least 0"));
  app.add_option("--top-p", options.sampling.topP, "1 = off")
      ->check(numberIn([](double v) { return v > 0 && v <= 1; }, "in (0, 1]"));
  app.add_option("--seed,-s", options.sampling.seed, "Sampling seed");
  app.add_flag("--progress,!--no-progress", options.progress,
               "Progress with ETA on stderr: a bar on a terminal, a line "
               "every --progress-interval seconds in a log");
  app.add_option("--progress-interval", options.progressInterval,
                 "Seconds between progress lines when stderr is not a "
                 "terminal")
      ->check(numberIn([](double v) { return v > 0; }, "positive"));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ExtrasError &error) {
    std::fprintf(stderr, "moe-run: %s%s\n", error.what(),
                 nearestOption(app, app.remaining()).c_str());
    return error.get_exit_code();
  } catch (const CLI::ParseError &error) {
    return app.exit(error);
  }
  if (!options.profileHardware.empty()) {
    Status profiled = profileHardware(options.profileHardware);
    if (!profiled.ok()) {
      std::fprintf(stderr, "moe-run: %s\n", profiled.error().message().c_str());
      return 1;
    }
    return 0;
  }
  if (!options.observedAnswers.empty() && !options.describePrompts) {
    std::fprintf(stderr,
                 "moe-run: --observed-answers needs --describe-prompts\n");
    return 1;
  }
  Result<Shard> shard = shardOfThisProcess(options.shardFlag);
  if (!shard.ok()) {
    std::fprintf(stderr, "moe-run: %s\n", shard.error().message().c_str());
    return 1;
  }
  options.shard = *shard;
  if (options.describePrompts) {
    if (options.prompts.empty()) {
      std::fprintf(stderr, "moe-run: --describe-prompts needs --prompts\n");
      return 1;
    }
    Status described =
        describePrompts(options.prompts, options.checkpoint,
                        options.maxNewTokens.value_or(kDefaultNewTokens),
                        options.observedAnswers);
    if (!described.ok()) {
      std::fprintf(stderr, "moe-run: %s\n",
                   described.error().message().c_str());
      return 1;
    }
    return 0;
  }
  if (options.plan.empty() || options.prompts.empty()) {
    std::fprintf(stderr, "moe-run: give a plan and --prompts FILE (or "
                         "--profile-hardware OUT.json)\n");
    return 1;
  }
  if (options.checkpoint.empty() && !options.syntheticSeed) {
    std::fprintf(stderr, "moe-run: give --checkpoint DIR or "
                         "--synthetic-seed N\n");
    return 1;
  }
  Result<RunOutcome> outcome = makeError("not run");
  try {
    outcome = run(options);
  } catch (const std::bad_alloc &) {
    outcome = makeError("out of host memory (the batch and context ask for "
                        "more than this machine has)");
  } catch (const std::exception &error) {
    outcome = makeError("internal error: {}", error.what());
  }
  if (!outcome.ok()) {
    std::fprintf(stderr, "moe-run: %s\n", outcome.error().message().c_str());
    return 1;
  }
  return *outcome == RunOutcome::allAnswered ? 0 : 2;
}
