#include "runtime/backends/cuda/backend/KvCaches.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include "runtime/backends/cuda/kernels/Kernels.h"
#include <fmt/format.h>

#include <algorithm>

namespace moe::cuda {

void KvCaches::describe(const model::ResolvedModel &model) {
  dtype = model.kvDtype;
  for (const model::KvCacheSpec &spec : model.kvCaches)
    caches.push_back({spec.rowBytes(dtype)});
  std::vector<bool> readsAll(caches.size(), false);
  for (const model::ResolvedOp &op : model.ops)
    if (const auto *a = std::get_if<model::AttentionSpec>(&op.spec)) {
      KvCache &cache = caches[size_t(a->cache)];
      if (a->window == 0)
        readsAll[size_t(a->cache)] = true;
      cache.readWindow = std::max(cache.readWindow, a->window);
    }
  for (size_t c = 0; c < readsAll.size(); ++c)
    if (readsAll[c])
      caches[c].readWindow = 0;
  firstLatent_ = static_cast<int>(caches.size());
  for (const model::LatentCacheSpec &spec : model.latentCaches)
    caches.push_back({spec.rowBytes(dtype), false});
}

bool KvCaches::anyValues() const {
  return std::any_of(caches.begin(), caches.end(),
                     [](const KvCache &cache) { return cache.hasValues; });
}

size_t KvCaches::stagingBytes(int32_t maxContext, int64_t stagedSlots) const {
  int64_t widest = 0;
  for (const KvCache &cache : caches)
    widest = std::max(widest, cache.rowBytes);
  return size_t(stagedSlots) * maxContext * widest;
}

size_t KvCaches::deviceBytes(int32_t gpuSlots, int32_t maxContext,
                             int64_t stagedSlots, int buffers) const {
  size_t bytes = (anyValues() ? 2 : 1) * buffers *
                 poolAligned(stagingBytes(maxContext, stagedSlots));
  for (const KvCache &cache : caches)
    bytes += (cache.hasValues ? 2 : 1) *
             poolAligned(size_t(gpuSlots) * maxContext * cache.rowBytes);
  return bytes;
}

Status KvCaches::allocate(DeviceArena &arena, PinnedHostPool &pinned,
                          int32_t gpuSlots, int64_t poolRows,
                          int32_t maxContext, int64_t stagedSlots,
                          int buffers) {
  for (KvCache &c : caches) {
    size_t gpuBytes = size_t(gpuSlots) * maxContext * c.rowBytes;
    size_t hostBytes = size_t(poolRows) * size_t(c.rowBytes);
    if (gpuBytes > 0) {
      auto k = arena.allocateArray<uint8_t>(gpuBytes, "k cache");
      if (!k)
        return k.error();
      c.k = *k;
      if (c.hasValues) {
        auto v = arena.allocateArray<uint8_t>(gpuBytes, "v cache");
        if (!v)
          return v.error();
        c.v = *v;
      }
    }
    if (hostBytes > 0) {
      auto k = pinned.allocate(hostBytes, "host k pages");
      if (!k)
        return k.error();
      c.hostK = static_cast<uint8_t *>(*k);
      if (c.hasValues) {
        auto v = pinned.allocate(hostBytes, "host v pages");
        if (!v)
          return v.error();
        c.hostV = static_cast<uint8_t *>(*v);
      }
    }
  }
  size_t staged = stagingBytes(maxContext, stagedSlots);
  if (staged > 0)
    for (int b = 0; b < buffers; ++b) {
      auto k = arena.allocateArray<uint8_t>(staged, "k staging");
      if (!k)
        return k.error();
      stagingK_.push_back(*k);
      uint8_t *v = nullptr;
      if (anyValues()) {
        auto values = arena.allocateArray<uint8_t>(staged, "v staging");
        if (!values)
          return values.error();
        v = *values;
      }
      stagingV_.push_back(v);
    }
  return Status::success();
}

Status KvCaches::createStreams() {
  return moe::cuda::createStreams({&load_, &store_});
}

Status KvCaches::createEvents() {
  MOE_RETURN_IF_ERROR(appendEvents(loaded_, stagingK_.size()));
  MOE_RETURN_IF_ERROR(appendEvents(free_, stagingK_.size()));
  return moe::cuda::createEvents({&ready_, &stored_, &passStart_, &opStart_});
}

Status KvCaches::beginPass(cudaStream_t compute) {
  nextBuffer_ = 0;
  MOE_RETURN_IF_ERROR(passStart_->record(compute));
  return load_->wait(*passStart_);
}

Status
KvCaches::attendHostSlots(cudaStream_t compute, const KvPass &pass,
                          int32_t maxContext, const int32_t *cacheRows,
                          const int32_t *poolRows, const HostPageTable &pages,
                          int layer, const KvCache &cache, const uint8_t *key,
                          const uint8_t *value, BackendCounters &counters,
                          const Attend &attend, const HostAttend &hostAttend) {
  cudaStream_t load = load_->get(), store = store_->get();
  const int64_t rowBytes = cache.rowBytes, page = pages.pageTokens;
  const size_t slotBytes = size_t(maxContext) * rowBytes;
  const int copiesPerRow = cache.hasValues ? 2 : 1;
  if (key) {
    MOE_RETURN_IF_ERROR(ready_->record(compute));
    MOE_CUDA_TRY(cudaStreamWaitEvent(store, ready_->get()));
    MOE_ASSIGN_OR_RETURN(size_t span, trace->start(store));
    int64_t first = pass.gpuRows;
    MOE_CUDA_TRY(kernels::appendKv(key + first * rowBytes,
                                   value ? value + first * rowBytes : nullptr,
                                   poolRows + first, pass.hostRows(), rowBytes,
                                   cache.hostK, cache.hostV, store));
    counters.kvBytesToHost += copiesPerRow * pass.hostRows() * rowBytes;
    MOE_RETURN_IF_ERROR(trace->stop(
        span, store, "d2h KV", [&] { return layerSpanName(layer, "KV store"); },
        "KV store"));
    MOE_RETURN_IF_ERROR(stored_->record(store));
  }
  std::optional<HostAttention::Outputs> hostOutputs;
  if (pass.host.count() > 0) {
    MOE_ASSIGN_OR_RETURN(hostOutputs, hostAttend(key ? &*stored_ : nullptr));
  }
  if (!key || pass.loadsAfterCompute) {
    MOE_RETURN_IF_ERROR(opStart_->record(compute));
    MOE_CUDA_TRY(cudaStreamWaitEvent(load, opStart_->get()));
  }
  cudaMemcpyAttributes order{};
  order.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  size_t orderFrom = 0;
  size_t buffers = stagingK_.size();
  for (size_t m = 0; m < pass.microBatches.size(); ++m) {
    const KvMicroBatch &batch = pass.microBatches[m];
    size_t b = nextBuffer_++ % buffers;
    uint8_t *stagedK = stagingK_[b], *stagedV = stagingV_[b];
    MOE_CUDA_TRY(cudaStreamWaitEvent(load, free_[b].get()));
    MOE_ASSIGN_OR_RETURN(size_t span, trace->start(load));
    copyTo_.clear();
    copyFrom_.clear();
    copyBytes_.clear();
    for (const KvLoad &kvLoad : batch.loads) {
      int64_t end = key ? kvLoad.length : kvLoad.lengthAfter;
      // The slot's first new row, at the position its cache has reached,
      // reads back to its window's start; positions before it stay
      // unloaded.
      int64_t begin =
          cache.readWindow > 0
              ? std::max<int64_t>(0, kvLoad.length - cache.readWindow + 1)
              : 0;
      const int32_t *table = pages.of(kvLoad.hostSlot);
      for (int64_t at = begin, rows; at < end; at += rows) {
        rows = std::min(end - at, page - at % page);
        size_t poolRow = size_t(table[at / page]) * page + at % page;
        size_t stagedRow = kvLoad.local * slotBytes + at * rowBytes;
        for (auto [from, to] :
             {std::pair{cache.hostK, stagedK}, std::pair{cache.hostV, stagedV}})
          if (from) {
            copyTo_.push_back(to + stagedRow);
            copyFrom_.push_back(from + poolRow * rowBytes);
            copyBytes_.push_back(size_t(rows * rowBytes));
          }
        counters.kvBytesToDevice += copiesPerRow * rows * rowBytes;
      }
    }
    if (!copyTo_.empty())
      MOE_CUDA_TRY(cudaMemcpyBatchAsync(copyTo_.data(), copyFrom_.data(),
                                        copyBytes_.data(), copyTo_.size(),
                                        &order, &orderFrom, 1, load));
    MOE_RETURN_IF_ERROR(trace->stop(
        span, load, "h2d KV",
        [&] {
          return layerSpanName(
              layer, fmt::format("KV load {} (staging buffer {})", m, b));
        },
        "KV load"));
    MOE_RETURN_IF_ERROR(loaded_[b].record(load));
    MOE_CUDA_TRY(cudaStreamWaitEvent(compute, loaded_[b].get()));
    if (key)
      MOE_CUDA_TRY(
          kernels::appendKv(key + batch.firstRow * rowBytes,
                            value ? value + batch.firstRow * rowBytes : nullptr,
                            cacheRows + batch.firstRow, batch.rows, rowBytes,
                            stagedK, stagedV, compute));
    MOE_RETURN_IF_ERROR(attend(batch.firstRow, batch.rows, stagedK, stagedV));
    MOE_RETURN_IF_ERROR(free_[b].record(compute));
  }
  if (key)
    MOE_CUDA_TRY(cudaStreamWaitEvent(compute, stored_->get()));
  if (hostOutputs)
    MOE_RETURN_IF_ERROR(HostAttention::collect(compute, *hostOutputs));
  return Status::success();
}

} // namespace moe::cuda
