#include "runtime/plan/LoadedPlan.h"

#include "runtime/schemas/PlanVersion.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace moe {
namespace {

/// Checks that every reference inside the model points at something that
/// exists, so the executor can index without checking again.
class ModelChecker {
public:
  explicit ModelChecker(const plan::Model &model) : model_(model) {}

  Status check() {
    const auto &params = *model_.params();
    for (uint32_t i = 0; i < params.size(); ++i) {
      const plan::Param &param = *params.Get(i);
      if (param.shape()->size() == 0)
        return makeError("param {} ('{}') has no shape", i,
                         param.name()->str());
      for (int64_t dim : *param.shape())
        if (dim <= 0 || dim > kMaxDimension)
          return makeError("param {} ('{}') has a dimension of {}, not in "
                           "1..{}",
                           i, param.name()->str(), dim, kMaxDimension);
    }
    if (model_.num_values() < 1)
      return makeError("model has no values");
    // The counts size per-layer and per-value tables.
    if (model_.num_layers() < 0 || model_.num_layers() > kMaxDimension ||
        model_.num_values() > kMaxDimension)
      return makeError("model declares {} layers and {} values; at most {} "
                       "of each",
                       model_.num_layers(), model_.num_values(), kMaxDimension);
    defined_.assign(static_cast<size_t>(model_.num_values()), false);
    defined_[0] = true; // the token ids
    const auto &ops = *model_.ops();
    for (uint32_t i = 0; i < ops.size(); ++i) {
      Status status = checkOp(*ops.Get(i));
      if (!status.ok())
        return status.error().withContext(fmt::format("op {}", i));
    }
    if (!isDefined(model_.logits()))
      return makeError("logits value {} is never defined", model_.logits());
    return Status::success();
  }

private:
  bool isDefined(int value) const {
    return value >= 0 && value < static_cast<int>(defined_.size()) &&
           defined_[value];
  }

  Status param(int index, const char *field, bool optional = false) {
    if (optional && index == -1)
      return Status::success();
    if (index < 0 || index >= static_cast<int>(model_.params()->size()))
      return makeError("'{}' refers to param {}, but the plan has {}", field,
                       index, model_.params()->size());
    return Status::success();
  }

  Status checkOp(const plan::Op &op) {
    for (int operand : *op.operands())
      if (!isDefined(operand))
        return makeError("operand value {} is not defined before use", operand);
    MOE_RETURN_IF_ERROR(checkModule(op));
    for (int result : *op.results()) {
      if (result <= 0 || result >= static_cast<int>(defined_.size()))
        return makeError("result value {} is out of range", result);
      if (defined_[result])
        return makeError("result value {} is defined twice", result);
      defined_[result] = true;
    }
    return Status::success();
  }

