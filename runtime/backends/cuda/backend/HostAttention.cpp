#include "runtime/backends/cuda/backend/HostAttention.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace moe::cuda {

Status HostAttention::prepare(PinnedHostPool &pinned, int64_t rows,
                              int64_t width) {
  size_t bytes = size_t(rows * width) * sizeof(uint16_t);
  MOE_ASSIGN_OR_RETURN(void *queries,
                       pinned.allocate(bytes, "host attention queries"));
  MOE_ASSIGN_OR_RETURN(void *outputs,
                       pinned.allocate(bytes, "host attention outputs"));
  queries_ = static_cast<uint16_t *>(queries);
  outputs_ = static_cast<uint16_t *>(outputs);
  MOE_RETURN_IF_ERROR(createStreams({&stream_}));
  MOE_RETURN_IF_ERROR(createEvents({&queriesMade_, &done_}));
  // Every core but the one driving the GPU.
  pool_ = std::make_unique<ThreadPool>(
      std::max(1, int(std::thread::hardware_concurrency()) - 1));
  MOE_ASSIGN_OR_RETURN(host::DecodeAttention kernels,
                       host::DecodeAttention::create(*pool_));
  kernels_.emplace(std::move(kernels));
  rows_ = rows;
  width_ = width;
  return Status::success();
}

Result<HostAttention::Outputs>
HostAttention::attend(cudaStream_t compute, const Event *kvStored,
                      const HostRows &rows, const Layer &layer, const bf16 *q,
                      bf16 *out, int layerIndex, BackendCounters &counters) {
  int64_t width = layer.heads * layer.headDim;
  if (rows.count() > rows_ || width > width_)
    return makeError("host attention: {} rows of {} query elements exceed "
                     "the {} rows of {} prepared",
                     rows.count(), width, rows_, width_);
  cudaStream_t stream = stream_->get();
  size_t bytes = size_t(rows.count() * width) * sizeof(uint16_t);
  MOE_RETURN_IF_ERROR(queriesMade_->record(compute));
  MOE_RETURN_IF_ERROR(stream_->wait(*queriesMade_));
  MOE_ASSIGN_OR_RETURN(size_t span, trace->start(stream));
  MOE_CUDA_TRY(cudaMemcpyAsync(queries_, q + rows.firstRow * width, bytes,
                               cudaMemcpyDeviceToHost, stream));
  if (kvStored)
    MOE_RETURN_IF_ERROR(stream_->wait(*kvStored));

  Job &job = jobs_.emplace_back();
  job.self = this;
  job.slots = rows.slots;
  job.lengths = rows.lengths;
  host::SoftmaxAttentionArgs &args = job.args;
  args.q = queries_;
  args.cache = layer.cache;
  args.rows = {rows.count(), job.slots.data(), job.lengths.data()};
  args.heads = layer.heads;
  args.kvHeads = layer.kvHeads;
  args.headDim = layer.headDim;
  args.sinks = layer.sinks;
  args.window = layer.window;
  args.scale = layer.scale;
  args.out.bf16 = outputs_;
  MOE_CUDA_TRY(cudaLaunchHostFunc(stream, &HostAttention::run, &job));
  MOE_RETURN_IF_ERROR(trace->stop(
      span, stream, "host attention",
      [&] { return layerSpanName(layerIndex, "host attention"); },
      "host attention"));
  MOE_RETURN_IF_ERROR(done_->record(stream));

  int64_t kvBytes = 0;
  for (int32_t length : rows.lengths) {
    int64_t read =
        layer.window > 0 ? std::min<int64_t>(length, layer.window) : length;
    kvBytes += read * layer.cache.rowBytes * (layer.cache.v ? 2 : 1);
  }
  counters.hostKvBytesRead += kvBytes;
  counters.hostAttentionBytes += int64_t(2 * bytes);
  return Outputs{done_->get(), outputs_, out + rows.firstRow * width, bytes};
}

Status HostAttention::collect(cudaStream_t compute, const Outputs &outputs) {
  MOE_CUDA_TRY(cudaStreamWaitEvent(compute, outputs.attended));
  MOE_CUDA_TRY(
      kernels::copyOnSms(outputs.to, outputs.from, outputs.bytes, compute));
  return Status::success();
}

void CUDART_CB HostAttention::run(void *opaque) {
  Job &job = *static_cast<Job *>(opaque);
  HostAttention &self = *job.self;
  auto start = std::chrono::steady_clock::now();
  Status status = self.kernels_->run(job.args);
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  std::lock_guard<std::mutex> lock(self.mutex_);
  self.seconds_ += seconds;
  if (!status.ok() && !self.error_)
    self.error_ = status.error().withContext("host attention");
}

Result<double> HostAttention::finishPass() {
  std::lock_guard<std::mutex> lock(mutex_);
  jobs_.clear();
  if (error_) {
    Error error = *error_;
    error_.reset();
    return error;
  }
  double seconds = seconds_;
  seconds_ = 0;
  return seconds;
}

} // namespace moe::cuda
