// The KV caches of the attention layers and the host slots' pipeline. K and
// V of the GPU slots [0, gpuSlots) live in the kv arena, [slot, position]
// rows each; those of the others in a pool of pinned host memory, in pages
// (model::hostKvPageTokens rows) that the slots take as they grow (KvPages:
// one page number serves every layer's cache). Rows are in the plan's format
// (runtime/model/KvFormat.h: bf16 elements, or fp8 codes and scales). Host
// slots' rows are attended a micro-batch at a time (ChunkRows.h lays them
// out): the micro-batch's cached K/V are loaded page by page into a staging
// buffer ([staging slot, position] rows) on the load stream, in one batch
// of copies, while earlier micro-batches attend; new rows are written to
// their pool rows by a kernel on the store stream (a decode step's are one
// row a slot, scattered over the pool: too small for copies each). The
// staging buffers are taken in turn across the layers of a pass, as the
// plan's schedule takes its kv_staging pool (model::KvStagingSchedule,
// which checks that the schedule does so).
#pragma once

#include "runtime/backends/cuda/Memory.h"
#include "runtime/backends/cuda/Stream.h"
#include "runtime/backends/cuda/backend/ChunkRows.h"
#include "runtime/backends/cuda/backend/HostAttention.h"
#include "runtime/backends/cuda/backend/StepTrace.h"
#include "runtime/engine/Backend.h"
#include "runtime/model/KvStagingSchedule.h"
#include "runtime/model/ResolvedModel.h"

#include <functional>
#include <optional>
#include <vector>

namespace moe::cuda {

struct KvCache {
  int64_t rowBytes = 0;  // of a token's K (V) row
  bool hasValues = true; // MLA caches only the latent (as K)
  // > 0: every layer reading the cache attends at most this many positions
  // (a sliding window), so host slots load only those.
  int64_t readWindow = 0;
  uint8_t *k = nullptr, *v = nullptr;
  uint8_t *hostK = nullptr, *hostV = nullptr; // the pool's pages
};

// The host slots' pages of pageTokens rows: per host slot its pages in
// position order (KvPages::table), pagesPerSlot entries, -1 past those it
// holds.
struct HostPageTable {
  int64_t pageTokens = 0, pagesPerSlot = 0;
  std::vector<int32_t> pages;
  const int32_t *of(int64_t hostSlot) const {
    return pages.data() + hostSlot * pagesPerSlot;
  }
};

class KvCaches {
public:
  model::KvDtype dtype = model::KvDtype::bf16;
  // The schedule's kv_staging pool: as many staging buffers as it has (two
  // for a plan without a schedule).
  model::KvStagingSchedule schedule;
  int stagingBuffers() const {
    return schedule.buffers > 0 ? schedule.buffers : 2;
  }

  // The resolved model's softmax attention caches, then its latent (MLA)
  // caches, which cache only K.
  std::vector<KvCache> caches;
  StepTrace *trace = nullptr; // spans of a traced step's copies

  void describe(const model::ResolvedModel &model);
  // The index among `caches` of the model's latent cache `latent`.
  int latentCache(int latent) const { return firstLatent_ + latent; }

  // Device bytes of the GPU slots' caches and of `buffers` staging buffers
  // for `stagedSlots` host slots each.
  size_t deviceBytes(int32_t gpuSlots, int32_t maxContext, int64_t stagedSlots,
                     int buffers) const;
  // The GPU slots' caches and the staging buffers in `arena`, the host
  // pool of `poolRows` rows in `pinned`.
  Status allocate(DeviceArena &arena, PinnedHostPool &pinned, int32_t gpuSlots,
                  int64_t poolRows, int32_t maxContext, int64_t stagedSlots,
                  int buffers);
  // The load and store streams; the events of the pipeline (after
  // allocate(): one pair per staging buffer).
  Status createStreams();
  Status createEvents();

  // Loads of this pass come after everything of the previous one.
  Status beginPass(cudaStream_t compute);

  // Rows [first, first + count) of a chunk against the K/V array k / v.
  using Attend = std::function<Status(int64_t first, int64_t count,
                                      const uint8_t *k, const uint8_t *v)>;
  // The pass's host-attended rows (KvPass::host), queued once their new
  // K/V rows' store is (kvStored: its event, null when the op stores
  // none); returns the outputs the compute stream collects at the op's end.
  using HostAttend =
      std::function<Result<HostAttention::Outputs>(const Event *kvStored)>;
  // Host slots' rows, a micro-batch at a time: its slots' cached K/V are
  // loaded into a staging buffer on the load stream while earlier
  // micro-batches attend, then the new rows are appended there and
  // attended. A layer that owns its KV (`key` set) stores the new rows to
  // their pool rows (`poolRows`, device, per chunk row) on the store
  // stream, and the compute stream waits for that before the op's scratch,
  // which the store reads, is freed. A layer sharing an earlier layer's KV
  // loads the rows that layer stored. `layer` names the copies in traces.
  // key and value are the new rows in the cache's format. The pass's
  // host-attended rows go to `hostAttend` between the stores and the loads.
  Status attendHostSlots(cudaStream_t compute, const KvPass &pass,
                         int32_t maxContext, const int32_t *cacheRows,
                         const int32_t *poolRows, const HostPageTable &pages,
                         int layer, const KvCache &cache, const uint8_t *key,
                         const uint8_t *value, BackendCounters &counters,
                         const Attend &attend, const HostAttend &hostAttend);

private:
  size_t stagingBytes(int32_t maxContext, int64_t stagedSlots) const;
  bool anyValues() const;

  int firstLatent_ = 0;
  std::optional<Stream> load_;                 // host-to-device: cached KV
  std::optional<Stream> store_;                // device-to-host: new rows
  std::vector<uint8_t *> stagingK_, stagingV_; // per staging buffer
  std::vector<Event> loaded_, free_;           // per staging buffer
  size_t nextBuffer_ = 0; // the pass's next staging buffer, in turn
  // A micro-batch's page copies, gathered for one batch call.
  std::vector<void *> copyTo_;
  std::vector<const void *> copyFrom_;
  std::vector<size_t> copyBytes_;
  std::optional<Event> ready_, stored_, opStart_, passStart_;
};

} // namespace moe::cuda