  Status checkModule(const plan::Op &op) {
    using plan::Module;
    switch (op.spec_type()) {
    case Module::Embedding:
      return param(op.spec_as_Embedding()->table(), "table");
    case Module::RMSNorm:
      return param(op.spec_as_RMSNorm()->weight(), "weight");
    case Module::Attention: {
      const plan::Attention &a = *op.spec_as_Attention();
      MOE_RETURN_IF_ERROR(param(a.q(), "q"));
      MOE_RETURN_IF_ERROR(param(a.out(), "o"));
      bool ownsKv = a.kv_source_layer() < 0;
      MOE_RETURN_IF_ERROR(param(a.k(), "k", !ownsKv));
      MOE_RETURN_IF_ERROR(param(a.v(), "v", !ownsKv));
      for (auto [index, field] : {std::pair{a.q_bias(), "q_bias"},
                                  {a.k_bias(), "k_bias"},
                                  {a.v_bias(), "v_bias"},
                                  {a.o_bias(), "o_bias"},
                                  {a.q_norm(), "q_norm"},
                                  {a.k_norm(), "k_norm"},
                                  {a.sinks(), "sinks"}})
        MOE_RETURN_IF_ERROR(param(index, field, /*optional=*/true));
      return Status::success();
    }
    case Module::MLAttention: {
      const plan::MLAttention &a = *op.spec_as_MLAttention();
      bool lowRank = a.q_lora_rank() > 0;
      MOE_RETURN_IF_ERROR(param(a.q(), "q", lowRank));
      MOE_RETURN_IF_ERROR(param(a.q_a(), "q_a", !lowRank));
      MOE_RETURN_IF_ERROR(param(a.q_a_norm(), "q_a_norm", !lowRank));
      MOE_RETURN_IF_ERROR(param(a.q_b(), "q_b", !lowRank));
      MOE_RETURN_IF_ERROR(param(a.kv_a(), "kv_a"));
      MOE_RETURN_IF_ERROR(param(a.kv_a_norm(), "kv_a_norm"));
      MOE_RETURN_IF_ERROR(param(a.kv_b(), "kv_b"));
      return param(a.out(), "o");
    }
    case Module::LightningAttention: {
      const plan::LightningAttention &a = *op.spec_as_LightningAttention();
      MOE_RETURN_IF_ERROR(param(a.qkv(), "qkv"));
      MOE_RETURN_IF_ERROR(param(a.gate(), "gate"));
      MOE_RETURN_IF_ERROR(param(a.norm(), "norm"));
      return param(a.out(), "out");
    }
    case Module::Router: {
      const plan::Router &r = *op.spec_as_Router();
      if (r.top_k() <= 0 || r.top_k() > r.num_experts())
        return makeError("router top_k {} is not in 1..{}", r.top_k(),
                         r.num_experts());
      MOE_RETURN_IF_ERROR(param(r.weight(), "weight"));
      MOE_RETURN_IF_ERROR(param(r.bias(), "bias", true));
      return param(r.correction_bias(), "correction_bias", true);
    }
    case Module::Experts: {
      const plan::Experts &e = *op.spec_as_Experts();
      bool separate = e.layout() == plan::ExpertLayout::separate;
      MOE_RETURN_IF_ERROR(param(e.gate(), "gate", !separate));
      MOE_RETURN_IF_ERROR(param(e.up(), "up", !separate));
      MOE_RETURN_IF_ERROR(param(e.gate_up(), "gate_up", separate));
      MOE_RETURN_IF_ERROR(param(e.down(), "down"));
      MOE_RETURN_IF_ERROR(param(e.gate_up_bias(), "gate_up_bias", true));
      return param(e.down_bias(), "down_bias", true);
    }
    case Module::MLP: {
      const plan::MLP &m = *op.spec_as_MLP();
      MOE_RETURN_IF_ERROR(param(m.gate(), "gate"));
      MOE_RETURN_IF_ERROR(param(m.up(), "up"));
      MOE_RETURN_IF_ERROR(param(m.down(), "down"));
      return param(m.output_gate(), "output_gate", true);
    }
    case Module::Residual:
      return op.operands()->size() == 2
                 ? Status::success()
                 : Status(makeError("residual needs 2 operands"));
    case Module::LMHead:
      return param(op.spec_as_LMHead()->weight(), "weight");
    case Module::NONE:
      break;
    }
    return makeError("unknown module type {}",
                     static_cast<int>(op.spec_type()));
  }

