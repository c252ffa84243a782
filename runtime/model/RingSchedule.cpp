#include "runtime/model/RingSchedule.h"

#include "runtime/model/SchedulePool.h"

#include <algorithm>

namespace moe::model {
namespace {

// Resolves one step's jobs: checks each against its op and collects the
// ring copies. `first` is the step that sets the ops' buffers and turns; the
// other must agree with it.
class StepResolver {
public:
  StepResolver(const ResolvedModel &model, int ringPool, const char *name,
               bool first, RingSchedule &ring)
      : model_(model), ringPool_(ringPool), name_(name), first_(first),
        ring_(ring), loads_(model.ops.size(), 0) {}

  Result<RingStep> resolve(const plan::StepSchedule &step) {
    const auto &jobs = *step.jobs();
    opOfJob_.assign(jobs.size(), -1);
    turns_.assign(size_t(ring_.buffers), Turn{});
    RingStep out;
    for (uint32_t i = 0; i < jobs.size(); ++i) {
      Status added = add(jobs, i, out);
      if (!added.ok())
        return added.error().withContext(fmt::format("{} job {}", name_, i));
    }
    for (size_t op = 0; op < loads_.size(); ++op)
      if ((ring_.bufferOf[op] >= 0) != (loads_[op] > 0))
        return makeError("{}: op {} is copied into the weight ring in one "
                         "step and not in the other",
                         name_, op);
    return out;
  }

private:
  // The ops whose weights fill one ring buffer together.
  struct Turn {
    int first = -1, last = -1;
    std::vector<int> after;
  };

  Status add(const flatbuffers::Vector<flatbuffers::Offset<plan::Job>> &jobs,
             uint32_t index, RingStep &out) {
    const plan::Job &job = *jobs.Get(index);
    // KV and hidden-state copies follow the batching's micro-batches, which
    // the executor derives from the rows it is given.
    if (job.kind() != plan::JobKind::compute &&
        job.kind() != plan::JobKind::copy_weights)
      return Status::success();
    auto found = model_.opOfModule.find({job.layer(), job.module_()});
    if (found == model_.opOfModule.end())
      return makeError("names layer {} module {}, which is no op's module",
                       job.layer(), job.module_());
    int op = found->second;
    opOfJob_[index] = op;
    const ResolvedOp &resolved = model_.ops[size_t(op)];
    std::string_view stage = costmodel::stageName(resolved.stage);
    if (job.kind() == plan::JobKind::compute) {
      if (!job.stage() || job.stage()->string_view() != stage)
        return makeError("computes '{}' on op {}, whose stage is '{}'",
                         job.stage() ? job.stage()->str() : "", op, stage);
      return Status::success();
    }
    if (job.pool() < 0) {
      if (resolved.kind() != OpKind::embedding)
        return makeError("copies op {}'s weights outside the weight ring; "
                         "only the embedding is read in place",
                         op);
      return Status::success();
    }
    if (job.pool() != ringPool_)
      return makeError("copies weights into pool {}, which is not the weight "
                       "ring",
                       job.pool());
    RingLoad load{op, {}};
    if (job.after())
      for (uint32_t dep : *job.after()) {
        if (jobs.Get(dep)->kind() != plan::JobKind::compute)
          return makeError("waits for job {}, which computes nothing; a copy "
                           "into the ring waits for compute jobs only",
                           dep);
        load.after.push_back(opOfJob_[dep]);
      }
    std::sort(load.after.begin(), load.after.end());
    load.after.erase(std::unique(load.after.begin(), load.after.end()),
                     load.after.end());
    if (!load.after.empty() && load.after.back() >= op)
      return makeError("copies op {}'s weights after op {} has run, which "
                       "runs later",
                       op, load.after.back());
    if (++loads_[size_t(op)] > 1)
      return makeError("copies op {}'s weights twice in one step", op);
    int buffer = job.buffer();
    Turn &turn = turns_[size_t(buffer)];
    if (turn.first < 0 || turn.after != load.after) {
      if (turn.first >= 0 &&
          (load.after.empty() || load.after.back() < turn.last))
        return makeError("overwrites ring buffer {} before op {}, which "
                         "reads it, has run",
                         buffer, turn.last);
      turn = Turn{op, op, load.after};
    }
    turn.last = std::max(turn.last, op);
    if (first_) {
      ring_.bufferOf[size_t(op)] = buffer;
      ring_.turnOf[size_t(op)] = turn.first;
    } else if (ring_.bufferOf[size_t(op)] != buffer ||
               ring_.turnOf[size_t(op)] != turn.first) {
      return makeError("puts op {} in ring buffer {} beside op {}; the "
                       "decode step puts it in buffer {} beside op {}",
                       op, buffer, turn.first, ring_.bufferOf[size_t(op)],
                       ring_.turnOf[size_t(op)]);
    }
    out.loads.push_back(std::move(load));
    return Status::success();
  }

  const ResolvedModel &model_;
  int ringPool_;
  const char *name_;
  bool first_;
  RingSchedule &ring_;
  std::vector<int> loads_;   // per op: its copies in this step
  std::vector<int> opOfJob_; // per job
  std::vector<Turn> turns_;  // per buffer: the turn filling it now
};

} // namespace

bool RingSchedule::awaited(int op) const {
  for (const RingStep *step : {&decode, &prefill})
    for (const RingLoad &load : step->loads)
      if (std::find(load.after.begin(), load.after.end(), op) !=
          load.after.end())
        return true;
  return false;
}

Result<RingSchedule> resolveRingSchedule(const plan::Plan &plan,
                                         const ResolvedModel &model) {
  RingSchedule ring;
  ring.bufferOf.assign(model.ops.size(), -1);
  ring.turnOf.assign(model.ops.size(), -1);
  const plan::Schedule *schedule = plan.schedule();
  if (!schedule)
    return ring;
  MOE_ASSIGN_OR_RETURN(int ringPool,
                       onlyPool(*schedule, plan::PoolKind::weight_ring));
  if (ringPool >= 0) {
    ring.buffers = schedule->pools()->Get(ringPool)->count();
    ring.bufferBytes = schedule->pools()->Get(ringPool)->buffer_bytes();
  }
  auto decode = StepResolver(model, ringPool, "decode", true, ring)
                    .resolve(*schedule->decode());
  if (!decode)
    return decode.error().withContext("schedule");
  ring.decode = std::move(*decode);
  auto prefill = StepResolver(model, ringPool, "prefill", false, ring)
                     .resolve(*schedule->prefill());
  if (!prefill)
    return prefill.error().withContext("schedule");
  ring.prefill = std::move(*prefill);
  return ring;
}

} // namespace moe::model
