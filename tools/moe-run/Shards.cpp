#include "Shards.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

namespace moe {
namespace {

std::optional<int64_t> parseCount(std::string_view text) {
  int64_t value = -1;
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 0)
    return std::nullopt;
  return value;
}

std::string readFirstLine(const std::string &path) {
  std::ifstream file(path);
  std::string line;
  std::getline(file, line);
  return line;
}

} // namespace

std::string Shard::path(const std::string &path) const {
  if (!sharded())
    return path;
  return path + ".shard-" + std::to_string(index) + "-of-" +
         std::to_string(count);
}

Result<Shard> shardOfThisProcess(const std::optional<std::string> &flag) {
  auto make = [](std::optional<int64_t> index, std::optional<int64_t> count,
                 const std::string &from) -> Result<Shard> {
    if (!index || !count || *count < 1 || *index >= *count)
      return makeError("{}: not a shard S of N processes (0 <= S < N)", from);
    return Shard{*index, *count};
  };
  if (flag) {
    size_t slash = flag->find('/');
    if (slash == std::string::npos)
      return makeError("--shard {}: give S/N, this process's shard S of N",
                       *flag);
    return make(parseCount(std::string_view(*flag).substr(0, slash)),
                parseCount(std::string_view(*flag).substr(slash + 1)),
                "--shard " + *flag);
  }
  for (auto [rank, size] :
       {std::pair{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
        std::pair{"SLURM_PROCID", "SLURM_NTASKS"}}) {
    const char *index = std::getenv(rank);
    const char *count = std::getenv(size);
    if (index && count)
      return make(parseCount(index), parseCount(count),
                  std::string(rank) + "=" + index + ", " + size + "=" + count);
  }
  return Shard{};
}

bool shardAnswered(const std::string &output, const Shard &shard,
                   const std::string &description) {
  std::string path = shard.path(output);
  return std::filesystem::is_regular_file(path) &&
         readFirstLine(path + ".job") == description;
}

bool shardsMerged(const std::string &output, const std::string &description) {
  return std::filesystem::is_regular_file(output) &&
         readFirstLine(output + ".job") == description;
}

int64_t failedAnswers(const std::string &path) {
  std::ifstream file(path);
  std::string line;
  int64_t failed = 0;
  while (std::getline(file, line)) {
    nlohmann::json answer = nlohmann::json::parse(line, nullptr, false);
    failed += answer.is_object() && answer.contains("error") &&
              !answer["error"].is_null();
  }
  return failed;
}

Result<MergeOutcome>
mergeShards(const std::string &output, int64_t count,
            const std::string &description,
            const std::function<std::string(int64_t)> &descriptionOf) {
  std::string lockPath = output + ".merge.lock";
  int fd = ::open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return makeError("{}: cannot create the shards' merge lock", lockPath);
  // Closing the descriptor releases the lock, also when the process dies.
  std::unique_ptr<int, void (*)(int *)> lock(&fd,
                                             [](int *held) { ::close(*held); });
  if (::flock(fd, LOCK_EX) != 0)
    return makeError("{}: cannot lock the shards' merge", lockPath);

  MergeOutcome outcome;
  bool anyShard = false;
  for (int64_t k = 0; k < count; ++k)
    anyShard |= std::filesystem::exists(Shard{k, count}.path(output));
  if (!anyShard) // another process merged them while this one waited
    return outcome;
  for (int64_t k = 0; k < count; ++k)
    if (!shardAnswered(output, Shard{k, count}, descriptionOf(k)))
      outcome.unanswered.push_back(k);
  if (!outcome.unanswered.empty())
    return outcome;

  std::string merging = output + ".merging";
  {
    std::ofstream merged(merging, std::ios::binary | std::ios::trunc);
    for (int64_t k = 0; k < count && merged; ++k) {
      std::ifstream shard(Shard{k, count}.path(output), std::ios::binary);
      merged << shard.rdbuf();
    }
    merged.flush();
    if (!merged)
      return makeError("{}: cannot write the merged answers", merging);
  }
  // The description first: a process starting meanwhile sees the shards
  // answered until they are removed, and the merged output after.
  {
    std::ofstream job(output + ".job", std::ios::trunc);
    job << description << "\n";
    if (!job)
      return makeError("{}.job: cannot write the job's description", output);
  }
  std::error_code error;
  std::filesystem::rename(merging, output, error);
  if (error)
    return makeError("{}: cannot rename it to {}: {}", merging, output,
                     error.message());
  for (int64_t k = 0; k < count; ++k) {
    std::string shard = Shard{k, count}.path(output);
    std::filesystem::remove(shard, error);
    std::filesystem::remove(shard + ".job", error);
  }
  std::filesystem::remove(lockPath, error);
  outcome.merged = true;
  return outcome;
}

} // namespace moe