  const plan::Model &model_;
  std::vector<bool> defined_;
};

/// The lengths `b` was planned for: its recorded distributions, reaching
/// its prompt_tokens and generated_tokens, or what those and
/// min_generated_tokens say.
Result<costmodel::GenerationLengths> lengthsOf(const plan::Batching &b) {
  if (b.prompt_tokens() <= 0 || b.generated_tokens() < 0 ||
      b.min_generated_tokens() < 0 ||
      b.min_generated_tokens() > b.generated_tokens())
    return makeError("batching: prompt_tokens {} must be positive and "
                     "min_generated_tokens {} within [0, generated_tokens "
                     "{}]",
                     b.prompt_tokens(), b.min_generated_tokens(),
                     b.generated_tokens());
  auto bins = [](const flatbuffers::Vector<double> *flat) {
    return flat ? std::span(flat->data(), flat->size())
                : std::span<const double>();
  };
  Result<costmodel::GenerationLengths> lengths =
      costmodel::GenerationLengths::recorded(
          b.prompt_tokens(), b.generated_tokens(), b.min_generated_tokens(),
          bins(b.prompt_lengths()), bins(b.generated_lengths()));
  if (!lengths.ok())
    return lengths.error().withContext("batching");
  for (auto [name, longest, recorded] :
       {std::tuple{"prompt_lengths", lengths->prompts.longest(),
                   b.prompt_tokens()},
        std::tuple{"generated_lengths", lengths->generated.longest(),
                   b.generated_tokens()}})
    if (longest != recorded)
      return makeError("batching: {} reach {} tokens, not the {} recorded",
                       name, longest, recorded);
  return lengths;
}

/// The executor sizes its buffers from these, so nonsense must stop here.
Status checkBatching(const plan::Plan &root) {
  const plan::Batching *b = root.batching();
  if (!b)
    return Status::success();
  if (b->resident_batch() <= 0 || b->attention_micro_batch_prefill() <= 0 ||
      b->attention_micro_batch_decode() <= 0 || b->expert_micro_batch() <= 0 ||
      b->prefetch_depth() <= 0 || b->kv_staging_buffers() <= 0)
    return makeError("batching: batch sizes, prefetch depth and staging "
                     "buffers must be positive");
  if (b->attention_micro_batch_decode() > b->resident_batch() ||
      b->attention_micro_batch_prefill() > b->resident_batch())
    return makeError("batching: an attention micro-batch exceeds the "
                     "resident batch {}",
                     b->resident_batch());
  if (!(b->kv_gpu_fraction() >= 0 && b->kv_gpu_fraction() <= 1) ||
      !(b->cpu_attention_share() >= 0 && b->cpu_attention_share() <= 1))
    return makeError("batching: kv_gpu_fraction and cpu_attention_share "
                     "must be in [0, 1]");
  if (b->kv_dtype() > plan::KvDType::MAX)
    return makeError("batching: kv_dtype {} is neither bf16 nor fp8",
                     static_cast<int>(b->kv_dtype()));
  if (b->weight_dtype() > plan::WeightDType::MAX)
    return makeError("batching: weight_dtype {} is none of bf16, fp8, mxfp4",
                     static_cast<int>(b->weight_dtype()));
  MOE_RETURN_IF_ERROR(lengthsOf(*b));
  for (const plan::Param *param : *root.model()->params())
    if (param->gpu_experts() < 0 ||
        (param->gpu_experts() > 0 &&
         param->gpu_experts() > param->shape()->Get(0)))
      return makeError("param '{}' keeps {} experts on the GPU but has {}",
                       param->name()->str(), param->gpu_experts(),
                       param->shape()->Get(0));
  return Status::success();
}

/// Jobs wait only for earlier jobs, name buffers that exist, and run on the
/// stream their kind needs, so the executor can issue them in order.
Status checkStep(const plan::StepSchedule &step, const plan::Schedule &schedule,
                 const char *name) {
  const auto &jobs = *step.jobs();
  const auto &pools = *schedule.pools();
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    const plan::Job &job = *jobs.Get(i);
    auto fail = [&](const Error &error) {
      return error.withContext(fmt::format("{} job {}", name, i));
    };
    if (job.after())
      for (uint32_t dep : *job.after())
        if (dep >= i)
          return fail(makeError("waits for job {}, which is not earlier", dep));
    plan::StreamKind wanted = plan::StreamKind::h2d;
    if (job.kind() == plan::JobKind::compute)
      wanted = plan::StreamKind::compute;
    else if (job.kind() == plan::JobKind::host_attention)
      wanted = plan::StreamKind::host;
    else if (job.kind() == plan::JobKind::kv_store ||
             job.kind() == plan::JobKind::hidden_store)
      wanted = plan::StreamKind::d2h;
    if (job.stream() != wanted)
      return fail(makeError("runs on the {} stream, its kind needs {}",
                            plan::EnumNameStreamKind(job.stream()),
                            plan::EnumNameStreamKind(wanted)));
    if (job.pool() >= 0) {
      if (job.pool() >= static_cast<int>(pools.size()))
        return fail(makeError("pool {} does not exist", job.pool()));
      if (job.buffer() < 0 || job.buffer() >= pools.Get(job.pool())->count())
        return fail(
            makeError("buffer {} is not in pool {}", job.buffer(), job.pool()));
    }
  }
  return Status::success();
}

