#include "runtime/backends/cuda/backend/CudaBackend.h"

#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/backend/BackendState.h"
#include "runtime/backends/cuda/backend/ChunkedPass.h"
#include "runtime/backends/cuda/backend/WeightPlacement.h"
#include "runtime/backends/cuda/backend/ops/Ops.h"
#include "runtime/costmodel/Plan.h"
#include "runtime/model/KvFormat.h"
#include "runtime/model/ResolvedModel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

namespace moe::cuda {
namespace {

// Slots [0, gpuSlotsOf) keep their KV on the GPU, the rest in host memory.
int32_t gpuSlotsOf(const plan::Batching *batching, int32_t slots) {
  if (!batching)
    return slots;
  return static_cast<int32_t>(std::clamp<double>(
      std::llround(batching->kv_gpu_fraction() * slots), 0, slots));
}

// Bytes the weights take where the plan placed them, each allocation
// rounded up to the pool alignment. The weights arena: whole params, or
// their first gpu_experts experts (quantized experts as blocks of codes and
// scales), and the scratch quantized experts are widened into. Pinned host
// memory: the streamed params and experts. The params kept in fp32 live
// with the fp32 arrays in the cache arena.
struct PlacedWeightBytes {
  size_t device = 0, host = 0;
};
PlacedWeightBytes placedWeightBytes(const plan::Model &model,
                                    const model::ResolvedModel &resolved) {
  std::vector<bool> counted(model.params()->size(), false);
  PlacedWeightBytes bytes;
  bytes.device = model.ops()->size() * 4 * kPoolAlignment +
                 size_t(widenedExpertElements(resolved)) * sizeof(bf16);
  for (const model::ResolvedOp &op : resolved.ops) {
    for (int index : fp32Params(op).all())
      if (index >= 0 && size_t(index) < counted.size())
        counted[size_t(index)] = true;
    const auto *e = std::get_if<model::ExpertsSpec>(&op.spec);
    if (!e || resolved.expertDtype == model::WeightDtype::bf16)
      continue;
    QuantizedExpertBytes experts =
        quantizedExpertBytes(model, *e, resolved.expertDtype);
    bytes.device += size_t(experts.resident) + 4 * kPoolAlignment;
    bytes.host += size_t(experts.streamed) + 4 * kPoolAlignment;
    for (int index : {e->gate, e->up, e->gateUp, e->down})
      if (index != model::kAbsent)
        counted[size_t(index)] = true;
  }
  for (size_t index = 0; index < counted.size(); ++index) {
    const plan::Param *param = model.params()->Get(index);
    if (counted[index])
      continue;
    size_t elements = size_t(model::paramElements(*param)), resident = elements;
    if (param->placement() == plan::Placement::host_streamed)
      resident = param->gpu_experts() > 0 ? elements / param->shape()->Get(0) *
                                                size_t(param->gpu_experts())
                                          : 0;
    bytes.device += resident * sizeof(bf16) + 2 * kPoolAlignment;
    if (resident < elements)
      bytes.host += (elements - resident) * sizeof(bf16) + 2 * kPoolAlignment;
  }
  return bytes;
}

// The plan's last host-KV slots (its CPU attention share of B) are attended
// by the host's cores in decode.
Status prepareHostAttention(BackendState &s, const plan::Batching *batching,
                            const model::ResolvedModel &resolved,
                            int32_t hostSlots) {
  if (!batching || batching->cpu_attention_share() <= 0)
    return Status::success();
  auto attended = static_cast<int32_t>(std::clamp<double>(
      std::llround(batching->cpu_attention_share() * s.slots), 0, hostSlots));
  if (attended == 0)
    return Status::success();
  if (!resolved.latentCaches.empty() || !resolved.lightningStates.empty())
    return makeError("the plan gives decode attention to the host's cores "
                     "(CPU attention share {}), which attend only softmax "
                     "attention; this model has MLA or lightning attention",
                     batching->cpu_attention_share());
  int64_t width = 0;
  for (const model::ResolvedOp &op : resolved.ops)
    if (const auto *a = std::get_if<model::AttentionSpec>(&op.spec))
      width = std::max(width, a->heads * a->headDim);
  MOE_RETURN_IF_ERROR(s.host.prepare(*s.pinned, attended, width));
  s.hostAttendedSlot = s.slots - attended;
  return Status::success();
}

Status setUp(BackendState &s, const LoadedPlan &plan,
             const model::ResolvedModel &resolved, const WeightSet &weightSet) {
  const plan::Model &model = plan.model();
  const plan::Batching *batching = plan.plan().batching();

  // The plan's GPU budget (the physical card's free memory without one).
  size_t freeBytes = 0, totalBytes = 0;
  MOE_CUDA_TRY(cudaMemGetInfo(&freeBytes, &totalBytes));
  constexpr size_t kHeadroom = size_t(1) << 30; // CUDA context, cuBLASLt
  size_t budget = freeBytes > kHeadroom ? freeBytes - kHeadroom : 0;
  if (batching && batching->gpu_budget_bytes() > 0)
    budget = std::min(budget, size_t(batching->gpu_budget_bytes()));
  PinnedHostPoolOptions hostOptions;
  hostOptions.budgetBytes = batching && batching->host_budget_bytes() > 0
                                ? size_t(batching->host_budget_bytes())
                                : std::numeric_limits<size_t>::max() / 2;
  s.pinned.emplace(hostOptions);
  PlacedWeightBytes weightBytes = placedWeightBytes(model, resolved);
  // The streamed weights, many of them small, pinned as one region: pinned
  // piecemeal, the chunks' unused tails would take host memory the plan
  // counts for the KV pages that come after them.
  if (weightBytes.host > 0)
    if (Status pinned = s.pinned->reserveChunk(weightBytes.host); !pinned)
      return pinned.error().withContext("the streamed weights");

  s.gpuSlots = gpuSlotsOf(batching, s.slots);
  s.prefillMicroBatch = s.decodeMicroBatch = s.slots;
  if (batching) {
    s.prefillMicroBatch = std::clamp<int64_t>(
        batching->attention_micro_batch_prefill(), 1, s.slots);
    s.decodeMicroBatch = std::clamp<int64_t>(
        batching->attention_micro_batch_decode(), 1, s.slots);
    s.expertMicroBatch = batching->expert_micro_batch();
  }

  auto arena = DeviceArena::create(weightBytes.device, "weights");
  if (!arena)
    return arena.error();
  s.weights.emplace(std::move(*arena));
  MOE_RETURN_IF_ERROR(s.ring.allocate());
  WeightPlacement placement(model, weightSet, *s.weights, s.ring, *s.pinned,
                            s.floats, s.maxContext);
  if (int64_t widened = widenedExpertElements(resolved)) {
    MOE_ASSIGN_OR_RETURN(
        bf16 * scratch,
        s.weights->allocateArray<bf16>(size_t(widened),
                                       "quantized experts widened to bf16"));
    placement.setWidenedExperts(scratch);
  }
  MOE_RETURN_IF_ERROR(compileProgram(model, resolved, placement, s.kv,
                                     s.ring.schedule, s.progress, s.program));

  // KV of GPU slots, staging buffers for host slots' micro-batches, fp32
  // params; host slots' KV in pinned memory.
  int32_t hostSlots = s.slots - s.gpuSlots;
  int64_t stagedSlots =
      hostSlots > 0 ? std::min<int64_t>(hostSlots, std::max(s.prefillMicroBatch,
                                                            s.decodeMicroBatch))
                    : 0;
  size_t cacheBytes = s.kv.deviceBytes(s.gpuSlots, s.maxContext, stagedSlots,
                                       s.kv.stagingBuffers());
  for (const std::vector<float> &values : s.floats)
    cacheBytes += poolAligned(values.size() * sizeof(float));
  for (const model::LightningStateSpec &state : resolved.lightningStates)
    cacheBytes += poolAligned(size_t(s.slots) *
                              size_t(state.elementsPerSlot()) * sizeof(float));
  auto cacheArena = DeviceArena::create(cacheBytes + kPoolAlignment, "kv");
  if (!cacheArena)
    return cacheArena.error();
  s.cache.emplace(std::move(*cacheArena));
  MOE_RETURN_IF_ERROR(
      s.kv.allocate(*s.cache, *s.pinned, s.gpuSlots,
                    s.kvPages->pages() * s.kvPages->pageTokens(), s.maxContext,
                    stagedSlots, s.kv.stagingBuffers()));
  MOE_RETURN_IF_ERROR(prepareHostAttention(s, batching, resolved, hostSlots));
  // Not initialised: a slot's first row (position 0) starts from zero.
  for (const model::LightningStateSpec &state : resolved.lightningStates) {
    auto device = s.cache->allocateArray<float>(
        size_t(s.slots) * size_t(state.elementsPerSlot()),
        "lightning attention state");
    if (!device)
      return device.error();
    s.lightningStates.push_back(*device);
  }
  for (const std::vector<float> &values : s.floats) {
    auto device = s.cache->allocateArray<float>(values.size(), "fp32 param");
    if (!device)
      return device.error();
    MOE_CUDA_TRY(cudaMemcpy(*device, values.data(),
                            values.size() * sizeof(float),
                            cudaMemcpyHostToDevice));
    s.floatsOnDevice.push_back(*device);
  }
  s.floats.clear();

  size_t ringBytes = s.ring.arena ? s.ring.arena->capacity() : 0;
  size_t fixed = s.weights->capacity() + ringBytes + s.cache->capacity();
  if (fixed + size_t(s.program.rowBytes) > budget)
    return makeError("the GPU budget of {} bytes leaves no room for "
                     "activations: resident weights {} + weight ring {} + "
                     "KV, staging and fp32 params {} bytes",
                     budget, s.weights->capacity(), ringBytes,
                     s.cache->capacity());
  s.memory.limit = budget - fixed;
  // Freed step memory stays in the pool for the next op, not the driver.
  cudaMemPool_t pool = nullptr;
  int device = 0;
  MOE_CUDA_TRY(cudaGetDevice(&device));
  MOE_CUDA_TRY(cudaDeviceGetAttribute(&s.smCount,
                                      cudaDevAttrMultiProcessorCount, device));
  MOE_CUDA_TRY(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t keep = std::numeric_limits<uint64_t>::max();
  MOE_CUDA_TRY(
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  s.memory.pool = pool;

  MOE_RETURN_IF_ERROR(createStreams({&s.stream}));
  MOE_RETURN_IF_ERROR(s.ring.createStreams());
  MOE_RETURN_IF_ERROR(s.kv.createStreams());
  MOE_RETURN_IF_ERROR(s.parking.createStreams());
  s.memory.freeingStreams = {s.stream->get(), s.parking.park->get()};
  auto gemmRunner = GemmRunner::create();
  if (!gemmRunner)
    return gemmRunner.error();
  s.gemm = std::move(*gemmRunner);
  MOE_RETURN_IF_ERROR(s.ring.finishBinding());
  MOE_RETURN_IF_ERROR(s.kv.createEvents());
  MOE_RETURN_IF_ERROR(s.parking.createEvents());
  s.counters.deviceFixedBytes = fixed;
  s.counters.pinnedHostBytes = s.pinned->pinnedBytes();
  return Status::success();
}

} // namespace

CudaBackend::CudaBackend(CudaBackendOptions options) : options_(options) {}
CudaBackend::~CudaBackend() = default;

Status CudaBackend::prepare(const LoadedPlan &plan, const WeightSet &weights,
                            int32_t slots, int32_t maxContext) {
  auto fail = [](const Error &error) {
    return error.withContext("cuda backend");
  };
  state_.reset();
  const plan::Model &model = plan.model();
  if (slots <= 0 || maxContext <= 0)
    return fail(makeError("slots ({}) and max context ({}) must be positive",
                          slots, maxContext));
  auto resolved = model::ResolvedModel::resolve(plan.plan());
  if (!resolved)
    return fail(resolved.error());
  // Lightning attention's states stay on the GPU: a plan that keeps some
  // sequences' KV and states in host memory fails before anything is
  // uploaded.
  int32_t hostSlots = slots - gpuSlotsOf(plan.plan().batching(), slots);
  if (!resolved->lightningStates.empty() && hostSlots > 0)
    return fail(makeError(
        "the plan keeps {} of {} sequences' KV and lightning attention "
        "states (layer {}) in host memory; the CUDA backend keeps those "
        "states on the GPU: plan with a larger GPU budget or a smaller "
        "batch, or use the CPU backend",
        hostSlots, slots, resolved->lightningStates.front().layer));
  auto ring = model::resolveRingSchedule(plan.plan(), *resolved);
  if (!ring)
    return fail(ring.error());
  auto staging = model::resolveKvStagingSchedule(plan.plan(), *resolved);
  if (!staging)
    return fail(staging.error());
  size_t count = model.params()->size();
  if (weights.size() != count)
    return fail(makeError("the weights hold {} params, the plan {}",
                          weights.size(), count));
  for (size_t i = 0; i < count; ++i) {
    Status finite = weights.checkFinite(i);
    if (!finite.ok())
      return fail(finite.error());
  }
  // The host slots' pages: the pool the options give, else the plan's (at
  // least one whole context of this job's, which may be longer than the
  // plan's), else each one's whole context.
  const int64_t page = model::hostKvPageTokens(maxContext);
  const int64_t pagesPerSlot = (maxContext + page - 1) / page;
  int64_t poolPages = hostSlots * pagesPerSlot;
  if (options_.hostKvPoolTokens > 0)
    poolPages =
        std::min(poolPages, (options_.hostKvPoolTokens + page - 1) / page);
  else if (const plan::Batching *batching = plan.plan().batching();
           batching && batching->host_kv_pool_tokens() > 0)
    poolPages = std::min(
        poolPages, std::max((batching->host_kv_pool_tokens() + page - 1) / page,
                            pagesPerSlot));
  if (poolPages * page > std::numeric_limits<int32_t>::max())
    return fail(makeError("a host KV pool of {} tokens: at most {}",
                          poolPages * page,
                          std::numeric_limits<int32_t>::max()));
  Result<KvPages> pages = KvPages::create(slots, maxContext, int32_t(page),
                                          poolPages, slots - hostSlots);
  if (!pages)
    return fail(pages.error());
  auto s = std::make_unique<BackendState>();
  s->slots = slots;
  s->kvPages = &*pages;
  s->hostPages.pageTokens = page;
  s->hostPages.pagesPerSlot = pagesPerSlot;
  s->hostPages.pages.assign(size_t(hostSlots * pagesPerSlot), -1);
  s->maxContext = maxContext;
  s->fp8ExpertInputs = options_.fp8ExpertInputs;
  s->lengths.assign(slots, 0);
  s->progress = prepareProgress_;
  s->ring.schedule = std::move(*ring);
  s->kv.schedule = *staging;
  Status ready = setUp(*s, plan, *resolved, weights);
  if (!ready.ok())
    return fail(ready.error());
  if (options_.maxStepBytes > 0) {
    int64_t oneRow = s->program.chunkRowBytes(true);
    if (options_.maxStepBytes < size_t(oneRow))
      return fail(makeError("a step memory of {} bytes holds no row (one "
                            "needs {} bytes)",
                            options_.maxStepBytes, oneRow));
    s->memory.limit = std::min(s->memory.limit, options_.maxStepBytes);
  }
  if (options_.graphs) {
    Status graphs = s->graphs.enable(slots, s->program.vocab);
    if (!graphs.ok())
      return fail(graphs.error());
  }
  s->prepared = true;
  kvPages_ = std::move(*pages);
  s->kvPages = &kvPages_;
  state_ = std::move(s);
  return Status::success();
}

void CudaBackend::resetSlot(int32_t slot) {
  if (state_ && slot >= 0 && slot < state_->slots) {
    state_->lengths[slot] = 0;
    kvPages_.release(slot);
    if (slot >= state_->gpuSlots) {
      HostPageTable &table = state_->hostPages;
      int64_t hostSlot = slot - state_->gpuSlots;
      std::fill_n(table.pages.begin() + hostSlot * table.pagesPerSlot,
                  table.pagesPerSlot, -1);
    }
  }
}

Status CudaBackend::forward(const StepBatch &batch,
                            std::vector<float> &logits) {
  return run(batch, &logits, nullptr);
}

Status CudaBackend::forwardGreedy(const StepBatch &batch,
                                  std::vector<int32_t> &tokens) {
  return run(batch, nullptr, &tokens);
}

Status CudaBackend::run(const StepBatch &batch, std::vector<float> *logits,
                        std::vector<int32_t> *tokens) {
  auto fail = [](const Error &error) {
    return error.withContext("cuda backend");
  };
  if (!state_ || !state_->prepared)
    return fail(makeError("forward before prepare"));
  BackendState &s = *state_;
  // Slots in increasing order put the host slots' rows last (ChunkRows.h).
  auto runs = validateStepBatch(batch, s.lengths, s.maxContext,
                                s.program.embeddingVocab);
  if (!runs)
    return fail(runs.error());
  if (Status held = holdKvRows(batch, *runs, kvPages_); !held.ok())
    return fail(held.error());
  for (const SlotRun &run : *runs)
    if (run.slot >= s.gpuSlots) {
      std::span<const int32_t> table = kvPages_.table(run.slot);
      std::copy(table.begin(), table.end(),
                s.hostPages.pages.begin() +
                    (run.slot - s.gpuSlots) * s.hostPages.pagesPerSlot);
    }
  int64_t rows = static_cast<int64_t>(batch.rows.size());
  if (logits)
    logits->clear();
  else
    tokens->clear();
  if (rows == 0)
    return Status::success();
  if (logits)
    logits->resize(batch.logitRows.size() * size_t(s.program.vocab));
  else
    tokens->resize(batch.logitRows.size());

  // Passes of whole slot runs of at most kPassRows rows (a longer run is
  // split; its second part continues the cache). Each pass streams the
  // weights once; within it, chunks of what the step memory holds run layer
  // by layer with their hidden states parked in host memory.
  std::vector<int64_t> passes =
      cutAtSlots(batch.rows, 0, rows, costmodel::kPassRows);
  ChromeTrace *trace = traceFor(batch);
  if (trace)
    MOE_RETURN_IF_ERROR(s.trace.begin(s.stream->get()));
  size_t logitIndex = 0;
  for (size_t p = 0; p + 1 < passes.size(); ++p) {
    int64_t first = passes[p], end = passes[p + 1];
    size_t logitEnd = logitIndex;
    while (logitEnd < batch.logitRows.size() && batch.logitRows[logitEnd] < end)
      ++logitEnd;
    HeadOutput out;
    if (logits)
      out.logits = logits->data() + logitIndex * s.program.vocab;
    else
      out.tokens = tokens->data() + logitIndex;
    Status ran = ChunkedPass(s, options_.perExpertGemmRows, batch, first, end,
                             logitIndex, logitEnd, out)
                     .run();
    if (!ran.ok()) {
      if (trace)
        s.trace.cancel();
      return fail(ran.error());
    }
    for (int64_t r = first; r < end; ++r)
      if (r + 1 == end || batch.rows[r + 1].slot != batch.rows[r].slot)
        s.lengths[batch.rows[r].slot] = batch.rows[r].position + 1;
    logitIndex = logitEnd;
  }
  if (trace)
    MOE_RETURN_IF_ERROR(
        s.trace.end(*trace, "cuda backend: decode step (measured)"));
  return Status::success();
}

BackendCounters CudaBackend::counters() const {
  return state_ ? state_->counters : BackendCounters{};
}

std::vector<StageTime> CudaBackend::stageSeconds() const {
  return state_ ? state_->timer.stages() : std::vector<StageTime>{};
}

} // namespace moe::cuda
