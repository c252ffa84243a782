#include "runtime/backends/cuda/backend/ChunkedPass.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include <algorithm>
#include <chrono>

namespace moe::cuda {

ChunkedPass::ChunkedPass(BackendState &state, int64_t perExpertGemmRows,
                         const StepBatch &batch, int64_t first, int64_t end,
                         size_t firstLogit, size_t endLogit, HeadOutput out)
    : s_(state), program_(state.program), perExpertGemmRows_(perExpertGemmRows),
      batch_(batch), first_(first), end_(end), rows_(end - first),
      firstLogit_(firstLogit), endLogit_(endLogit), out_(out),
      prefill_(isPrefill(batch.rows)),
      microBatch_(prefill_ ? state.prefillMicroBatch : state.decodeMicroBatch),
      stream_(state.stream->get()) {}

Status ChunkedPass::run() {
  cutChunks();
  layOutRows();
  movedBefore_ = s_.counters.weightBytesToDevice + s_.counters.kvBytesToDevice;
  std::optional<StepGraphs::Shape> shape;
  if (replayable()) {
    chunkSpans_[0] = decodeSpan(chunkSpans_[0], s_.maxContext);
    int64_t logitRows = int64_t(endLogit_ - firstLogit_);
    bool sampled = out_.logits != nullptr;
    if (s_.graphs.enabled() && !s_.trace.active() &&
        (!sampled || s_.graphs.holdsLogits(logitRows)))
      shape = StepGraphs::Shape{rows_, logitRows, chunkSpans_[0], sampled};
  }
  if (shape && !s_.graphs.has(*shape) && s_.graphs.shouldCapture(*shape))
    MOE_RETURN_IF_ERROR(capture(*shape));
  if (shape && s_.graphs.has(*shape))
    return replay(*shape);
  if (shape)
    s_.graphs.ranEagerly(*shape);
  if (!prefill_)
    ++s_.counters.eagerDecodePasses;
  MOE_RETURN_IF_ERROR(enqueue());
  return finish();
}

// A decode pass in one chunk whose weights and KV are on the GPU and whose
// ops never wait for the host: its work stays on the compute stream.
bool ChunkedPass::replayable() const {
  return !prefill_ && chunks_ == 1 && !program_.streamsWeights &&
         kvPasses_[0].gpuRows == rows_ &&
         !program_.waitsForHost(rows_, perExpertGemmRows_);
}

// The pass captured, not run: its metadata read from the graphs' pinned
// input, its tokens or logits written to their pinned output. A capture
// that fails leaves the shape to eager passes.
Status ChunkedPass::capture(const StepGraphs::Shape &shape) {
  auto started = std::chrono::steady_clock::now();
  HeadOutput out = out_;
  out_ = shape.sampled ? HeadOutput{s_.graphs.logits(), nullptr}
                       : HeadOutput{nullptr, s_.graphs.output()};
  size_t inUse = s_.memory.inUse;
  MOE_CUDA_TRY(
      cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  capturing_ = true;
  s_.memory.beginCapture();
  Status enqueued = enqueue();
  cudaGraph_t graph = nullptr;
  cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
  // Every allocation freed within the pass: the graph can run again.
  bool kept = enqueued.ok() && ended == cudaSuccess && s_.memory.inUse == inUse;
  s_.memory.endCapture(kept);
  capturing_ = false;
  out_ = out;
  if (!kept) {
    (void)cudaGetLastError();
    if (graph)
      (void)cudaGraphDestroy(graph);
    s_.graphs.refuse(shape);
    ++s_.counters.graphCaptureFailures;
    return Status::success();
  }
  MOE_RETURN_IF_ERROR(
      s_.graphs.add(shape, graph, s_.timer.timed(), s_.counters));
  s_.counters.graphCaptureSeconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
          .count();
  return Status::success();
}

Status ChunkedPass::replay(const StepGraphs::Shape &shape) {
  std::copy(meta_.begin(), meta_.end(), s_.graphs.input());
  MOE_RETURN_IF_ERROR(
      s_.graphs.replay(shape, stream_, s_.memory.pool, s_.timer, s_.counters));
  MOE_RETURN_IF_ERROR(finish());
  if (shape.sampled)
    std::copy_n(s_.graphs.logits(), shape.logits * program_.vocab, out_.logits);
  else
    std::copy_n(s_.graphs.output(), shape.logits, out_.tokens);
  return Status::success();
}

Status ChunkedPass::enqueue() {
  MOE_RETURN_IF_ERROR(uploadRows());
  MOE_RETURN_IF_ERROR(planParking());
  MOE_RETURN_IF_ERROR(s_.ring.beginPass(prefill_, s_.counters));
  s_.timer.beginPass();
  values_.assign(program_.numValues, DeviceValue{});
  owned_.assign(program_.numValues, {});
  for (int v = 0; v < program_.numValues; ++v)
    values_[v].width = program_.valueWidths[v];
  for (const auto &[segmentBegin, segmentEnd] : program_.segments) {
    for (size_t c = 0; c < chunks_; ++c)
      MOE_RETURN_IF_ERROR(runChunk(segmentBegin, segmentEnd, c));
    MOE_RETURN_IF_ERROR(endSegment());
  }
  return s_.memory.free(base_, stream_);
}

// Chunks of what the step memory holds, cut at slot boundaries where
// possible (a slot's second part continues its cache).
void ChunkedPass::cutChunks() {
  int64_t chunkLimit = program_.chunkRowLimit(rows_, s_.memory.limit);
  cuts_ = cutAtSlots(batch_.rows, first_, end_, chunkLimit);
  for (int64_t &cut : cuts_) // pass-relative
    cut -= first_;
  chunks_ = cuts_.size() - 1;
}

void ChunkedPass::layOutRows() {
  meta_.assign(size_t(5 * rows_) + (endLogit_ - firstLogit_), 0);
  int32_t *tokens = meta_.data(), *attnSlots = tokens + rows_,
          *positions = attnSlots + rows_, *cacheRows = positions + rows_,
          *poolRows = cacheRows + rows_;
  chunkLogits_ = {firstLogit_};
  for (size_t c = 0; c < chunks_; ++c) {
    int64_t from = cuts_[c], to = cuts_[c + 1];
    int32_t span = 0;
    int64_t runs = 0;
    for (int64_t r = first_ + from; r < first_ + to; ++r) {
      span = std::max(span, batch_.rows[r].position + 1);
      runs +=
          r == first_ + from || batch_.rows[r].slot != batch_.rows[r - 1].slot;
    }
    chunkSpans_.push_back(span);
    chunkRowsPerSlot_.push_back((to - from) / std::max<int64_t>(runs, 1));
    kvPasses_.push_back(chunkRows(
        batch_, first_ + from, first_ + to, s_.gpuSlots, s_.hostAttendedSlot,
        s_.maxContext, microBatch_, *s_.kvPages, tokens + from,
        attnSlots + from, positions + from, cacheRows + from, poolRows + from));
    // A slot split across chunks loads what the earlier chunk stored.
    kvPasses_.back().loadsAfterCompute = c > 0;
    size_t logit = chunkLogits_.back();
    for (; logit < endLogit_ && batch_.logitRows[logit] < first_ + to; ++logit)
      meta_[size_t(5 * rows_) + (logit - firstLogit_)] =
          static_cast<int32_t>(batch_.logitRows[logit] - first_ - from);
    chunkLogits_.push_back(logit);
  }
}

Status ChunkedPass::uploadRows() {
  auto device =
      s_.memory.allocate(meta_.size() * sizeof(int32_t), "batch", stream_);
  if (!device)
    return device.error();
  base_ = static_cast<int32_t *>(*device);
  MOE_CUDA_TRY(cudaMemcpyAsync(
      base_, capturing_ ? s_.graphs.input() : meta_.data(),
      meta_.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  // A captured pass keeps its rows' KV on the GPU: the KV streams stay out
  // of its graph.
  return capturing_ ? Status::success() : s_.kv.beginPass(stream_);
}

Status ChunkedPass::planParking() {
  parkOffset_.assign(program_.numValues, SIZE_MAX);
  parkedForm_.assign(program_.numValues, ValueForm::fp32);
  if (chunks_ > 1) {
    int64_t widest = 0;
    for (const auto &[begin, stop] : program_.segments)
      for (int v = 1; v < program_.numValues; ++v)
        if (program_.crossesSegment(v, begin, stop))
          widest = std::max(widest, program_.valueWidths[v]);
    size_t region = size_t(rows_ * widest);
    std::vector<int> holders; // per region: the value parked there, or -1
    for (const auto &[begin, stop] : program_.segments) {
      for (int &holder : holders)
        if (holder >= 0 && program_.lastUse[holder] < int(begin))
          holder = -1;
      for (int v = 1; v < program_.numValues; ++v) {
        if (!program_.crossesSegment(v, begin, stop))
          continue;
        auto free = std::find(holders.begin(), holders.end(), -1);
        if (free == holders.end())
          free = holders.insert(holders.end(), -1);
        *free = v;
        parkOffset_[v] = size_t(free - holders.begin()) * region;
      }
    }
    MOE_RETURN_IF_ERROR(s_.parking.reserve(holders.size() * region * 4, rows_));
  }
  parked_ = s_.parking.buffer();
  return Status::success();
}

Step ChunkedPass::stepFor(size_t c) {
  int64_t from = cuts_[c];
  size_t logits = chunkLogits_[c] - firstLogit_;
  return Step{
      .memory = s_.memory,
      .gemm = *s_.gemm,
      .stream = stream_,
      .rows = cuts_[c + 1] - from,
      .attnSlots = base_ + rows_ + from,
      .positions = base_ + 2 * rows_ + from,
      .cacheRows = base_ + 3 * rows_ + from,
      .poolRows = base_ + 4 * rows_ + from,
      .logitRows = base_ + 5 * rows_ + logits,
      .logitCount = static_cast<int64_t>(chunkLogits_[c + 1] - chunkLogits_[c]),
      .head = out_.logits
                  ? HeadOutput{out_.logits + logits * program_.vocab, nullptr}
                  : HeadOutput{nullptr, out_.tokens + logits},
      .maxContext = s_.maxContext,
      .maxSpan = chunkSpans_[c],
      .rowsPerSlot = chunkRowsPerSlot_[c],
      .smCount = s_.smCount,
      .perExpertGemmRows = perExpertGemmRows_,
      .expertMicroBatch = s_.expertMicroBatch,
      .fp8ExpertInputs = s_.fp8ExpertInputs,
      .gptOssNorm = program_.gptOssNorm,
      .floats = s_.floatsOnDevice,
      .lightningStates = s_.lightningStates,
      .kv = s_.kv,
      .kvPass = kvPasses_[c],
      .hostPages = s_.hostPages,
      .host = s_.host,
      .counters = s_.counters};
}

Status ChunkedPass::runChunk(size_t segmentBegin, size_t segmentEnd, size_t c) {
  Step step = stepFor(c);
  values_[0].i = base_ + cuts_[c];
  if (chunks_ > 1)
    MOE_RETURN_IF_ERROR(bringBackParked(segmentBegin, c));
  for (size_t index = segmentBegin; index < segmentEnd; ++index)
    MOE_RETURN_IF_ERROR(launch(index, c, step));
  if (chunks_ > 1)
    MOE_RETURN_IF_ERROR(parkChunk(segmentBegin, segmentEnd, c));
  return Status::success();
}

Status ChunkedPass::launch(size_t index, size_t c, Step &step) {
  const CompiledOp &op = program_.ops[index];
  step.layer = op.layer;
  if (op.streams && c == 0) {
    auto waitTiming = s_.timer.start(kWeightWaitStage, stream_);
    if (!waitTiming)
      return waitTiming.error();
    MOE_ASSIGN_OR_RETURN(size_t span, s_.trace.start(stream_));
    MOE_RETURN_IF_ERROR(s_.ring.waitForWeights(int(index), *s_.stream));
    MOE_RETURN_IF_ERROR(s_.timer.stop(*waitTiming, stream_));
    MOE_RETURN_IF_ERROR(s_.trace.stop(
        span, stream_, "compute",
        [&] { return layerSpanName(op.layer, "weight wait"); },
        stageName(kWeightWaitStage)));
  }
  auto opTiming = s_.timer.start(size_t(op.stage), stream_);
  if (!opTiming)
    return opTiming.error();
  MOE_ASSIGN_OR_RETURN(size_t span, s_.trace.start(stream_));
  Status ran = runOp(step, op.op, op.operands, op.results, values_);
  if (!ran.ok())
    return ran.error().withContext(fmt::format("op {}", index));
  MOE_RETURN_IF_ERROR(s_.timer.stop(*opTiming, stream_));
  std::string_view stage = costmodel::stageName(op.stage);
  MOE_RETURN_IF_ERROR(s_.trace.stop(
      span, stream_, "compute", [&] { return layerSpanName(op.layer, stage); },
      stage));
  if (c + 1 == chunks_ && s_.ring.awaited(int(index)))
    MOE_RETURN_IF_ERROR(s_.ring.finished(int(index), stream_, s_.counters));
  return keepResults(index, step);
}

// The op's allocations belong to the values they hold; the rest was
// scratch. Values nobody reads again are freed.
Status ChunkedPass::keepResults(size_t index, Step &step) {
  const CompiledOp &op = program_.ops[index];
  for (void *ptr : step.made) {
    int holder = -1;
    for (int v : op.operands)
      if (values_[v].a == ptr || values_[v].f == ptr)
        holder = v;
    for (int v : op.results)
      if (values_[v].a == ptr || values_[v].f == ptr || values_[v].i == ptr)
        holder = v;
    if (holder >= 0)
      owned_[holder].push_back(ptr);
    else
      MOE_RETURN_IF_ERROR(s_.memory.free(ptr, stream_));
  }
  step.made.clear();
  step.partials = nullptr;
  step.partialBytes = 0;
  for (int v : op.results)
    values_[v].form = values_[v].written();
  for (int v = 1; v < program_.numValues; ++v)
    if (!owned_[v].empty() && program_.lastUse[v] <= static_cast<int>(index))
      MOE_RETURN_IF_ERROR(freeValue(v));
  return Status::success();
}

// The chunk's parked values back on the device (the first chunk's now, the
// next chunk's ahead).
Status ChunkedPass::bringBackParked(size_t segmentBegin, size_t c) {
  auto parkedTiming = s_.timer.start(kParkedStage, stream_);
  if (!parkedTiming)
    return parkedTiming.error();
  MOE_RETURN_IF_ERROR(takeBackParked(c % 2));
  if (c == 0)
    MOE_RETURN_IF_ERROR(restoreChunk(segmentBegin, 0));
  if (c + 1 < chunks_)
    MOE_RETURN_IF_ERROR(restoreChunk(segmentBegin, c + 1));
  if (!restored_[c % 2].empty())
    MOE_RETURN_IF_ERROR(s_.stream->wait(*s_.parking.chunkRestored[c % 2]));
  for (const auto &[v, buffer, bytes] : restored_[c % 2]) {
    owned_[v].push_back(buffer);
    values_[v].setBuffer(parkedForm_[v], buffer);
  }
  restored_[c % 2].clear();
  return s_.timer.stop(*parkedTiming, stream_);
}

Status ChunkedPass::takeBackParked(size_t parity) {
  if (parkPending_[parity] == 0)
    return Status::success();
  MOE_RETURN_IF_ERROR(s_.stream->wait(*s_.parking.chunkParked[parity]));
  s_.memory.release(parkPending_[parity]);
  parkPending_[parity] = 0;
  return Status::success();
}

// A chunk's values made by earlier segments, copied back from the parking
// buffer on the restore stream while the chunk before it computes. The
// buffers are allocated on the compute stream, which the restore stream
// then follows: it has waited for the previous segment's parking.
Status ChunkedPass::restoreChunk(size_t segmentBegin, size_t c) {
  std::vector<Restored> &into = restored_[c % 2];
  into.clear();
  int64_t from = cuts_[c], count = cuts_[c + 1] - from;
  for (int v = 1; v < program_.numValues; ++v) {
    if (!program_.restoredIn(v, segmentBegin))
      continue;
    size_t bytes =
        size_t(count * program_.valueWidths[v]) * elementBytes(parkedForm_[v]);
    auto buffer = s_.memory.allocate(bytes, "parked value", stream_);
    if (!buffer)
      return buffer.error();
    into.push_back({v, *buffer, bytes});
  }
  if (into.empty())
    return Status::success();
  Parking &parking = s_.parking;
  MOE_RETURN_IF_ERROR(parking.restoreReady->record(stream_));
  MOE_RETURN_IF_ERROR(parking.restore->wait(*parking.restoreReady));
  MOE_ASSIGN_OR_RETURN(size_t span, s_.trace.start(parking.restore->get()));
  for (const auto &[v, buffer, bytes] : into) {
    MOE_CUDA_TRY(cudaMemcpyAsync(
        buffer,
        parked_ + (parkOffset_[v] + size_t(from * program_.valueWidths[v])) * 4,
        bytes, cudaMemcpyHostToDevice, parking.restore->get()));
    s_.counters.hiddenBytesToDevice += int64_t(bytes);
  }
  MOE_RETURN_IF_ERROR(s_.trace.stop(
      span, parking.restore->get(), "h2d hidden",
      [&] {
        return layerSpanName(program_.ops[segmentBegin].layer,
                             fmt::format("hidden-state load {}", c));
      },
      "hidden-state load"));
  return parking.chunkRestored[c % 2]->record(*parking.restore);
}

bool ChunkedPass::parksHere(int v, size_t segmentBegin,
                            size_t segmentEnd) const {
  // Values made before this segment are parked already.
  return !owned_[v].empty() && parkOffset_[v] != SIZE_MAX &&
         program_.crossesSegment(v, segmentBegin, segmentEnd);
}

// The chunk's values that later segments read, parked on the park stream
// while the next chunk computes (their buffers freed there, after the
// copy); the rest of its values freed.
Status ChunkedPass::parkChunk(size_t segmentBegin, size_t segmentEnd,
                              size_t c) {
  Parking &parking = s_.parking;
  int64_t from = cuts_[c], count = cuts_[c + 1] - from;
  bool parks = false;
  for (int v = 1; v < program_.numValues; ++v)
    parks = parks || parksHere(v, segmentBegin, segmentEnd);
  size_t span = 0;
  if (parks) {
    MOE_RETURN_IF_ERROR(parking.parkReady->record(stream_));
    MOE_RETURN_IF_ERROR(parking.park->wait(*parking.parkReady));
    MOE_ASSIGN_OR_RETURN(span, s_.trace.start(parking.park->get()));
    parkedInSegment_ = true;
  }
  for (int v = 1; v < program_.numValues; ++v) {
    if (owned_[v].empty())
      continue;
    if (!parksHere(v, segmentBegin, segmentEnd)) {
      MOE_RETURN_IF_ERROR(freeValue(v));
      continue;
    }
    const DeviceValue &value = values_[v];
    parkedForm_[v] = value.form;
    size_t bytes = size_t(count * value.width) * elementBytes(value.form);
    MOE_CUDA_TRY(cudaMemcpyAsync(
        parked_ + (parkOffset_[v] + size_t(from * value.width)) * 4,
        value.buffer(), bytes, cudaMemcpyDeviceToHost, parking.park->get()));
    s_.counters.hiddenBytesToHost += int64_t(bytes);
    for (void *ptr : owned_[v]) {
      auto freed = s_.memory.freeLater(ptr, parking.park->get());
      if (!freed)
        return freed.error();
      parkPending_[c % 2] += *freed;
    }
    clearValue(v);
  }
  if (parks) {
    MOE_RETURN_IF_ERROR(s_.trace.stop(
        span, parking.park->get(), "d2h hidden",
        [&] {
          return layerSpanName(program_.ops[segmentBegin].layer,
                               fmt::format("hidden-state store {}", c));
        },
        "hidden-state store"));
    MOE_RETURN_IF_ERROR(parking.chunkParked[c % 2]->record(*parking.park));
  }
  return Status::success();
}

// The next segment loads what this one parked.
Status ChunkedPass::endSegment() {
  if (!parkedInSegment_)
    return Status::success();
  Parking &parking = s_.parking;
  MOE_RETURN_IF_ERROR(parking.segmentParked->record(*parking.park));
  auto parkedTiming = s_.timer.start(kParkedStage, stream_);
  if (!parkedTiming)
    return parkedTiming.error();
  MOE_RETURN_IF_ERROR(s_.stream->wait(*parking.segmentParked));
  MOE_RETURN_IF_ERROR(s_.timer.stop(*parkedTiming, stream_));
  s_.memory.release(parkPending_[0] + parkPending_[1]);
  parkPending_ = {};
  parkedInSegment_ = false;
  return Status::success();
}

Status ChunkedPass::finish() {
  MOE_RETURN_IF_ERROR(s_.stream->synchronize());
  BackendCounters &counters = s_.counters;
  counters.devicePeakStepBytes =
      std::max(counters.devicePeakStepBytes, int64_t(s_.memory.peak));
  counters.deviceMemoryTrims = s_.memory.trims;
  if (!prefill_)
    counters.decodeBytesToDevice +=
        counters.weightBytesToDevice + counters.kvBytesToDevice - movedBefore_;
  if (s_.host.prepared()) {
    MOE_ASSIGN_OR_RETURN(double hostSeconds, s_.host.finishPass());
    s_.timer.add(size_t(costmodel::Stage::HostAttention), prefill_,
                 hostSeconds);
  }
  return s_.timer.endPass(prefill_);
}

void ChunkedPass::clearValue(int v) {
  owned_[v].clear();
  values_[v] = DeviceValue{nullptr, nullptr, nullptr, program_.valueWidths[v]};
}

Status ChunkedPass::freeValue(int v) {
  for (void *ptr : owned_[v])
    MOE_RETURN_IF_ERROR(s_.memory.free(ptr, stream_));
  clearValue(v);
  return Status::success();
}

} // namespace moe::cuda
