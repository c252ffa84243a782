#include "runtime/model/KvStagingSchedule.h"

#include "runtime/model/SchedulePool.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

namespace moe::model {
namespace {

class StagingResolver {
public:
  StagingResolver(const ResolvedModel &model, int pool, int buffers)
      : model_(model), pool_(pool), buffers_(buffers) {}

  // Checks the step's jobs that use the staging pool; its kv_load count.
  Result<int64_t> resolve(const plan::StepSchedule &step) {
    const auto &jobs = *step.jobs();
    for (uint32_t i = 0; i < jobs.size(); ++i) {
      Status checked = check(jobs, i);
      if (!checked.ok())
        return checked.error().withContext(fmt::format("job {}", i));
    }
    return int64_t(loadBuffer_.size());
  }

private:
  using MicroBatch = std::tuple<int, int, int>; // (layer, module, micro)

  Status check(const flatbuffers::Vector<flatbuffers::Offset<plan::Job>> &jobs,
               uint32_t index) {
    const plan::Job &job = *jobs.Get(index);
    MicroBatch micro{job.layer(), job.module_(), job.micro_batch()};
    bool staged = pool_ >= 0 && job.pool() == pool_;
    switch (job.kind()) {
    case plan::JobKind::kv_load:
      return checkLoad(job, micro);
    case plan::JobKind::kv_store:
    case plan::JobKind::compute: {
      if (!staged)
        return Status::success();
      auto load = loadOf_.find(micro);
      if (load == loadOf_.end())
        return makeError("uses staging buffer {}, which no load of its "
                         "micro-batch filled",
                         job.buffer());
      int filled = loadBuffer_[size_t(load->second)];
      if (job.buffer() != filled)
        return makeError("uses staging buffer {}; its micro-batch's KV was "
                         "loaded into buffer {}",
                         job.buffer(), filled);
      if (job.kind() == plan::JobKind::kv_store)
        storeOf_[size_t(load->second)] = int64_t(index);
      return Status::success();
    }
    default:
      return Status::success();
    }
  }

  Status checkLoad(const plan::Job &job, const MicroBatch &micro) {
    if (pool_ < 0 || job.pool() != pool_)
      return makeError("loads KV into pool {}, which is not a kv_staging pool",
                       job.pool());
    auto op = model_.opOfModule.find({job.layer(), job.module_()});
    bool keepsKv = false;
    if (op != model_.opOfModule.end()) {
      OpKind kind = model_.ops[size_t(op->second)].kind();
      keepsKv = kind == OpKind::attention || kind == OpKind::latentAttention;
    }
    if (!keepsKv)
      return makeError("loads KV for layer {} module {}, which keeps no KV "
                       "cache",
                       job.layer(), job.module_());
    if (job.sequences() <= 0)
      return makeError("loads the KV of {} sequences", job.sequences());
    size_t n = loadBuffer_.size();
    int turn = int(n % size_t(buffers_));
    if (job.buffer() != turn)
      return makeError("loads KV into staging buffer {}; the executor takes "
                       "the buffers in turn, and this load's is buffer {}",
                       job.buffer(), turn);
    if (n >= size_t(buffers_)) {
      int64_t store = storeOf_[n - size_t(buffers_)];
      bool waits =
          job.after() && std::find(job.after()->begin(), job.after()->end(),
                                   uint32_t(store)) != job.after()->end();
      if (store >= 0 && !waits)
        return makeError("loads KV into staging buffer {} without waiting "
                         "for job {}, which stores the rows of the buffer's "
                         "previous micro-batch",
                         turn, store);
    }
    loadOf_[micro] = int(n);
    loadBuffer_.push_back(turn);
    storeOf_.push_back(-1);
    return Status::success();
  }

  const ResolvedModel &model_;
  int pool_, buffers_;
  std::map<MicroBatch, int> loadOf_; // the latest load of each micro-batch
  std::vector<int> loadBuffer_;      // per load
  std::vector<int64_t> storeOf_;     // per load: its store job, -1 if none
};

} // namespace

Result<KvStagingSchedule> resolveKvStagingSchedule(const plan::Plan &plan,
                                                   const ResolvedModel &model) {
  KvStagingSchedule staging;
  const plan::Schedule *schedule = plan.schedule();
  if (!schedule)
    return staging;
  MOE_ASSIGN_OR_RETURN(int pool,
                       onlyPool(*schedule, plan::PoolKind::kv_staging));
  if (pool >= 0) {
    staging.buffers = schedule->pools()->Get(pool)->count();
    staging.bufferBytes = schedule->pools()->Get(pool)->buffer_bytes();
  }
  auto decode = StagingResolver(model, pool, staging.buffers)
                    .resolve(*schedule->decode());
  if (!decode)
    return decode.error().withContext("schedule: decode");
  staging.decodeLoads = *decode;
  auto prefill = StagingResolver(model, pool, staging.buffers)
                     .resolve(*schedule->prefill());
  if (!prefill)
    return prefill.error().withContext("schedule: prefill");
  return staging;
}

} // namespace moe::model
