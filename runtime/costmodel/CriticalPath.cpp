#include "runtime/costmodel/CriticalPath.h"

#include <algorithm>
#include <cmath>
#include <optional>

namespace moe::costmodel {

std::string_view streamName(Stream stream) {
  switch (stream) {
  case Stream::Compute:
    return "compute";
  case Stream::HostToDevice:
    return "h2d";
  case Stream::DeviceToHost:
    return "d2h";
  case Stream::Host:
    return "host";
  }
  return "unknown";
}

std::string_view stageName(Stage stage) {
  switch (stage) {
  case Stage::WeightCopy:
    return "weight copy";
  case Stage::KvLoad:
    return "KV load";
  case Stage::KvStore:
    return "KV store";
  case Stage::HiddenLoad:
    return "hidden-state load";
  case Stage::HiddenStore:
    return "hidden-state store";
  case Stage::Attention:
    return "attention";
  case Stage::Router:
    return "router";
  case Stage::Experts:
    return "routed experts";
  case Stage::SharedExperts:
    return "shared experts";
  case Stage::DenseMlp:
    return "dense MLP";
  case Stage::Norm:
    return "norm";
  case Stage::Embedding:
    return "embedding";
  case Stage::LmHead:
    return "LM head";
  case Stage::Residual:
    return "residual";
  case Stage::HostAttention:
    return "host attention";
  }
  return "unknown";
}

JobId Dag::add(Job job) {
  jobs_.push_back(std::move(job));
  return jobs_.size() - 1;
}

Result<Evaluation> evaluate(const Dag &dag) {
  const std::vector<Job> &jobs = dag.jobs();
  Evaluation result;
  result.start.resize(jobs.size());
  result.finish.resize(jobs.size());
  // The job that set each job's start time, for the critical path.
  std::vector<std::optional<JobId>> binding(jobs.size());
  std::array<std::optional<JobId>, kNumStreams> lastOnStream;

  for (JobId id = 0; id < jobs.size(); ++id) {
    const Job &job = jobs[id];
    if (!(job.seconds >= 0) || !std::isfinite(job.seconds))
      return makeError("job {} ({}): duration {} is not a finite "
                       "non-negative number",
                       id, job.label, job.seconds);
    double start = 0;
    auto consider = [&](JobId predecessor) {
      if (!binding[id] || result.finish[predecessor] > start) {
        start = result.finish[predecessor];
        binding[id] = predecessor;
      }
    };
    size_t streamIndex = static_cast<size_t>(job.stream);
    if (lastOnStream[streamIndex])
      consider(*lastOnStream[streamIndex]);
    for (JobId dep : job.deps) {
      if (dep >= id)
        return makeError("job {} ({}): dependency {} is not an earlier job", id,
                         job.label, dep);
      consider(dep);
    }
    result.start[id] = start;
    result.finish[id] = start + job.seconds;
    result.busySeconds[streamIndex] += job.seconds;
    result.stageSeconds[static_cast<size_t>(job.stage)] += job.seconds;
    lastOnStream[streamIndex] = id;
  }

  if (jobs.empty())
    return result;
  JobId last = 0;
  for (JobId id = 1; id < jobs.size(); ++id)
    if (result.finish[id] >= result.finish[last])
      last = id;
  result.makespan = result.finish[last];
  for (std::optional<JobId> id = last; id; id = binding[*id])
    result.criticalPath.push_back(*id);
  std::reverse(result.criticalPath.begin(), result.criticalPath.end());
  return result;
}

} // namespace moe::costmodel
