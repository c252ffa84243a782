//===- Shards.h - one job over several moe-run processes ------------------===//
//
// A launcher (mpirun, srun) starts one moe-run per host over the same
// prompts file; each answers a contiguous shard of the requests into its own
// file beside the output (OUTPUT.shard-S-of-N, its job's description kept
// as OUTPUT.shard-S-of-N.job once every request of it is answered), and the
// last to finish concatenates the shards, in order, into OUTPUT (the whole
// job's description beside it as OUTPUT.job). A process that fails loses
// only its shard's unfinished answers: the same command again finds the
// answered shards, or the merged output, and redoes only the rest. The
// output's directory must be one that every host sees.
//
//===----------------------------------------------------------------------===//
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/support/Result.h"

namespace moe {

struct Shard {
  int64_t index = 0, count = 1;

  bool sharded() const { return count > 1; }
  /// Requests [first, end) of a job of `total`: as even as whole requests
  /// allow.
  int64_t first(int64_t total) const { return total * index / count; }
  int64_t end(int64_t total) const { return total * (index + 1) / count; }
  /// `path` of this shard: path.shard-S-of-N, or path itself unsharded.
  std::string path(const std::string &path) const;
};

/// The shard of this process: `flag` ("S/N", --shard) where given, else
/// the launcher's rank and size (OpenMPI's OMPI_COMM_WORLD_RANK and _SIZE,
/// Slurm's SLURM_PROCID and SLURM_NTASKS), else the whole job.
Result<Shard> shardOfThisProcess(const std::optional<std::string> &flag);

/// The shard's answers are all in their file, by the job `description`.
bool shardAnswered(const std::string &output, const Shard &shard,
                   const std::string &description);
/// The shards are merged into `output`, by the whole job's `description`.
bool shardsMerged(const std::string &output, const std::string &description);

/// Error lines among a shard file's answers.
int64_t failedAnswers(const std::string &path);

struct MergeOutcome {
  bool merged = false;             // by this call
  std::vector<int64_t> unanswered; // shards not answered yet
};

/// Once every shard of `output` is answered (`descriptionOf(k)`: shard k's
/// job description), concatenates them into `output`, records the whole
/// job's `description` beside it and removes them; one process does so,
/// under a lock beside the output.
Result<MergeOutcome>
mergeShards(const std::string &output, int64_t count,
            const std::string &description,
            const std::function<std::string(int64_t)> &descriptionOf);

} // namespace moe