/// FlatBuffers' verifier (2.0) checks a vector's length field, not its
/// elements' alignment: 8-byte elements read from an odd offset would be
/// misaligned loads. An empty vector is not aligned by FlatBuffers' builder
/// and has nothing to misread.
bool vectorsOfLongsAligned(const plan::Model &model) {
  auto aligned = [](const flatbuffers::Vector<int64_t> *vector) {
    return !vector || vector->size() == 0 ||
           reinterpret_cast<uintptr_t>(vector->data()) % 8 == 0;
  };
  if (!aligned(model.eos_token_ids()))
    return false;
  return std::all_of(
      model.params()->begin(), model.params()->end(),
      [&](const plan::Param *param) { return aligned(param->shape()); });
}

Status checkSchedule(const plan::Plan &root) {
  const plan::Schedule *schedule = root.schedule();
  if (!schedule)
    return Status::success();
  // A buffer no job can name is never used: more buffers than jobs is a
  // damaged plan, and the executor sizes per-buffer state by the count.
  int64_t jobs = int64_t(schedule->decode()->jobs()->size()) +
                 int64_t(schedule->prefill()->jobs()->size());
  for (const plan::BufferPool *pool : *schedule->pools())
    if (pool->count() <= 0 || pool->buffer_bytes() < 0 ||
        pool->count() > std::max<int64_t>(jobs, 1))
      return makeError("schedule: a buffer pool needs 0 < count <= {} (the "
                       "jobs) and bytes >= 0; it has count {} and {} bytes",
                       std::max<int64_t>(jobs, 1), pool->count(),
                       pool->buffer_bytes());
  MOE_RETURN_IF_ERROR(checkStep(*schedule->decode(), *schedule, "decode"));
  return checkStep(*schedule->prefill(), *schedule, "prefill");
}

Status checkLiveSteps(const plan::LiveSteps &steps, const char *name) {
  const auto &live = *steps.live();
  const auto &seconds = *steps.seconds();
  if (live.size() == 0 || live.size() != seconds.size())
    return makeError("{}: needs as many step times as live counts, at least "
                     "one; it has {} and {}",
                     name, seconds.size(), live.size());
  for (uint32_t i = 0; i < live.size(); ++i)
    if (live.Get(i) < 1 || (i > 0 && live.Get(i) <= live.Get(i - 1)) ||
        !(seconds.Get(i) > 0) || !std::isfinite(seconds.Get(i)))
      return makeError("{}: live counts must rise from 1 and step times be "
                       "positive; point {} is {} live, {} s",
                       name, i, live.Get(i), seconds.Get(i));
  return Status::success();
}

// A phase's own fields; its plan is loaded and checked against the job's
// plan by the caller.
Status checkPhase(const plan::Phase &phase) {
  auto fail = [&](const Error &error) {
    return error.withContext(fmt::format("phase '{}'", phase.name()->str()));
  };
  if (phase.slots() < 1 || phase.context_tokens() < 1)
    return fail(makeError("needs at least one slot and a context; it has {} "
                          "slots at context {}",
                          phase.slots(), phase.context_tokens()));
  Status status = checkLiveSteps(*phase.current(), "current plan's steps");
  if (status.ok())
    status = checkLiveSteps(*phase.steps(), "its steps");
  if (!status.ok())
    return fail(status.error());
  return Status::success();
}

} // namespace

