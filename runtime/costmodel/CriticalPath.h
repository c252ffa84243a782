// Critical-path evaluation of a DAG of copy and compute jobs (MoE-Gen's
// method): finish(v) = max(finish of v's dependencies, finish of the job
// before v on v's stream) + seconds(v). Jobs on one stream run in the order
// they were added, as work enqueued on a CUDA stream does, so the order in
// which a builder adds jobs is the schedule it models.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/support/Result.h"

namespace moe::costmodel {

// Host: the host's cores, attending the sequences the plan gives them (ω).
enum class Stream { Compute, HostToDevice, DeviceToHost, Host };
inline constexpr size_t kNumStreams = 4;

std::string_view streamName(Stream stream);

// What a job does, so reports can sum time per stage.
enum class Stage {
  WeightCopy,
  KvLoad,
  KvStore,
  HiddenLoad,
  HiddenStore,
  Attention,
  Router,
  Experts,
  SharedExperts,
  DenseMlp,
  Norm,
  Embedding,
  LmHead,
  // Residual adds, which the backends time apart; the planner counts them in
  // each module's elementwise work, so no job of its DAGs has this stage.
  Residual,
  // Decode attention on the host's cores over host KV, with the copies of
  // its queries to the host and of its outputs back.
  HostAttention,
};
inline constexpr size_t kNumStages = 15;

std::string_view stageName(Stage stage);

using JobId = size_t;

// What a job acts on, so that a runtime can execute exactly the schedule the
// cost model priced. Indices are -1 where they do not apply.
enum class ExpertShare { All, Resident, Streamed };
struct JobTarget {
  int64_t layer = -1;      // Cost-model layer (0: embedding, last: LM head).
  int64_t module = -1;     // Module index within the layer.
  int64_t microBatch = -1; // Attention micro-batch or prefill chunk.
  int64_t firstSequence = 0;
  int64_t sequences = 0;   // Sequences the job covers (0: all B).
  int64_t buffer = -1;     // Weight-ring slot, KV staging or hidden buffer.
  double bytes = 0;        // Bytes a copy moves.
  ExpertShare experts = ExpertShare::All;
};

struct Job {
  Stream stream = Stream::Compute;
  Stage stage = Stage::Attention;
  double seconds = 0;
  std::vector<JobId> deps; // Jobs added earlier.
  std::string label;       // For reports: "layer 3 attention 2/4".
  JobTarget target;
};

class Dag {
public:
  JobId add(Job job);
  const std::vector<Job> &jobs() const { return jobs_; }
  size_t size() const { return jobs_.size(); }

private:
  std::vector<Job> jobs_;
};

struct Evaluation {
  double makespan = 0;
  std::array<double, kNumStreams> busySeconds{};
  std::array<double, kNumStages> stageSeconds{};
  std::vector<double> start;
  std::vector<double> finish;
  // From the first job to the one that finishes last; each job's start is
  // set by its predecessor here (a dependency or the stream's previous job).
  std::vector<JobId> criticalPath;

  double busy(Stream stream) const {
    return busySeconds[static_cast<size_t>(stream)];
  }
  double stage(Stage stage) const {
    return stageSeconds[static_cast<size_t>(stage)];
  }
};

// Fails on a dependency that is not an earlier job or a negative duration.
Result<Evaluation> evaluate(const Dag &dag);

} // namespace moe::costmodel