Result<LoadedPlan> LoadedPlan::fromBytes(std::vector<uint8_t> bytes,
                                         const std::string &name) {
  auto fail = [&](const Error &error) { return error.withContext(name); };
  // Layout: 4-byte size prefix, then the FlatBuffer with its identifier.
  if (bytes.size() < 12 ||
      !plan::SizePrefixedPlanBufferHasIdentifier(bytes.data()))
    return fail(makeError("not a moe plan (no '{}' file identifier)",
                          plan::PlanIdentifier()));
  size_t declared = flatbuffers::GetPrefixedSize(bytes.data()) +
                    sizeof(flatbuffers::uoffset_t);
  if (declared != bytes.size())
    return fail(makeError("truncated or padded plan: it declares {} bytes, "
                          "the file has {}",
                          declared, bytes.size()));
  flatbuffers::Verifier verifier(bytes.data(), bytes.size());
  if (!plan::VerifySizePrefixedPlanBuffer(verifier))
    return fail(makeError("corrupt plan: the buffer fails verification"));
  const plan::Plan &root = *plan::GetSizePrefixedPlan(bytes.data());
  if (!vectorsOfLongsAligned(*root.model()))
    return fail(makeError("corrupt plan: a vector of 8-byte values is not "
                          "8-byte aligned"));
  if (root.schema_version() != plan::kSchemaVersion)
    return fail(makeError("plan schema version {}, this runtime reads "
                          "version {}: recompile the plan with moe-opt",
                          root.schema_version(), plan::kSchemaVersion));
  Status status = ModelChecker(*root.model()).check();
  if (status.ok())
    status = checkBatching(root);
  if (status.ok())
    status = checkSchedule(root);
  if (!status.ok())
    return fail(status.error().withContext("invalid plan"));
  std::vector<LoadedPlan> phasePlans;
  if (root.phases())
    for (const plan::Phase *phase : *root.phases()) {
      if (Status checked = checkPhase(*phase); !checked.ok())
        return fail(checked.error());
      std::string phaseName =
          fmt::format("{}: phase '{}'", name, phase->name()->str());
      MOE_ASSIGN_OR_RETURN(
          LoadedPlan loaded,
          fromBytes(std::vector<uint8_t>(phase->plan()->begin(),
                                         phase->plan()->end()),
                    phaseName));
      const plan::Plan &own = loaded.plan();
      const plan::Model &model = loaded.model();
      if (own.phases() && own.phases()->size() > 0)
        return makeError("{}: a phase's plan carries no phases of its own",
                         phaseName);
      if (!own.batching() || own.batching()->resident_batch() != phase->slots())
        return makeError("{}: its plan must have the phase's {} slots",
                         phaseName, phase->slots());
      if (model.model_type()->str() != root.model()->model_type()->str() ||
          model.num_layers() != root.model()->num_layers() ||
          model.hidden_size() != root.model()->hidden_size() ||
          model.params()->size() != root.model()->params()->size() ||
          model.ops()->size() != root.model()->ops()->size())
        return makeError("{}: its plan is for another model", phaseName);
      phasePlans.push_back(std::move(loaded));
    }
  LoadedPlan loaded(std::move(bytes));
  loaded.phasePlans_ = std::move(phasePlans);
  return loaded;
}

std::optional<costmodel::GenerationLengths> LoadedPlan::plannedLengths() const {
  const plan::Batching *batching = plan().batching();
  if (!batching)
    return std::nullopt;
  return lengthsOf(*batching).value(); // verified when loaded
}

Result<LoadedPlan> LoadedPlan::fromFile(const std::string &path) {
  if (std::filesystem::is_directory(path))
    return makeError("{}: is a directory, not a plan file", path);
  std::ifstream file(path, std::ios::binary);
  if (!file)
    return makeError("{}: cannot open plan file", path);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(file)),
                             std::istreambuf_iterator<char>());
  if (file.bad())
    return makeError("{}: read error", path);
  return fromBytes(std::move(bytes), path);
}

} // namespace moe
