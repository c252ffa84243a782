#include "runtime/backends/cuda/backend/CudaBackend.h"

#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/GemmRunner.h"
#include "runtime/backends/cuda/Memory.h"
#include "runtime/backends/cuda/Stream.h"
#include "runtime/backends/cuda/backend/ChunkRows.h"
#include "runtime/backends/cuda/kernels/GroupedGemm.h"
#include "runtime/backends/cuda/kernels/Kernels.h"
#include "runtime/backends/cuda/kernels/LightningAttention.h"
#include "runtime/backends/cuda/kernels/MlaAttention.h"
#include "runtime/costmodel/Plan.h"
#include "runtime/model/Lightning.h"
#include "runtime/model/Rope.h"
#include "runtime/support/ThreadPool.h"

#include <algorithm>
#include <array>
#include <bit>
#include <optional>
#include <tuple>
#include <variant>

namespace moe::cuda {
namespace {

using bf16 = __nv_bfloat16;
namespace kn = kernels;

// Each plan op resolved against the uploaded weights. fp32 arrays (sinks,
// correction biases, RoPE tables) are indices into State::floats, which are
// uploaded after all ops are compiled.

struct EmbeddingOp {
  const bf16 *table;
  int64_t vocab, hidden;
};
struct NormOp {
  const bf16 *weight;
  int64_t width;
  float eps;
};
struct AttentionOp {
  int64_t hidden, heads, kvHeads, headDim, rotaryDim;
  kn::RopeStyle style;
  int cos, sin; // fp32 arrays; -1 without rotation
  float scale;
  const bf16 *q, *k, *v, *o, *qBias, *kBias, *vBias, *oBias;
  plan::QKNorm qkNorm;
  const bf16 *qNorm, *kNorm;
  float qkEps;
  int64_t window;
  int sinks; // fp32 array or -1
  int cache;
  bool ownsKv;
};
// DeepSeek's multi-head latent attention in its absorbed form: the cache
// holds each token's normed latent and roped k_pe; W_UK is folded into the
// query and W_UV applied after attention, one GEMM per head each.
struct MlaOp {
  int64_t hidden, heads, qLoraRank, latent, nope, ropeDim, vDim;
  int cos, sin; // fp32 rope tables
  kn::RopeStyle style;
  float scale, eps;
  const bf16 *q, *qA, *qANorm, *qB, *kvA, *kvANorm, *o;
  const bf16 *wUkT; // [heads][latent][nope]: W_UK,hᵀ as [out, in]
  const bf16 *wUv;  // [heads][vDim][latent]
  int cache;
};
// MiniMax's lightning attention: SiLU(qkv) through the recurrent state
// (kernels::lightningAttention), RMSNorm over all heads, times σ(x·gate),
// then the output projection. The state of every slot stays on the GPU.
struct LightningOp {
  int64_t hidden, heads, headDim;
  float eps;
  int decay; // fp32 array: λ per head
  const bf16 *qkv, *gate, *norm, *out;
  int state; // into State::lightningStates
};
// Router weights stay fp32 (fp32 arrays): see kernels::routerLogits.
struct RouterOp {
  int64_t hidden, experts, topK;
  int weight, bias, correction; // fp32 arrays; bias and correction may be -1
  kn::RouterScoring scoring;
  kn::RouterSelection selection;
  int groups, keptGroups;
  bool normalize;
  float scaling;
};
// A stacked [E, ...] expert weight whose first `residentExperts` blocks
// stay in the weights arena while the rest are streamed into the op's ring
// slot (the plan's gpu_experts); null when the op has no such weight.
using ExpertWeight = kn::ExpertMatrix;

// Expert e's block of a stacked weight; null when the weight is absent.
const bf16 *expertBlock(const ExpertWeight &w, int64_t e) {
  if (!w.resident && !w.streamed)
    return nullptr;
  return e < w.residentExperts
             ? w.resident + e * w.stride
             : w.streamed + (e - w.residentExperts) * w.stride;
}
// Gate and up as one [E, 2I, H] weight: separate layouts are concatenated
// (gate rows first, for siluMul); GPT-OSS's fused layout keeps its
// interleaved columns, transposed to [out, in] (for swigluClamped).
struct ExpertsOp {
  int64_t hidden, width, experts, topK;
  bool clamped;
  float limit, alpha;
  ExpertWeight gateUp, gateUpBias, down, downBias; // down [E, H, I]
};
struct MlpOp {
  int64_t hidden, width;
  const bf16 *gateUp, *down, *outputGate; // gateUp [2I, H]
};
struct ResidualOp {
  float skipScale, updateScale;
  int64_t width;
};
struct HeadOp {
  const bf16 *weight;
  int64_t vocab, hidden;
};

using Op = std::variant<EmbeddingOp, NormOp, AttentionOp, RouterOp, ExpertsOp,
                        MlpOp, ResidualOp, HeadOp, MlaOp, LightningOp>;
// Per op kind, then the compute stream's timed waits between ops; kinds of
// one name are one stage in the stats.
constexpr size_t kWeightWaitStage = std::variant_size_v<Op>;
constexpr size_t kParkedStage = kWeightWaitStage + 1;
constexpr std::array<const char *, kParkedStage + 1> kStageNames = {
    "embedding", "norm", "attention", "router", "routed experts", "mlp",
    "residual", "lm head", "attention", "lightning attention",
    // An op's first chunk waiting for its streamed weights.
    "weight wait",
    // A chunked pass's hidden states parked in host memory between layers:
    // waiting for them and copying them back.
    "parked states"};

struct CompiledOp {
  Op op;
  std::vector<int> operands, results;
  int streamIndex = -1; // into State::streamed when the op streams weights
  int layer = -1;
};

// One host-to-device copy of a streamed weight into its ring slot.
struct CopyPart {
  const void *host;
  void *device;
  size_t bytes;
};

enum class ValueKind {
  undefined,
  tokens,
  activations,
  routeWeights,
  routeIndices,
  logits
};

struct ValueInfo {
  ValueKind kind = ValueKind::undefined;
  int64_t width = 0;
  int64_t experts = 0;
};

// One value of a step on the device. Activations are bf16 (GEMM inputs and
// outputs) or fp32 (the residual stream: embedding, residual adds, the
// experts' weighted sum); each form is made from the other on first use.
// Routing weights are fp32, expert indices i32.
struct DeviceValue {
  bf16 *a = nullptr;
  float *f = nullptr;
  int32_t *i = nullptr;
  int64_t width = 0;
  char kind = 'f'; // the form the making op wrote: 'f', 'a' or 'i' (parked)
};

// K and V of the GPU slots [0, gpuSlots) on the device and of the others in
// pinned host memory, [slot, position, kvHeads·headDim] each.
struct KvCache {
  int64_t kvHeads = 0, headDim = 0;
  bool hasValues = true; // MLA caches only the latent (as K)
  bf16 *k = nullptr, *v = nullptr;
  bf16 *hostK = nullptr, *hostV = nullptr;
  int64_t width() const { return kvHeads * headDim; }
};

int64_t paramElements(const plan::Param &param) {
  int64_t n = 1;
  for (int64_t dim : *param.shape())
    n *= dim;
  return n;
}

// A param's bf16 values on the host, not zero-filled first: a full-scale
// model has billions of values to convert and lay out before the first step.
struct HostBf16 {
  std::unique_ptr<bf16[]> data;
  size_t size = 0;

  explicit HostBf16(size_t n)
      : data(std::make_unique_for_overwrite<bf16[]>(n)), size(n) {}
  std::span<bf16> span() { return {data.get(), size}; }
  operator std::span<const bf16>() const { return {data.get(), size}; }
  std::span<uint16_t> bits(size_t offset, size_t count) {
    return {reinterpret_cast<uint16_t *>(data.get() + offset), count};
  }
};

HostBf16 readBf16(const WeightSet &weights, int index) {
  size_t count = 1;
  for (int64_t dim : weights.param(size_t(index)).shape)
    count *= size_t(dim);
  HostBf16 host(count);
  weights.toBf16(size_t(index), host.bits(0, count));
  return host;
}

} // namespace

// Stream-ordered device memory for one forward's values and scratch
// (cudaMallocAsync from the device's pool, which keeps what is freed for
// reuse): scratch returns when its op has run, a value's buffers when its
// last reader has. `limit` is what the plan's GPU budget leaves for it.
//
// Chunks of a pass differ in rows a little (they end at slot boundaries),
// so a freed buffer is often a few bytes short for the next chunk's and the
// pool maps more memory. Sizes are therefore rounded up to one of 16 classes
// per power of two, and when the pool cannot grow, the streams that free
// step memory are drained and its unused memory returned before one retry.
class StepMemory {
public:
  size_t limit = 0, inUse = 0, peak = 0;
  int64_t trims = 0; // times the pool was drained to satisfy an allocation
  cudaMemPool_t pool = nullptr;
  std::vector<cudaStream_t> freeingStreams;

  // At most 1/16 more than `bytes`.
  static size_t roundUp(size_t bytes) {
    size_t step = std::bit_floor(std::max<size_t>(bytes, 16 * 256)) / 16;
    return (bytes + step - 1) / step * step;
  }

  Result<void *> allocate(size_t bytes, std::string_view what,
                          cudaStream_t stream) {
    bytes = roundUp(bytes);
    if (inUse + bytes > limit)
      return makeError("activations: '{}' needs {} more bytes, {} of the {} "
                       "that the GPU budget leaves are in use",
                       what, bytes, inUse, limit);
    void *ptr = nullptr;
    cudaError_t allocated = cudaMallocAsync(&ptr, bytes, stream);
    if (allocated == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      for (cudaStream_t freeing : freeingStreams)
        MOE_CUDA_TRY(cudaStreamSynchronize(freeing));
      MOE_CUDA_TRY(cudaMemPoolTrimTo(pool, 0));
      ++trims;
      allocated = cudaMallocAsync(&ptr, bytes, stream);
    }
    if (allocated != cudaSuccess) {
      (void)cudaGetLastError();
      size_t freeBytes = 0, totalBytes = 0;
      uint64_t pooled = 0;
      (void)cudaMemGetInfo(&freeBytes, &totalBytes);
      (void)cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent,
                                    &pooled);
      return makeError("activations: cudaMallocAsync of {} bytes for '{}' "
                       "failed ({}): {} of the {} bytes the GPU budget leaves "
                       "are in use, the pool holds {}, the device has {} free",
                       bytes, what, cudaGetErrorString(allocated), inUse, limit,
                       pooled, freeBytes);
    }
    sizes_[ptr] = bytes;
    inUse += bytes;
    peak = std::max(peak, inUse);
    return ptr;
  }
  Status free(void *ptr, cudaStream_t stream) {
    auto bytes = freeLater(ptr, stream);
    if (!bytes)
      return bytes.error();
    release(*bytes);
    return Status::success();
  }
  // Frees on `stream` but keeps the bytes counted until release(): for
  // buffers freed on a side stream, which allocations on the compute stream
  // reuse only once that stream is ordered after the free.
  Result<size_t> freeLater(void *ptr, cudaStream_t stream) {
    auto it = sizes_.find(ptr);
    if (it == sizes_.end())
      return makeError("step memory: freeing an unknown pointer");
    size_t bytes = it->second;
    sizes_.erase(it);
    MOE_CUDA_TRY(cudaFreeAsync(ptr, stream));
    return bytes;
  }
  void release(size_t bytes) { inUse -= bytes; }

private:
  std::unordered_map<void *, size_t> sizes_;
};

struct CudaBackend::State {
  std::optional<Stream> stream;     // compute
  std::optional<Stream> weightCopy; // host-to-device: streamed weights
  std::optional<Stream> kvLoad;     // host-to-device: KV of host slots
  std::optional<Stream> kvStore;    // device-to-host: new KV rows
  std::optional<Stream> park;    // device-to-host: hidden states between layers
  std::optional<Stream> restore; // host-to-device: parked states, ahead
  std::unique_ptr<GemmRunner> gemm;
  std::optional<PinnedHostPool> pinned; // streamed weights, host KV
  std::optional<DeviceArena> weights;   // resident bf16 weights
  std::optional<DeviceArena> ring;      // the plan's weight ring
  std::optional<DeviceArena> cache;     // KV caches, staging, fp32 arrays
  StepMemory memory;
  std::vector<CompiledOp> ops;
  std::vector<int64_t> valueWidths;
  std::vector<int> lastUse;   // per value: the last op reading it, -1 if none
  std::vector<int> definedBy; // per value: the op making it (-1: tokens)
  // Op ranges run for all chunks of a pass before the next range starts:
  // one layer each, cut so no range streams more ops than the ring holds
  // (an op's ring slot is refilled only after its last chunk).
  std::vector<std::pair<size_t, size_t>> segments;
  // Value v is made in segment [begin, stop) and read after it: chunked
  // passes park it in host memory at the segment's end.
  bool crossesSegment(int v, size_t begin, size_t stop) const {
    return definedBy[v] >= int(begin) && definedBy[v] < int(stop) &&
           lastUse[v] >= int(stop);
  }
  // Value v, parked by an earlier segment, is live in the segment starting
  // at op `begin`: chunked passes copy it back for each chunk.
  bool restoredIn(int v, size_t begin) const {
    return v > 0 && definedBy[v] < int(begin) && lastUse[v] >= int(begin);
  }
  std::vector<Event> timing; // start/stop pairs, one per op run
  // fp32/bf16/i32 values parked in pinned memory between segments when a
  // pass runs in several chunks.
  void *parking = nullptr;
  size_t parkingBytes = 0;
  std::vector<std::vector<float>> floats; // host copies until uploaded
  std::vector<float *> floatsOnDevice;
  std::vector<KvCache> kv;
  // Per lightning op: floats of one slot's state, then the states of all
  // slots on the device.
  std::vector<int64_t> lightningStateFloats;
  std::vector<float *> lightningStates;
  int numValues = 0, logitsValue = 0;
  int64_t embeddingVocab = 0, vocab = 0;
  int64_t rowBytes = 0; // most step memory one batch row needs at once
  // Per row: the most bytes of one segment's values parked at its end,
  // held until the chunk after next (runPass).
  int64_t parkRowBytes = 0;
  // Per row: the most bytes of parked values one segment reads (restored
  // for the next chunk while a chunk computes).
  int64_t restoreRowBytes = 0;
  int32_t slots = 0, maxContext = 0;
  int smCount = 0; // sizes the attention kernel's split of long contexts
  std::vector<int32_t> lengths;
  bool prepared = false;
  bool gptOssNorm = false;
  // [prefill, decode][kind]
  std::array<std::array<double, kStageNames.size()>, 2> stageSeconds{};

  // Streaming, as the plan's batching and schedule say.
  int32_t gpuSlots = 0; // slots whose KV stays on the GPU
  int64_t prefillMicroBatch = 1, decodeMicroBatch = 1;
  std::vector<std::vector<CopyPart>> streamed; // per streamed op
  int ringSlots = 1;
  size_t ringSlotBytes = 0;
  std::vector<Event> weightsCopied;       // per streamed op
  std::vector<Event> ringSlotFree;        // per ring slot
  std::vector<bf16 *> stagingK, stagingV; // per KV staging buffer
  std::vector<Event> stagingLoaded, stagingFree;
  std::optional<Event> kvReady, kvStored, passStart, opStart;
  // A chunk's values ready to park; a segment's parked values stored.
  std::optional<Event> parkReady, segmentParked;
  std::array<std::optional<Event>, 2> chunkParked; // by chunk parity
  // Buffers for a chunk's parked values allocated; the values copied in.
  std::optional<Event> restoreReady;
  std::array<std::optional<Event>, 2> chunkRestored; // by chunk parity
  BackendCounters counters;

  std::function<void(double)> progress; // share of the ops compiled
  Status setUp(const LoadedPlan &plan, const WeightSet &weightSet);
  Status compile(const plan::Model &model, const WeightSet &weightSet);
  ~State() {
    if (parking)
      cudaFreeHost(parking);
  }
};

namespace {

// Places params where the plan put them, converted to bf16 and checking
// sizes as the CPU backend does: resident params are uploaded once (on
// first use); streamed ones go to pinned host memory and are copied into
// the op's weight-ring slot before each run of the op.
class Compiler {
public:
  Compiler(const plan::Model &model, const WeightSet &weights,
           DeviceArena &arena, std::optional<DeviceArena> &ring,
           size_t ringSlotBytes, int ringSlots, PinnedHostPool &pinned,
           std::vector<std::vector<float>> &floats, int32_t maxContext)
      : model_(model), weights_(weights), arena_(arena), ring_(ring),
        ringSlotBytes_(ringSlotBytes), ringSlots_(ringSlots), pinned_(pinned),
        floats_(floats), maxContext_(maxContext),
        uploaded_(model.params()->size(), nullptr) {}

  // Streamed weights of the op compiled next go to ring slot
  // (streamed ops so far) mod (ring slots).
  void beginOp() { parts_.clear(), slotUsed_ = 0; }
  std::vector<CopyPart> takeParts() { return std::move(parts_); }
  int streamedOps = 0;

  Status check(int index, int64_t size, const char *field) {
    if (index < 0 || index >= static_cast<int>(uploaded_.size()))
      return makeError("'{}' refers to param {}, which does not exist", field,
                       index);
    int64_t have = paramElements(*model_.params()->Get(index));
    if (have != size)
      return makeError("'{}' (param {}) has {} values, the op needs {}", field,
                       index, have, size);
    return Status::success();
  }

  // Experts of the param kept on the GPU: all unless it is streamed.
  int64_t residentExperts(int index, int64_t experts) const {
    const plan::Param &param = *model_.params()->Get(index);
    return param.placement() == plan::Placement::host_streamed
               ? std::min<int64_t>(param.gpu_experts(), experts)
               : experts;
  }

  Result<const bf16 *> upload(std::span<const bf16> host, const char *what) {
    auto device = arena_.allocateArray<bf16>(host.size(), what);
    if (!device)
      return device.error();
    MOE_CUDA_TRY(cudaMemcpy(*device, host.data(), host.size() * sizeof(bf16),
                            cudaMemcpyHostToDevice));
    return static_cast<const bf16 *>(*device);
  }

  // `host` into pinned memory and a copy of it into this op's ring slot.
  Result<const bf16 *> stream(std::span<const bf16> host, const char *what) {
    size_t bytes = host.size() * sizeof(bf16);
    if (!ring_ || slotUsed_ + bytes > ringSlotBytes_)
      return makeError("the plan's weight ring ({} slot(s) of {} bytes) has "
                       "no room for '{}' ({} bytes, {} already in this op's "
                       "slot)",
                       ringSlots_, ringSlotBytes_, what, bytes, slotUsed_);
    auto staged = pinned_.allocate(bytes, what);
    if (!staged)
      return staged.error();
    std::memcpy(*staged, host.data(), bytes);
    auto *device = static_cast<char *>(ring_->base()) +
                   size_t(streamedOps % ringSlots_) * ringSlotBytes_ +
                   slotUsed_;
    slotUsed_ += (bytes + kPoolAlignment - 1) / kPoolAlignment * kPoolAlignment;
    parts_.push_back({*staged, device, bytes});
    return reinterpret_cast<const bf16 *>(device);
  }

  // A stacked weight of `experts` equal blocks, split as the plan placed it.
  Result<ExpertWeight> place(std::span<const bf16> host, int64_t experts,
                             int64_t residentExperts, const char *what) {
    ExpertWeight w;
    w.stride = static_cast<int64_t>(host.size()) / experts;
    w.residentExperts = residentExperts;
    size_t split = size_t(residentExperts * w.stride);
    if (split > 0) {
      auto device = upload(host.first(split), what);
      if (!device)
        return device.error();
      w.resident = *device;
    }
    if (split < host.size()) {
      auto device = stream(host.subspan(split), what);
      if (!device)
        return device.error();
      w.streamed = *device;
    }
    return w;
  }

  Result<ExpertWeight> bindExperts(int index, int64_t experts, int64_t size,
                                   const char *field, bool optional = false) {
    if (index < 0 && optional)
      return ExpertWeight{};
    if (index < 0)
      return makeError("'{}' is missing", field);
    MOE_RETURN_IF_ERROR(check(index, size, field));
    return place(readBf16(weights_, index), experts,
                 residentExperts(index, experts), field);
  }

  // The embedding table is read in place when streamed: the kernel gathers
  // only the batch's rows from pinned memory (mapped into the device's
  // address space).
  Status bindTable(const bf16 *&out, int index, int64_t size) {
    MOE_RETURN_IF_ERROR(check(index, size, "table"));
    if (model_.params()->Get(index)->placement() !=
        plan::Placement::host_streamed)
      return bind(out, index, size, "table");
    auto staged = pinned_.allocate(size_t(size) * sizeof(bf16), "table");
    if (!staged)
      return staged.error();
    weights_.toBf16(size_t(index),
                    {static_cast<uint16_t *>(*staged), size_t(size)});
    out = static_cast<const bf16 *>(*staged);
    return Status::success();
  }

  Status bind(const bf16 *&out, int index, int64_t size, const char *field,
              bool optional = false) {
    out = nullptr;
    if (index < 0 && optional)
      return Status::success();
    if (index < 0)
      return makeError("'{}' is missing", field);
    MOE_RETURN_IF_ERROR(check(index, size, field));
    if (model_.params()->Get(index)->placement() ==
        plan::Placement::host_streamed) {
      auto device = stream(readBf16(weights_, index), field);
      if (!device)
        return device.error();
      out = *device;
      return Status::success();
    }
    if (!uploaded_[index]) {
      auto device = upload(readBf16(weights_, index), field);
      if (!device)
        return device.error();
      uploaded_[index] = *device;
    }
    out = uploaded_[index];
    return Status::success();
  }

  // An fp32 param kept in fp32 (sinks, correction biases): -1 when absent.
  Result<int> bindFloat(int index, int64_t size, const char *field) {
    if (index < 0)
      return -1;
    MOE_RETURN_IF_ERROR(check(index, size, field));
    floats_.push_back(weights_.toFloat32(index));
    return static_cast<int>(floats_.size()) - 1;
  }

  // cos and sin tables, shared by the layers of one RoPE.
  Result<std::pair<int, int>> rope(const plan::Rope &plan, int64_t limit) {
    model::RopeParams p = model::RopeParams::fromPlan(plan);
    if (p.rotaryDim < 0 || p.rotaryDim % 2 != 0 || p.rotaryDim > limit)
      return makeError("rope rotary_dim {} must be even and at most {}",
                       p.rotaryDim, limit);
    if (p.rotaryDim == 0)
      return std::pair{-1, -1};
    if (!(p.theta > 1.0))
      return makeError("rope theta {} must exceed 1", p.theta);
    if (p.yarn && (!(p.factor > 0) || p.originalMaxPosition <= 0))
      return makeError("yarn rope needs a positive factor and "
                       "original_max_position");
    for (const auto &[params, tables] : ropes_)
      if (params == p)
        return tables;
    std::vector<float> inverse = model::ropeInverseFrequencies(p);
    int64_t half = p.rotaryDim / 2;
    std::vector<float> cos(maxContext_ * half), sin(maxContext_ * half);
    kn::buildRopeTable(inverse.data(), half, p.attentionFactor, maxContext_,
                       cos.data(), sin.data());
    floats_.push_back(std::move(cos));
    floats_.push_back(std::move(sin));
    int at = static_cast<int>(floats_.size()) - 2;
    ropes_.emplace_back(p, std::pair{at, at + 1});
    return ropes_.back().second;
  }

  Result<Op> attention(const plan::Attention &a, int64_t hidden, int layer,
                       std::vector<KvCache> &caches) {
    AttentionOp k{};
    k.hidden = hidden;
    k.heads = a.num_heads();
    k.kvHeads = a.num_kv_heads();
    k.headDim = a.head_dim();
    if (k.heads <= 0 || k.kvHeads <= 0 || k.headDim <= 0 ||
        k.heads % k.kvHeads != 0)
      return makeError("heads {} / kv heads {} / head_dim {} are invalid",
                       k.heads, k.kvHeads, k.headDim);
    if (!kn::attentionSupports(static_cast<int>(k.heads),
                               static_cast<int>(k.kvHeads),
                               static_cast<int>(k.headDim)))
      return makeError("the attention kernel does not support {} heads over "
                       "{} kv heads of head_dim {} (head_dim 16..256, a power "
                       "of 2; at most 16 heads per kv head, 8 at head_dim 256)",
                       k.heads, k.kvHeads, k.headDim);
    auto tables = rope(*a.rope(), k.headDim);
    if (!tables)
      return tables.error();
    std::tie(k.cos, k.sin) = *tables;
    k.rotaryDim = a.rope()->rotary_dim();
    k.style = static_cast<kn::RopeStyle>(a.rope()->style());
    k.scale = static_cast<float>(a.scale());
    k.ownsKv = a.kv_source_layer() < 0;
    int64_t qw = k.heads * k.headDim, kvw = k.kvHeads * k.headDim;
    MOE_RETURN_IF_ERROR(bind(k.q, a.q(), qw * hidden, "q"));
    MOE_RETURN_IF_ERROR(bind(k.o, a.o(), hidden * qw, "o"));
    MOE_RETURN_IF_ERROR(bind(k.qBias, a.q_bias(), qw, "q_bias", true));
    MOE_RETURN_IF_ERROR(bind(k.oBias, a.o_bias(), hidden, "o_bias", true));
    auto sinks = bindFloat(a.sinks(), k.heads, "sinks");
    if (!sinks)
      return sinks.error();
    k.sinks = *sinks;
    k.qkNorm = a.qk_norm();
    k.qkEps = static_cast<float>(a.qk_norm_eps());
    bool perHead = k.qkNorm == plan::QKNorm::per_head;
    if (k.qkNorm != plan::QKNorm::none)
      MOE_RETURN_IF_ERROR(
          bind(k.qNorm, a.q_norm(), perHead ? k.headDim : qw, "q_norm"));
    if (a.sliding_window() < 0)
      return makeError("sliding_window {} is negative", a.sliding_window());
    k.window = a.sliding_window();
    if (k.ownsKv) {
      MOE_RETURN_IF_ERROR(bind(k.k, a.k(), kvw * hidden, "k"));
      MOE_RETURN_IF_ERROR(bind(k.v, a.v(), kvw * hidden, "v"));
      MOE_RETURN_IF_ERROR(bind(k.kBias, a.k_bias(), kvw, "k_bias", true));
      MOE_RETURN_IF_ERROR(bind(k.vBias, a.v_bias(), kvw, "v_bias", true));
      if (k.qkNorm != plan::QKNorm::none)
        MOE_RETURN_IF_ERROR(
            bind(k.kNorm, a.k_norm(), perHead ? k.headDim : kvw, "k_norm"));
      k.cache = static_cast<int>(caches.size());
      caches.push_back({k.kvHeads, k.headDim});
      layerCaches_.emplace_back(layer, k.cache);
      return Op(k);
    }
    auto source = std::find_if(
        layerCaches_.begin(), layerCaches_.end(),
        [&](const auto &entry) { return entry.first == a.kv_source_layer(); });
    if (source == layerCaches_.end())
      return makeError("kv_source_layer {} has no K/V cache before this op",
                       a.kv_source_layer());
    k.cache = source->second;
    if (caches[k.cache].kvHeads != k.kvHeads ||
        caches[k.cache].headDim != k.headDim)
      return makeError("kv_source_layer {} caches {} heads of {}, this layer "
                       "reads {} of {}",
                       a.kv_source_layer(), caches[k.cache].kvHeads,
                       caches[k.cache].headDim, k.kvHeads, k.headDim);
    return Op(k);
  }

  Result<Op> mla(const plan::MLAttention &a, int64_t hidden,
                 std::vector<KvCache> &caches) {
    MlaOp k{};
    k.hidden = hidden;
    k.heads = a.num_heads();
    k.qLoraRank = a.q_lora_rank();
    k.latent = a.kv_lora_rank();
    k.nope = a.qk_nope_head_dim();
    k.ropeDim = a.qk_rope_head_dim();
    k.vDim = a.v_head_dim();
    if (k.heads <= 0 || k.qLoraRank < 0 || k.latent <= 0 || k.nope <= 0 ||
        k.ropeDim <= 0 || k.vDim <= 0)
      return makeError("MLA dimensions are invalid");
    if (!kn::mlaAttentionSupports(static_cast<int>(k.heads),
                                  static_cast<int>(k.latent),
                                  static_cast<int>(k.ropeDim)))
      return makeError("the MLA kernel does not support {} heads with "
                       "kv_lora_rank {} and qk_rope_head_dim {}",
                       k.heads, k.latent, k.ropeDim);
    if (a.rope()->rotary_dim() != k.ropeDim)
      return makeError("rope rotary_dim {} differs from qk_rope_head_dim {}",
                       a.rope()->rotary_dim(), k.ropeDim);
    auto tables = rope(*a.rope(), k.ropeDim);
    if (!tables)
      return tables.error();
    std::tie(k.cos, k.sin) = *tables;
    k.style = static_cast<kn::RopeStyle>(a.rope()->style());
    k.scale = static_cast<float>(a.scale());
    k.eps = static_cast<float>(a.norm_eps());
    int64_t qw = k.heads * (k.nope + k.ropeDim);
    if (k.qLoraRank > 0) {
      MOE_RETURN_IF_ERROR(bind(k.qA, a.q_a(), k.qLoraRank * hidden, "q_a"));
      MOE_RETURN_IF_ERROR(
          bind(k.qANorm, a.q_a_norm(), k.qLoraRank, "q_a_norm"));
      MOE_RETURN_IF_ERROR(bind(k.qB, a.q_b(), qw * k.qLoraRank, "q_b"));
    } else {
      MOE_RETURN_IF_ERROR(bind(k.q, a.q(), qw * hidden, "q"));
    }
    MOE_RETURN_IF_ERROR(
        bind(k.kvA, a.kv_a(), (k.latent + k.ropeDim) * hidden, "kv_a"));
    MOE_RETURN_IF_ERROR(bind(k.kvANorm, a.kv_a_norm(), k.latent, "kv_a_norm"));
    MOE_RETURN_IF_ERROR(bind(k.o, a.o(), hidden * k.heads * k.vDim, "o"));
    // kv_b [heads·(nope + vDim), latent] split per head into W_UK,hᵀ
    // [latent, nope] (transposed: the GEMMs take [out, in]) and W_UV,h
    // [vDim, latent], in one buffer placed where the plan put kv_b.
    int64_t perHead = (k.nope + k.vDim) * k.latent;
    MOE_RETURN_IF_ERROR(check(a.kv_b(), k.heads * perHead, "kv_b"));
    HostBf16 kvB = readBf16(weights_, a.kv_b());
    HostBf16 split(kvB.size);
    bf16 *wUkT = split.data.get(), *wUv = wUkT + k.heads * k.latent * k.nope;
    for (int64_t h = 0; h < k.heads; ++h) {
      const bf16 *block = kvB.data.get() + h * perHead;
      for (int64_t d = 0; d < k.nope; ++d)
        for (int64_t c = 0; c < k.latent; ++c)
          wUkT[(h * k.latent + c) * k.nope + d] = block[d * k.latent + c];
      std::copy_n(block + k.nope * k.latent, k.vDim * k.latent,
                  wUv + h * k.vDim * k.latent);
    }
    auto device = model_.params()->Get(a.kv_b())->placement() ==
                          plan::Placement::host_streamed
                      ? stream(split, "kv_b")
                      : upload(split, "kv_b");
    if (!device)
      return device.error();
    k.wUkT = *device;
    k.wUv = *device + k.heads * k.latent * k.nope;
    k.cache = static_cast<int>(caches.size());
    caches.push_back({1, k.latent + k.ropeDim, false});
    return Op(k);
  }

  // `states` gets the floats one slot's state of this op takes.
  Result<Op> lightning(const plan::LightningAttention &a, int64_t hidden,
                       std::vector<int64_t> &states) {
    LightningOp k{};
    k.hidden = hidden;
    k.heads = a.num_heads();
    k.headDim = a.head_dim();
    k.eps = static_cast<float>(a.norm_eps());
    if (!kn::lightningAttentionSupports(static_cast<int>(k.heads),
                                        static_cast<int>(k.headDim)))
      return makeError("the lightning attention kernel does not support {} "
                       "heads of head_dim {} (head_dim 16, 32, 64 or 128)",
                       k.heads, k.headDim);
    int64_t w = k.heads * k.headDim;
    MOE_RETURN_IF_ERROR(bind(k.qkv, a.qkv(), 3 * w * hidden, "qkv"));
    MOE_RETURN_IF_ERROR(bind(k.gate, a.gate(), w * hidden, "gate"));
    MOE_RETURN_IF_ERROR(bind(k.norm, a.norm(), w, "norm"));
    MOE_RETURN_IF_ERROR(bind(k.out, a.out(), hidden * w, "out"));
    floats_.push_back(model::lightningDecays(k.heads, a.decay_scale()));
    k.decay = static_cast<int>(floats_.size()) - 1;
    k.state = static_cast<int>(states.size());
    states.push_back(w * k.headDim);
    return Op(k);
  }

  Result<Op> router(const plan::Router &r, int64_t hidden) {
    RouterOp k{};
    k.hidden = hidden;
    k.experts = r.num_experts();
    k.topK = r.top_k();
    k.groups = r.n_group();
    k.keptGroups = r.topk_group();
    if (k.experts <= 0 || k.experts > 256 || k.topK < 1 || k.topK > 8 ||
        k.topK > k.experts)
      return makeError("router of {} experts, top {}: the CUDA router takes "
                       "at most 256 experts and top 8",
                       k.experts, k.topK);
    if (k.groups <= 0 || k.groups > 8 || k.experts % k.groups != 0 ||
        k.keptGroups <= 0 || k.keptGroups > k.groups)
      return makeError("router groups {} / kept {} do not fit {} experts",
                       k.groups, k.keptGroups, k.experts);
    k.scoring = static_cast<kn::RouterScoring>(r.scoring());
    k.selection = static_cast<kn::RouterSelection>(r.selection());
    k.normalize = r.normalize();
    k.scaling = static_cast<float>(r.scaling());
    if (r.weight() < 0)
      return makeError("'weight' is missing");
    auto weight = bindFloat(r.weight(), k.experts * hidden, "weight");
    if (!weight)
      return weight.error();
    k.weight = *weight;
    auto bias = bindFloat(r.bias(), k.experts, "bias");
    if (!bias)
      return bias.error();
    k.bias = *bias;
    auto correction =
        bindFloat(r.correction_bias(), k.experts, "correction_bias");
    if (!correction)
      return correction.error();
    k.correction = *correction;
    return Op(k);
  }

  Result<Op> experts(const plan::Experts &e, int64_t hidden, int64_t topK) {
    ExpertsOp k{};
    k.hidden = hidden;
    k.width = e.intermediate_size();
    k.experts = e.num_experts();
    k.topK = topK;
    int64_t n = k.experts, h = hidden, w = k.width;
    if (n <= 0 || w <= 0)
      return makeError("experts and intermediate_size must be positive");
    if (n > 1024)
      return makeError("{} experts exceed the dispatch kernel's 1024", n);
    k.clamped = e.activation() == plan::ExpertActivation::swiglu_clamped;
    k.limit = static_cast<float>(e.swiglu_limit());
    k.alpha = static_cast<float>(e.swiglu_alpha());
    auto downBias = bindExperts(e.down_bias(), n, n * h, "down_bias", true);
    if (!downBias)
      return downBias.error();
    k.downBias = *downBias;
    HostBf16 gateUp(size_t(2 * n * w * h)), down(size_t(n * h * w));
    int gateUpParam = e.gate_up();
    if (e.layout() == plan::ExpertLayout::separate) {
      if (k.clamped)
        return makeError("swiglu_clamped needs the fused layout");
      if (e.gate_up_bias() >= 0)
        return makeError("gate_up_bias needs the fused layout");
      MOE_RETURN_IF_ERROR(check(e.gate(), n * w * h, "gate"));
      MOE_RETURN_IF_ERROR(check(e.up(), n * w * h, "up"));
      MOE_RETURN_IF_ERROR(check(e.down(), n * h * w, "down"));
      // Gate and up rows of each expert, one after the other.
      for (auto [index, offset] :
           {std::pair{e.gate(), int64_t{0}}, std::pair{e.up(), w * h}}) {
        HostBf16 values = readBf16(weights_, index);
        pool_.parallelFor(n, [&](int64_t first, int64_t last) {
          for (int64_t x = first; x < last; ++x)
            std::copy_n(values.data.get() + x * w * h, w * h,
                        gateUp.data.get() + 2 * x * w * h + offset);
        });
      }
      down = readBf16(weights_, e.down());
      gateUpParam = e.gate();
    } else {
      if (!k.clamped)
        return makeError("the fused layout needs swiglu_clamped");
      // gate_up [E, H, 2I] and down [E, I, H] are [in, out]: transposed once.
      MOE_RETURN_IF_ERROR(check(e.gate_up(), n * h * 2 * w, "gate_up"));
      MOE_RETURN_IF_ERROR(check(e.down(), n * w * h, "down"));
      auto gateUpBias =
          bindExperts(e.gate_up_bias(), n, n * 2 * w, "gate_up_bias", true);
      if (!gateUpBias)
        return gateUpBias.error();
      k.gateUpBias = *gateUpBias;
      std::vector<float> values = weights_.toFloat32(e.gate_up());
      pool_.parallelFor(n, [&](int64_t first, int64_t last) {
        for (int64_t x = first; x < last; ++x)
          for (int64_t j = 0; j < h; ++j)
            for (int64_t c = 0; c < 2 * w; ++c)
              gateUp.data[(x * 2 * w + c) * h + j] =
                  __float2bfloat16_rn(values[(x * h + j) * 2 * w + c]);
      });
      values = weights_.toFloat32(e.down());
      pool_.parallelFor(n, [&](int64_t first, int64_t last) {
        for (int64_t x = first; x < last; ++x)
          for (int64_t i = 0; i < w; ++i)
            for (int64_t j = 0; j < h; ++j)
              down.data[(x * h + j) * w + i] =
                  __float2bfloat16_rn(values[(x * w + i) * h + j]);
      });
    }
    auto gu =
        place(gateUp, n, residentExperts(gateUpParam, n), "experts gate|up");
    if (!gu)
      return gu.error();
    auto d = place(down, n, residentExperts(e.down(), n), "experts down");
    if (!d)
      return d.error();
    k.gateUp = *gu;
    k.down = *d;
    return Op(k);
  }

  Result<Op> mlp(const plan::MLP &m, int64_t hidden) {
    MlpOp k{};
    k.hidden = hidden;
    k.width = m.intermediate_size();
    int64_t h = hidden, w = k.width;
    if (w <= 0)
      return makeError("intermediate_size must be positive");
    MOE_RETURN_IF_ERROR(check(m.gate(), w * h, "gate"));
    MOE_RETURN_IF_ERROR(check(m.up(), w * h, "up"));
    HostBf16 gateUp(size_t(2 * w * h));
    weights_.toBf16(size_t(m.gate()), gateUp.bits(0, size_t(w * h)));
    weights_.toBf16(size_t(m.up()), gateUp.bits(size_t(w * h), size_t(w * h)));
    auto device = place(gateUp, 1, residentExperts(m.gate(), 1), "mlp gate|up");
    if (!device)
      return device.error();
    k.gateUp = expertBlock(*device, 0);
    MOE_RETURN_IF_ERROR(bind(k.down, m.down(), h * w, "down"));
    MOE_RETURN_IF_ERROR(
        bind(k.outputGate, m.output_gate(), h, "output_gate", true));
    return Op(k);
  }

private:
  const plan::Model &model_;
  const WeightSet &weights_;
  DeviceArena &arena_;
  std::optional<DeviceArena> &ring_;
  size_t ringSlotBytes_;
  int ringSlots_;
  PinnedHostPool &pinned_;
  std::vector<CopyPart> parts_;
  size_t slotUsed_ = 0;
  ThreadPool pool_{0};
  std::vector<std::vector<float>> &floats_;
  int32_t maxContext_;
  std::vector<const bf16 *> uploaded_;
  std::vector<std::pair<model::RopeParams, std::pair<int, int>>> ropes_;
  std::vector<std::pair<int, int>> layerCaches_; // layer → KV cache
};

// Step-arena bytes per row that an op takes (its results and scratch); a
// little generous, the arena is sized from it.
int64_t opRowBytes(const Op &op) {
  constexpr int64_t b = sizeof(bf16);
  return std::visit(
      [](const auto &k) -> int64_t {
        using K = std::decay_t<decltype(k)>;
        if constexpr (std::is_same_v<K, EmbeddingOp>)
          return k.hidden * b;
        else if constexpr (std::is_same_v<K, NormOp>)
          return k.width * b;
        else if constexpr (std::is_same_v<K, AttentionOp>)
          return (2 * k.heads * k.headDim + 2 * k.kvHeads * k.headDim +
                  k.hidden) *
                 b;
        else if constexpr (std::is_same_v<K, RouterOp>)
          return k.experts * (b + 4) + k.topK * 8;
        else if constexpr (std::is_same_v<K, ExpertsOp>)
          return k.topK * ((2 * k.hidden + 3 * k.width) * b + 8) +
                 k.hidden * (4 + b);
        else if constexpr (std::is_same_v<K, MlpOp>)
          return (3 * k.width + k.hidden + 1) * b;
        else if constexpr (std::is_same_v<K, ResidualOp>)
          return k.width * b;
        else if constexpr (std::is_same_v<K, MlaOp>) // runMla's buffers
          return (k.heads *
                      (2 * k.nope + 2 * k.ropeDim + 4 * k.latent + 2 * k.vDim) +
                  k.qLoraRank + 3 * (k.latent + k.ropeDim) + k.hidden) *
                 b;
        else if constexpr (std::is_same_v<K, LightningOp>) // qkv, mixed, gate
          return (5 * k.heads * k.headDim + k.hidden) * b;
        else
          return k.hidden * b;
      },
      op);
}

} // namespace

Status CudaBackend::State::compile(const plan::Model &model,
                                   const WeightSet &weightSet) {
  Compiler compiler(model, weightSet, *weights, ring, ringSlotBytes, ringSlots,
                    *pinned, floats, maxContext);
  numValues = model.num_values();
  logitsValue = model.logits();
  gptOssNorm = model.model_type()->str() == "gpt_oss";
  std::vector<ValueInfo> infos(numValues);
  if (numValues <= 0)
    return makeError("the plan defines no values");
  infos[0] = {ValueKind::tokens, 1, 0};
  const auto &planParams = *model.params();
  bool logitsFromHead = false;
  const auto &planOps = *model.ops();
  for (uint32_t index = 0; index < planOps.size(); ++index) {
    const plan::Op &op = *planOps.Get(index);
    if (progress)
      progress(double(index) / double(planOps.size()));
    CompiledOp compiled;
    compiler.beginOp();
    compiled.layer = op.layer();
    compiled.operands.assign(op.operands()->begin(), op.operands()->end());
    compiled.results.assign(op.results()->begin(), op.results()->end());
    auto fail = [&](const Error &error) {
      return error.withContext(fmt::format("op {} ({}, layer {})", index,
                                           plan::EnumNameModule(op.spec_type()),
                                           op.layer()));
    };
    size_t operands = 1, results = 1;
    std::vector<ValueKind> wanted{ValueKind::activations};
    switch (op.spec_type()) {
    case plan::Module::Embedding:
      wanted = {ValueKind::tokens};
      break;
    case plan::Module::Router:
      results = 2;
      break;
    case plan::Module::Experts:
      operands = 3;
      wanted = {ValueKind::activations, ValueKind::routeWeights,
                ValueKind::routeIndices};
      break;
    case plan::Module::Residual:
      operands = 2;
      wanted = {ValueKind::activations, ValueKind::activations};
      break;
    default:
      break;
    }
    if (compiled.operands.size() != operands ||
        compiled.results.size() != results)
      return fail(
          makeError("expects {} operands and {} results", operands, results));
    for (int value : compiled.operands)
      if (value < 0 || value >= numValues)
        return fail(makeError("operand value {} does not exist", value));
    for (int value : compiled.results)
      if (value <= 0 || value >= numValues)
        return fail(makeError("result value {} is invalid", value));
    for (size_t i = 0; i < wanted.size(); ++i)
      if (infos[compiled.operands[i]].kind != wanted[i])
        return fail(makeError(
            "operand {} (value {}) is not {}", i, compiled.operands[i],
            wanted[i] == ValueKind::tokens        ? "the token ids"
            : wanted[i] == ValueKind::activations ? "an activation"
                                                  : "a router result"));
    int64_t in = infos[compiled.operands[0]].width;
    Result<Op> kernel = makeError("unsupported module");
    std::vector<ValueInfo> resultInfos{{ValueKind::activations, in, 0}};
    switch (op.spec_type()) {
    case plan::Module::Embedding: {
      int table = op.spec_as_Embedding()->table();
      if (table < 0 || table >= static_cast<int>(planParams.size()) ||
          planParams.Get(table)->shape()->size() != 2) {
        kernel = makeError("needs a [vocab, hidden] table");
        break;
      }
      EmbeddingOp k{};
      k.vocab = planParams.Get(table)->shape()->Get(0);
      k.hidden = planParams.Get(table)->shape()->Get(1);
      Status bound = compiler.bindTable(k.table, table, k.vocab * k.hidden);
      kernel = bound.ok() ? Result<Op>(k) : Result<Op>(bound.error());
      resultInfos = {{ValueKind::activations, k.hidden, 0}};
      embeddingVocab = k.vocab;
      break;
    }
    case plan::Module::RMSNorm: {
      const plan::RMSNorm &n = *op.spec_as_RMSNorm();
      NormOp k{nullptr, in, static_cast<float>(n.eps())};
      Status bound = compiler.bind(k.weight, n.weight(), in, "weight");
      kernel = bound.ok() ? Result<Op>(k) : Result<Op>(bound.error());
      break;
    }
    case plan::Module::Attention:
      kernel = compiler.attention(*op.spec_as_Attention(), in, op.layer(), kv);
      break;
    case plan::Module::Router: {
      const plan::Router &r = *op.spec_as_Router();
      kernel = compiler.router(r, in);
      resultInfos = {{ValueKind::routeWeights, r.top_k(), 0},
                     {ValueKind::routeIndices, r.top_k(), r.num_experts()}};
      break;
    }
    case plan::Module::Experts: {
      const ValueInfo &routeWeights = infos[compiled.operands[1]];
      const ValueInfo &indices = infos[compiled.operands[2]];
      const plan::Experts &e = *op.spec_as_Experts();
      if (routeWeights.width != indices.width ||
          indices.experts > e.num_experts()) {
        kernel = makeError("the routing weights and indices do not match "
                           "{} experts",
                           e.num_experts());
        break;
      }
      kernel = compiler.experts(e, in, routeWeights.width);
      break;
    }
    case plan::Module::MLP:
      kernel = compiler.mlp(*op.spec_as_MLP(), in);
      break;
    case plan::Module::Residual: {
      const plan::Residual &r = *op.spec_as_Residual();
      if (infos[compiled.operands[1]].width != in) {
        kernel = makeError("skip and update differ in width");
        break;
      }
      kernel = Op(ResidualOp{static_cast<float>(r.skip_scale()),
                             static_cast<float>(r.update_scale()), in});
      break;
    }
    case plan::Module::LMHead: {
      int weight = op.spec_as_LMHead()->weight();
      if (weight < 0 || weight >= static_cast<int>(planParams.size())) {
        kernel = makeError("weight param {} does not exist", weight);
        break;
      }
      HeadOp k{nullptr, planParams.Get(weight)->shape()->Get(0), in};
      Status bound = compiler.bind(k.weight, weight, k.vocab * in, "weight");
      kernel = bound.ok() ? Result<Op>(k) : Result<Op>(bound.error());
      resultInfos = {{ValueKind::logits, k.vocab, 0}};
      logitsFromHead |= compiled.results[0] == logitsValue;
      vocab = std::max(vocab, k.vocab);
      break;
    }
    case plan::Module::MLAttention:
      kernel = compiler.mla(*op.spec_as_MLAttention(), in, kv);
      break;
    case plan::Module::LightningAttention:
      kernel = compiler.lightning(*op.spec_as_LightningAttention(), in,
                                  lightningStateFloats);
      break;
    case plan::Module::NONE:
      break;
    }
    if (!kernel.ok())
      return fail(kernel.error());
    compiled.op = std::move(*kernel);
    std::vector<CopyPart> parts = compiler.takeParts();
    if (!parts.empty()) {
      compiled.streamIndex = static_cast<int>(streamed.size());
      streamed.push_back(std::move(parts));
      ++compiler.streamedOps;
    }
    for (size_t r = 0; r < compiled.results.size(); ++r)
      infos[compiled.results[r]] = resultInfos[r];
    ops.push_back(std::move(compiled));
  }
  for (const ValueInfo &info : infos)
    valueWidths.push_back(info.width);
  lastUse.assign(numValues, -1);
  definedBy.assign(numValues, -1);
  for (size_t index = 0; index < ops.size(); ++index) {
    for (int value : ops[index].operands)
      lastUse[value] = static_cast<int>(index);
    for (int value : ops[index].results)
      definedBy[value] = static_cast<int>(index);
  }
  // Ops of no layer (residual adds, the final norm and head) stay in the
  // segment of the layer before them: a segment of their own would park and
  // restore every value crossing it, several hidden states a layer.
  int segmentLayer = -1;
  for (size_t index = 0, streamedInSegment = 0; index < ops.size(); ++index) {
    bool streams = ops[index].streamIndex >= 0;
    int layer = ops[index].layer;
    if (segments.empty() || (layer >= 0 && layer != segmentLayer) ||
        (streams && streamedInSegment == size_t(ringSlots))) {
      segments.push_back({index, index});
      streamedInSegment = 0;
    }
    segments.back().second = index + 1;
    streamedInSegment += streams;
    if (layer >= 0)
      segmentLayer = layer;
  }
  // Per row at each op: the values alive across it in both forms (bf16 and
  // fp32) and the op's own bytes. The LM head's logits are made a chunk of
  // rows at a time (runHead), not per row. The planner's decodeRowBytes
  // (costmodel/Plan.cpp) reserves at least this for every decode row.
  for (size_t index = 0; index < ops.size(); ++index) {
    int at = static_cast<int>(index);
    int64_t live = 0;
    for (int value = 1; value < numValues; ++value)
      if (definedBy[value] < at && lastUse[value] >= at)
        live += 6 * valueWidths[value];
    const Op &op = ops[index].op;
    if (!std::holds_alternative<HeadOp>(op))
      for (int value : ops[index].results)
        live += 6 * valueWidths[value];
    rowBytes = std::max(rowBytes, live + opRowBytes(op));
  }
  for (const auto &[begin, stop] : segments) {
    int64_t parkedHere = 0, restoredHere = 0;
    for (int value = 1; value < numValues; ++value) {
      if (crossesSegment(value, begin, stop))
        parkedHere += 6 * valueWidths[value];
      if (restoredIn(value, begin))
        restoredHere += 4 * valueWidths[value];
    }
    parkRowBytes = std::max(parkRowBytes, parkedHere);
    restoreRowBytes = std::max(restoreRowBytes, restoredHere);
  }
  if (!logitsFromHead)
    return makeError("the logits value {} is not an LM head's result",
                     logitsValue);
  return Status::success();
}

namespace {
// Slots [0, gpuSlotsOf) keep their KV on the GPU, the rest in host memory.
int32_t gpuSlotsOf(const plan::Batching *batching, int32_t slots) {
  if (!batching)
    return slots;
  return static_cast<int32_t>(std::clamp<double>(
      std::llround(batching->kv_gpu_fraction() * slots), 0, slots));
}

size_t alignUp(size_t bytes) {
  return (bytes + kPoolAlignment - 1) / kPoolAlignment * kPoolAlignment;
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
  // Lightning attention's states stay on the GPU: a plan that keeps some
  // sequences' KV and states in host memory fails before anything is
  // uploaded.
  int32_t hostSlots = slots - gpuSlotsOf(plan.plan().batching(), slots);
  for (const plan::Op *op : *model.ops())
    if (op->spec_type() == plan::Module::LightningAttention && hostSlots > 0)
      return fail(makeError(
          "the plan keeps {} of {} sequences' KV and lightning attention "
          "states (layer {}) in host memory; the CUDA backend keeps those "
          "states on the GPU: plan with a larger GPU budget or a smaller "
          "batch, or use the CPU backend",
          hostSlots, slots, op->layer()));
  size_t count = model.params()->size();
  if (weights.size() != count)
    return fail(makeError("the weights hold {} params, the plan {}",
                          weights.size(), count));
  auto s = std::make_unique<State>();
  s->slots = slots;
  s->maxContext = maxContext;
  s->lengths.assign(slots, 0);
  s->progress = prepareProgress_;
  Status ready = s->setUp(plan, weights);
  if (!ready.ok())
    return fail(ready.error());
  if (options_.maxStepBytes > 0) {
    int64_t oneRow = s->rowBytes + s->parkRowBytes + s->restoreRowBytes;
    if (options_.maxStepBytes < size_t(oneRow + oneRow / 16))
      return fail(makeError("a step memory of {} bytes holds no row (one "
                            "needs {} bytes)",
                            options_.maxStepBytes, oneRow + oneRow / 16));
    s->memory.limit = std::min(s->memory.limit, options_.maxStepBytes);
  }
  s->prepared = true;
  state_ = std::move(s);
  return Status::success();
}

Status CudaBackend::State::setUp(const LoadedPlan &plan,
                                 const WeightSet &weightSet) {
  const plan::Model &model = plan.model();
  const plan::Batching *batching = plan.plan().batching();
  const plan::Schedule *schedule = plan.plan().schedule();

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
  pinned.emplace(hostOptions);

  gpuSlots = gpuSlotsOf(batching, slots);
  prefillMicroBatch = decodeMicroBatch = slots;
  int stagingBuffers = 2;
  if (batching) {
    prefillMicroBatch = std::clamp<int64_t>(
        batching->attention_micro_batch_prefill(), 1, slots);
    decodeMicroBatch =
        std::clamp<int64_t>(batching->attention_micro_batch_decode(), 1, slots);
    stagingBuffers = std::max(1, batching->kv_staging_buffers());
  }
  if (schedule)
    for (const plan::BufferPool *pool : *schedule->pools())
      if (pool->kind() == plan::PoolKind::weight_ring &&
          pool->buffer_bytes() > 0) {
        ringSlots = std::max(1, pool->count());
        ringSlotBytes = alignUp(size_t(pool->buffer_bytes()));
      }

  // Resident bf16 bytes: whole params, or their first gpu_experts experts;
  // each allocation rounded up to the pool alignment. Routers' params and
  // attention sinks are kept in fp32 (bindFloat), with the cache arena.
  std::vector<bool> inFp32(model.params()->size(), false);
  auto markFp32 = [&](int index) {
    if (index >= 0 && size_t(index) < inFp32.size())
      inFp32[size_t(index)] = true;
  };
  for (const plan::Op *op : *model.ops()) {
    if (const plan::Router *r = op->spec_as_Router()) {
      markFp32(r->weight());
      markFp32(r->bias());
      markFp32(r->correction_bias());
    }
    if (const plan::Attention *a = op->spec_as_Attention())
      markFp32(a->sinks());
  }
  size_t weightBytes = model.ops()->size() * 4 * kPoolAlignment;
  for (size_t index = 0; index < inFp32.size(); ++index) {
    const plan::Param *param = model.params()->Get(index);
    if (inFp32[index])
      continue;
    size_t elements = size_t(paramElements(*param));
    if (param->placement() == plan::Placement::host_streamed)
      elements = param->gpu_experts() > 0 ? elements / param->shape()->Get(0) *
                                                size_t(param->gpu_experts())
                                          : 0;
    weightBytes += elements * sizeof(bf16) + 2 * kPoolAlignment;
  }
  auto arena = DeviceArena::create(weightBytes, "weights");
  if (!arena)
    return arena.error();
  weights.emplace(std::move(*arena));
  if (ringSlotBytes > 0) {
    auto ringArena =
        DeviceArena::create(size_t(ringSlots) * ringSlotBytes, "weight ring");
    if (!ringArena)
      return ringArena.error();
    ring.emplace(std::move(*ringArena));
  }
  MOE_RETURN_IF_ERROR(compile(model, weightSet));

  // KV of GPU slots, staging buffers for host slots' micro-batches, fp32
  // params; host slots' KV in pinned memory.
  int32_t hostSlots = slots - gpuSlots;
  int64_t widest = 0;
  bool anyValues = false;
  for (const KvCache &cache : kv) {
    widest = std::max(widest, cache.width());
    anyValues = anyValues || cache.hasValues;
  }
  int64_t stagingSequences =
      hostSlots > 0 ? std::min<int64_t>(hostSlots, std::max(prefillMicroBatch,
                                                            decodeMicroBatch))
                    : 0;
  size_t stagingElements = size_t(stagingSequences) * maxContext * widest;
  size_t cacheBytes =
      (anyValues ? 2 : 1) * stagingBuffers * alignUp(stagingElements * 2);
  for (const KvCache &cache : kv)
    cacheBytes += (cache.hasValues ? 2 : 1) *
                  alignUp(size_t(gpuSlots) * maxContext * cache.width() * 2);
  for (const std::vector<float> &values : floats)
    cacheBytes += alignUp(values.size() * sizeof(float));
  for (int64_t perSlot : lightningStateFloats)
    cacheBytes += alignUp(size_t(slots) * size_t(perSlot) * sizeof(float));
  auto cacheArena = DeviceArena::create(cacheBytes + kPoolAlignment, "kv");
  if (!cacheArena)
    return cacheArena.error();
  cache.emplace(std::move(*cacheArena));
  for (KvCache &c : kv) {
    size_t gpuElements = size_t(gpuSlots) * maxContext * c.width();
    size_t hostElements = size_t(hostSlots) * maxContext * c.width();
    if (gpuElements > 0) {
      auto k = cache->allocateArray<bf16>(gpuElements, "k cache");
      if (!k)
        return k.error();
      c.k = *k;
      if (c.hasValues) {
        auto v = cache->allocateArray<bf16>(gpuElements, "v cache");
        if (!v)
          return v.error();
        c.v = *v;
      }
    }
    if (hostElements > 0) {
      auto k = pinned->allocate(hostElements * sizeof(bf16), "host k cache");
      if (!k)
        return k.error();
      c.hostK = static_cast<bf16 *>(*k);
      if (c.hasValues) {
        auto v = pinned->allocate(hostElements * sizeof(bf16), "host v cache");
        if (!v)
          return v.error();
        c.hostV = static_cast<bf16 *>(*v);
      }
    }
  }
  if (stagingElements > 0)
    for (int b = 0; b < stagingBuffers; ++b) {
      auto k = cache->allocateArray<bf16>(stagingElements, "k staging");
      if (!k)
        return k.error();
      stagingK.push_back(*k);
      bf16 *v = nullptr;
      if (anyValues) {
        auto staged = cache->allocateArray<bf16>(stagingElements, "v staging");
        if (!staged)
          return staged.error();
        v = *staged;
      }
      stagingV.push_back(v);
    }
  // Not initialised: a slot's first row (position 0) starts from zero.
  for (int64_t perSlot : lightningStateFloats) {
    auto device = cache->allocateArray<float>(size_t(slots) * size_t(perSlot),
                                              "lightning attention state");
    if (!device)
      return device.error();
    lightningStates.push_back(*device);
  }
  for (const std::vector<float> &values : floats) {
    auto device = cache->allocateArray<float>(values.size(), "fp32 param");
    if (!device)
      return device.error();
    MOE_CUDA_TRY(cudaMemcpy(*device, values.data(),
                            values.size() * sizeof(float),
                            cudaMemcpyHostToDevice));
    floatsOnDevice.push_back(*device);
  }
  floats.clear();

  size_t fixed =
      weights->capacity() + (ring ? ring->capacity() : 0) + cache->capacity();
  if (fixed + size_t(rowBytes) > budget)
    return makeError("the GPU budget of {} bytes leaves no room for "
                     "activations: resident weights {} + weight ring {} + "
                     "KV, staging and fp32 params {} bytes",
                     budget, weights->capacity(), ring ? ring->capacity() : 0,
                     cache->capacity());
  memory.limit = budget - fixed;
  // Freed step memory stays in the pool for the next op, not the driver.
  cudaMemPool_t pool = nullptr;
  int device = 0;
  MOE_CUDA_TRY(cudaGetDevice(&device));
  MOE_CUDA_TRY(
      cudaDeviceGetAttribute(&smCount, cudaDevAttrMultiProcessorCount, device));
  MOE_CUDA_TRY(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t keep = std::numeric_limits<uint64_t>::max();
  MOE_CUDA_TRY(
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  memory.pool = pool;

  for (auto *target :
       {&stream, &weightCopy, &kvLoad, &kvStore, &park, &restore}) {
    auto created = Stream::create();
    if (!created)
      return created.error();
    target->emplace(std::move(*created));
  }
  memory.freeingStreams = {stream->get(), park->get()};
  auto gemmRunner = GemmRunner::create();
  if (!gemmRunner)
    return gemmRunner.error();
  gemm = std::move(*gemmRunner);
  auto addEvents = [](std::vector<Event> &to, size_t n, bool timing) -> Status {
    for (size_t i = 0; i < n; ++i) {
      auto event = Event::create(timing);
      if (!event)
        return event.error();
      to.push_back(std::move(*event));
    }
    return Status::success();
  };
  MOE_RETURN_IF_ERROR(addEvents(weightsCopied, streamed.size(), false));
  MOE_RETURN_IF_ERROR(addEvents(ringSlotFree, size_t(ringSlots), false));
  MOE_RETURN_IF_ERROR(addEvents(stagingLoaded, stagingK.size(), false));
  MOE_RETURN_IF_ERROR(addEvents(stagingFree, stagingK.size(), false));
  for (auto *single : {&kvReady, &kvStored, &passStart, &opStart, &parkReady,
                       &segmentParked, &chunkParked[0], &chunkParked[1],
                       &restoreReady, &chunkRestored[0], &chunkRestored[1]}) {
    auto event = Event::create(false);
    if (!event)
      return event.error();
    single->emplace(std::move(*event));
  }
  counters.deviceFixedBytes = fixed;
  counters.pinnedHostBytes = pinned->pinnedBytes();
  return Status::success();
}

void CudaBackend::resetSlot(int32_t slot) {
  if (state_ && slot >= 0 && slot < state_->slots)
    state_->lengths[slot] = 0;
}

namespace {

// The streams, staging buffers and events of the host-KV path.
struct KvStreams {
  cudaStream_t load, store;
  const std::vector<bf16 *> &stagingK, &stagingV;
  const std::vector<Event> &loaded, &free;
  const Event &ready, &stored, &opStart;
  BackendCounters &counters;
};

// What one op sees of the step: the pass's device arrays, its memory and
// the streams.
struct Step {
  StepMemory &memory;
  GemmRunner &gemm;
  cudaStream_t stream;
  int64_t rows;
  // Per row: the slot in the KV array attention reads (a GPU slot, or a
  // host slot's index in its staging buffer), its position, and the row
  // of that array where its K/V go.
  const int32_t *attnSlots, *positions, *cacheRows, *logitRows;
  int64_t logitCount;
  CudaBackend::HeadOutput head; // host
  int32_t maxContext;
  int32_t maxSpan; // the longest context a row attends to (+1: its own)
  int smCount;
  int64_t perExpertGemmRows;
  bool gptOssNorm;
  const std::vector<float *> &floats;
  const KvPass &kvPass;
  const KvStreams &kvStreams;
  std::vector<void *> made; // this op's allocations
  // The op's attention partials, reused by its micro-batches (stream order
  // keeps them apart); among `made`, so freed with the op's scratch.
  float *partials = nullptr;
  size_t partialBytes = 0;

  template <typename T> Result<T *> alloc(int64_t count, const char *what) {
    auto ptr = memory.allocate(size_t(count) * sizeof(T), what, stream);
    if (!ptr)
      return ptr.error();
    made.push_back(*ptr);
    return static_cast<T *>(*ptr);
  }
  // At least `bytes` of attention partials; null for 0.
  Result<float *> attentionPartials(size_t bytes) {
    if (bytes > partialBytes) {
      auto more =
          alloc<float>(int64_t(bytes / sizeof(float)), "attention partials");
      if (!more)
        return more.error();
      partials = *more;
      partialBytes = bytes;
    }
    return bytes > 0 ? partials : nullptr;
  }
  const float *floatArray(int index) const {
    return index < 0 ? nullptr : floats[index];
  }
  // The bf16 / fp32 form of an activation, converted on first use.
  Result<const bf16 *> bf16Of(DeviceValue &value) {
    if (!value.a) {
      auto out = alloc<bf16>(rows * value.width, "bf16 activation");
      if (!out)
        return out.error();
      MOE_CUDA_TRY(kn::floatToBf16(value.f, rows * value.width, *out, stream));
      value.a = *out;
    }
    return static_cast<const bf16 *>(value.a);
  }
  Result<const float *> f32Of(DeviceValue &value) {
    if (!value.f) {
      auto out = alloc<float>(rows * value.width, "fp32 activation");
      if (!out)
        return out.error();
      MOE_CUDA_TRY(kn::bf16ToFloat(value.a, rows * value.width, *out, stream));
      value.f = *out;
    }
    return static_cast<const float *>(value.f);
  }
  Status linear(const bf16 *x, int64_t m, int64_t k, const bf16 *w, int64_t n,
                const bf16 *bias, bf16 *y) {
    return gemm.run(
        {.x = x, .w = w, .bias = bias, .y = y, .m = m, .n = n, .k = k}, stream);
  }
};

#define MOE_INPUT(var, expr)                                                   \
  auto var##Result_ = (expr);                                                  \
  if (!var##Result_)                                                           \
    return var##Result_.error();                                               \
  auto var = *var##Result_;

#define MOE_ALLOC(var, T, count, what)                                         \
  T *var = nullptr;                                                            \
  {                                                                            \
    auto moeAlloc_ = step.alloc<T>(count, what);                               \
    if (!moeAlloc_)                                                            \
      return moeAlloc_.error();                                                \
    var = *moeAlloc_;                                                          \
  }

// x = RMSNorm(x) · w in place, per row of `width`.
Status normInPlace(Step &step, bf16 *x, const bf16 *weight, int64_t rows,
                   int64_t width, float eps, bool weightAfterCast) {
  kn::RmsNormArgs norm;
  norm.x = x;
  norm.weight = weight;
  norm.out = x;
  norm.rows = rows;
  norm.width = width;
  norm.eps = eps;
  norm.weightAfterCast = weightAfterCast;
  MOE_CUDA_TRY(kn::rmsNorm(norm, step.stream));
  return Status::success();
}

Status runEmbedding(Step &step, const EmbeddingOp &k, const DeviceValue &ids,
                    DeviceValue &out) {
  MOE_ALLOC(y, float, step.rows *k.hidden, "embedding");
  MOE_CUDA_TRY(
      kn::embedRows(k.table, ids.i, step.rows, k.hidden, y, step.stream));
  out.f = y;
  return Status::success();
}

Status runNorm(Step &step, const NormOp &k, const DeviceValue &x,
               DeviceValue &out) {
  MOE_ALLOC(y, bf16, step.rows * k.width, "norm");
  out.a = y;
  if (x.f) {
    MOE_ALLOC(y32, float, step.rows *k.width, "norm fp32");
    MOE_CUDA_TRY(kn::rmsNormF32(x.f, k.weight, step.rows, k.width, k.eps, y,
                                y32, step.stream));
    out.f = y32;
    return Status::success();
  }
  kn::RmsNormArgs args;
  args.x = x.a;
  args.weight = k.weight;
  args.out = y;
  args.rows = step.rows;
  args.width = k.width;
  args.eps = k.eps;
  args.weightAfterCast = !step.gptOssNorm;
  MOE_CUDA_TRY(kn::rmsNorm(args, step.stream));
  return Status::success();
}

// Host slots' rows, a micro-batch at a time: its slots' cached K/V are
// loaded into a staging buffer on the load stream while earlier
// micro-batches attend, then the new rows are appended there and attended.
// A layer that owns its KV (`key` set) stores the new rows to pinned memory
// on the store stream, and the compute stream waits for that before the
// op's scratch, which the copies read, is freed. A layer sharing an earlier
// layer's KV loads the rows that layer stored.
template <typename Attend>
Status attendHostSlots(Step &step, const KvCache &cache, const bf16 *key,
                       const bf16 *value, const Attend &attend) {
  const KvPass &pass = step.kvPass;
  const KvStreams &io = step.kvStreams;
  int64_t width = cache.width(), context = step.maxContext;
  size_t rowBytes = size_t(width) * sizeof(bf16);
  size_t slotBytes = size_t(context) * rowBytes;
  if (key) {
    MOE_RETURN_IF_ERROR(io.ready.record(step.stream));
    MOE_CUDA_TRY(cudaStreamWaitEvent(io.store, io.ready.get()));
    for (const KvStoreRun &run : pass.stores) {
      for (auto [from, to] :
           {std::pair{key, cache.hostK}, std::pair{value, cache.hostV}}) {
        if (!to)
          continue;
        const bf16 *src = from + run.row * width;
        bf16 *dst = to + (run.hostSlot * context + run.position) * width;
        if (run.acrossSlots)
          MOE_CUDA_TRY(cudaMemcpy2DAsync(dst, slotBytes, src, rowBytes,
                                         rowBytes, run.rows,
                                         cudaMemcpyDeviceToHost, io.store));
        else
          MOE_CUDA_TRY(cudaMemcpyAsync(dst, src, run.rows * rowBytes,
                                       cudaMemcpyDeviceToHost, io.store));
      }
      io.counters.kvBytesToHost +=
          int64_t((cache.hasValues ? 2 : 1) * run.rows * rowBytes);
    }
    MOE_RETURN_IF_ERROR(io.stored.record(io.store));
  }
  if (!key || pass.loadsAfterCompute) {
    MOE_RETURN_IF_ERROR(io.opStart.record(step.stream));
    MOE_CUDA_TRY(cudaStreamWaitEvent(io.load, io.opStart.get()));
  }
  size_t buffers = io.stagingK.size();
  for (size_t m = 0; m < pass.microBatches.size(); ++m) {
    const KvMicroBatch &batch = pass.microBatches[m];
    size_t b = m % buffers;
    bf16 *stagedK = io.stagingK[b], *stagedV = io.stagingV[b];
    MOE_CUDA_TRY(cudaStreamWaitEvent(io.load, io.free[b].get()));
    for (const KvLoad &load : batch.loads) {
      int64_t length = key ? load.length : load.lengthAfter;
      if (length == 0)
        continue;
      for (auto [from, to] :
           {std::pair{cache.hostK, stagedK}, std::pair{cache.hostV, stagedV}})
        if (from)
          MOE_CUDA_TRY(
              cudaMemcpy2DAsync(to + load.local * context * width, slotBytes,
                                from + load.hostSlot * context * width,
                                slotBytes, size_t(length) * rowBytes,
                                load.count, cudaMemcpyHostToDevice, io.load));
      io.counters.kvBytesToDevice +=
          int64_t((cache.hasValues ? 2 : 1) * load.count * length * rowBytes);
    }
    MOE_RETURN_IF_ERROR(io.loaded[b].record(io.load));
    MOE_CUDA_TRY(cudaStreamWaitEvent(step.stream, io.loaded[b].get()));
    if (key)
      MOE_CUDA_TRY(
          kn::appendKv(key + batch.firstRow * width,
                       value ? value + batch.firstRow * width : nullptr,
                       step.cacheRows + batch.firstRow, batch.rows, width,
                       stagedK, stagedV, step.stream));
    MOE_RETURN_IF_ERROR(attend(batch.firstRow, batch.rows, stagedK, stagedV));
    MOE_RETURN_IF_ERROR(io.free[b].record(step.stream));
  }
  if (key)
    MOE_CUDA_TRY(cudaStreamWaitEvent(step.stream, io.stored.get()));
  return Status::success();
}

Status runAttention(Step &step, const AttentionOp &k, const KvCache &cache,
                    DeviceValue &in, DeviceValue &out) {
  MOE_INPUT(x, step.bf16Of(in));
  int64_t rows = step.rows, qw = k.heads * k.headDim;
  int64_t kvw = k.kvHeads * k.headDim;
  MOE_ALLOC(q, bf16, rows * qw, "attention q");
  MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.q, qw, k.qBias, q));
  bf16 *key = nullptr, *value = nullptr;
  if (k.ownsKv) {
    MOE_ALLOC(kk, bf16, rows * kvw, "attention k");
    MOE_ALLOC(vv, bf16, rows * kvw, "attention v");
    MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.k, kvw, k.kBias, kk));
    MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.v, kvw, k.vBias, vv));
    key = kk;
    value = vv;
    if (k.qkNorm == plan::QKNorm::full_width) {
      MOE_RETURN_IF_ERROR(
          normInPlace(step, kk, k.kNorm, rows, kvw, k.qkEps, false));
    }
  }
  if (k.qkNorm == plan::QKNorm::full_width) {
    MOE_RETURN_IF_ERROR(
        normInPlace(step, q, k.qNorm, rows, qw, k.qkEps, false));
  }
  bool perHead = k.qkNorm == plan::QKNorm::per_head;
  if (k.rotaryDim > 0 || perHead) {
    kn::RopeArgs rope;
    rope.q = q;
    rope.k = key;
    rope.rows = rows;
    rope.heads = static_cast<int>(k.heads);
    rope.kvHeads = key ? static_cast<int>(k.kvHeads) : 0;
    rope.headDim = static_cast<int>(k.headDim);
    rope.rotaryDim = static_cast<int>(k.rotaryDim);
    rope.style = k.style;
    rope.positions = k.rotaryDim > 0 ? step.positions : nullptr;
    rope.cos = step.floatArray(k.cos);
    rope.sin = step.floatArray(k.sin);
    rope.qNorm = perHead ? k.qNorm : nullptr;
    rope.kNorm = perHead && key ? k.kNorm : nullptr;
    rope.normEps = k.qkEps;
    MOE_CUDA_TRY(kn::applyRope(rope, step.stream));
  }
  MOE_ALLOC(o, bf16, rows * qw, "attention o");
  kn::AttentionArgs args;
  args.sinks = step.floatArray(k.sinks);
  args.heads = static_cast<int>(k.heads);
  args.kvHeads = static_cast<int>(k.kvHeads);
  args.headDim = static_cast<int>(k.headDim);
  args.seqStride = int64_t(step.maxContext) * kvw;
  args.window = k.window;
  args.maxSpan = k.window > 0
                     ? int32_t(std::min<int64_t>(step.maxSpan, k.window))
                     : step.maxSpan;
  args.scale = k.scale;
  // Rows [first, first + count) against the K/V array kCache / vCache.
  auto attend = [&](int64_t first, int64_t count, const bf16 *kCache,
                    const bf16 *vCache) -> Status {
    args.q = q + first * qw;
    args.out = o + first * qw;
    args.k = kCache;
    args.v = vCache;
    args.sequences = step.attnSlots + first;
    args.positions = step.positions + first;
    args.rows = count;
    MOE_INPUT(partials, step.attentionPartials(kn::attentionWorkspaceBytes(
                            count, args.heads, args.kvHeads, args.headDim,
                            args.maxSpan, step.smCount)));
    args.workspace = partials;
    MOE_CUDA_TRY(kn::attention(args, step.smCount, step.stream));
    return Status::success();
  };
  int64_t gpuRows = step.kvPass.gpuRows;
  if (gpuRows > 0) {
    if (k.ownsKv)
      MOE_CUDA_TRY(kn::appendKv(key, value, step.cacheRows, gpuRows, kvw,
                                cache.k, cache.v, step.stream));
    MOE_RETURN_IF_ERROR(attend(0, gpuRows, cache.k, cache.v));
  }
  if (rows > gpuRows)
    MOE_RETURN_IF_ERROR(
        attendHostSlots(step, cache, k.ownsKv ? key : nullptr, value, attend));
  MOE_ALLOC(y, bf16, rows * k.hidden, "attention out");
  MOE_RETURN_IF_ERROR(step.linear(o, rows, qw, k.o, k.hidden, k.oBias, y));
  out.a = y;
  return Status::success();
}

Status runMla(Step &step, const MlaOp &k, const KvCache &cache, DeviceValue &in,
              DeviceValue &out) {
  MOE_INPUT(x, step.bf16Of(in));
  int64_t rows = step.rows, heads = k.heads, r = k.latent;
  int64_t qkDim = k.nope + k.ropeDim, qw = heads * qkDim;
  int64_t cw = r + k.ropeDim;
  auto copyColumns = [&](bf16 *to, int64_t toWidth, const bf16 *from,
                         int64_t fromWidth, int64_t width, int64_t count) {
    return cudaMemcpy2DAsync(to, toWidth * sizeof(bf16), from,
                             fromWidth * sizeof(bf16), width * sizeof(bf16),
                             count, cudaMemcpyDeviceToDevice, step.stream);
  };
  MOE_ALLOC(q, bf16, rows * qw, "mla q");
  if (k.qLoraRank > 0) {
    MOE_ALLOC(qa, bf16, rows * k.qLoraRank, "mla q_a");
    MOE_RETURN_IF_ERROR(
        step.linear(x, rows, k.hidden, k.qA, k.qLoraRank, nullptr, qa));
    MOE_RETURN_IF_ERROR(
        normInPlace(step, qa, k.qANorm, rows, k.qLoraRank, k.eps, true));
    MOE_RETURN_IF_ERROR(
        step.linear(qa, rows, k.qLoraRank, k.qB, qw, nullptr, q));
  } else {
    MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.q, qw, nullptr, q));
  }
  // The cache rows [normed latent | roped k_pe] and the roped q_pe.
  MOE_ALLOC(kvA, bf16, rows * cw, "mla kv_a");
  MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.kvA, cw, nullptr, kvA));
  MOE_ALLOC(latent, bf16, rows * r, "mla latent");
  MOE_ALLOC(kPe, bf16, rows * k.ropeDim, "mla k_pe");
  MOE_ALLOC(qPe, bf16, rows * heads * k.ropeDim, "mla q_pe");
  MOE_CUDA_TRY(copyColumns(latent, r, kvA, cw, r, rows));
  MOE_CUDA_TRY(copyColumns(kPe, k.ropeDim, kvA + r, cw, k.ropeDim, rows));
  MOE_CUDA_TRY(
      copyColumns(qPe, k.ropeDim, q + k.nope, qkDim, k.ropeDim, rows * heads));
  MOE_RETURN_IF_ERROR(
      normInPlace(step, latent, k.kvANorm, rows, r, k.eps, true));
  kn::RopeArgs rope;
  rope.q = qPe;
  rope.k = kPe;
  rope.rows = rows;
  rope.heads = static_cast<int>(heads);
  rope.kvHeads = 1;
  rope.headDim = static_cast<int>(k.ropeDim);
  rope.rotaryDim = static_cast<int>(k.ropeDim);
  rope.style = k.style;
  rope.positions = step.positions;
  rope.cos = step.floatArray(k.cos);
  rope.sin = step.floatArray(k.sin);
  MOE_CUDA_TRY(kn::applyRope(rope, step.stream));
  MOE_ALLOC(rowsOut, bf16, rows * cw, "mla cache rows");
  MOE_CUDA_TRY(copyColumns(rowsOut, cw, latent, r, r, rows));
  MOE_CUDA_TRY(copyColumns(rowsOut + r, cw, kPe, k.ropeDim, k.ropeDim, rows));

  // Absorbed query q̃_h = W_UK,hᵀ q_nope,h, one GEMM per head on
  // head-major rows.
  MOE_ALLOC(qNope, bf16, heads * rows * k.nope, "mla q_nope");
  MOE_ALLOC(qTilde, bf16, heads * rows * r, "mla absorbed q");
  MOE_ALLOC(qLatent, bf16, rows * heads * r, "mla absorbed q rows");
  MOE_CUDA_TRY(kn::swapLeadingDims(q, rows, heads, qkDim, 0, k.nope, qNope,
                                   step.stream));
  for (int64_t h = 0; h < heads; ++h)
    MOE_RETURN_IF_ERROR(step.linear(qNope + h * rows * k.nope, rows, k.nope,
                                    k.wUkT + h * r * k.nope, r, nullptr,
                                    qTilde + h * rows * r));
  MOE_CUDA_TRY(
      kn::swapLeadingDims(qTilde, heads, rows, r, 0, r, qLatent, step.stream));

  MOE_ALLOC(mixed, bf16, rows * heads * r, "mla attention");
  kn::MlaAttentionArgs args;
  args.heads = static_cast<int>(heads);
  args.latentDim = static_cast<int>(r);
  args.ropeDim = static_cast<int>(k.ropeDim);
  args.seqStride = int64_t(step.maxContext) * cw;
  args.maxSpan = step.maxSpan;
  args.scale = k.scale;
  auto attend = [&](int64_t first, int64_t count, const bf16 *kCache,
                    const bf16 *) -> Status {
    args.qLatent = qLatent + first * heads * r;
    args.qRope = qPe + first * heads * k.ropeDim;
    args.cache = kCache;
    args.out = mixed + first * heads * r;
    args.sequences = step.attnSlots + first;
    args.positions = step.positions + first;
    args.rows = count;
    MOE_INPUT(partials, step.attentionPartials(kn::mlaAttentionWorkspaceBytes(
                            count, args.heads, args.latentDim, args.maxSpan,
                            step.smCount)));
    args.workspace = partials;
    MOE_CUDA_TRY(kn::mlaAttention(args, step.smCount, step.stream));
    return Status::success();
  };
  int64_t gpuRows = step.kvPass.gpuRows;
  if (gpuRows > 0) {
    MOE_CUDA_TRY(kn::appendKv(rowsOut, nullptr, step.cacheRows, gpuRows, cw,
                              cache.k, nullptr, step.stream));
    MOE_RETURN_IF_ERROR(attend(0, gpuRows, cache.k, nullptr));
  }
  if (rows > gpuRows)
    MOE_RETURN_IF_ERROR(attendHostSlots(step, cache, rowsOut, nullptr, attend));

  // o_h = W_UV,h · mixed_h per head, back to [rows, heads·vDim] for o.
  MOE_ALLOC(mixedHeads, bf16, heads * rows * r, "mla attention by head");
  MOE_ALLOC(oHeads, bf16, heads * rows * k.vDim, "mla values by head");
  MOE_ALLOC(o, bf16, rows * heads * k.vDim, "mla values");
  MOE_CUDA_TRY(kn::swapLeadingDims(mixed, rows, heads, r, 0, r, mixedHeads,
                                   step.stream));
  for (int64_t h = 0; h < heads; ++h)
    MOE_RETURN_IF_ERROR(step.linear(mixedHeads + h * rows * r, rows, r,
                                    k.wUv + h * k.vDim * r, k.vDim, nullptr,
                                    oHeads + h * rows * k.vDim));
  MOE_CUDA_TRY(kn::swapLeadingDims(oHeads, heads, rows, k.vDim, 0, k.vDim, o,
                                   step.stream));
  MOE_ALLOC(y, bf16, rows * k.hidden, "mla out");
  MOE_RETURN_IF_ERROR(
      step.linear(o, rows, heads * k.vDim, k.o, k.hidden, nullptr, y));
  out.a = y;
  return Status::success();
}

Status runLightning(Step &step, const LightningOp &k, float *state,
                    DeviceValue &in, DeviceValue &out) {
  MOE_INPUT(x, step.bf16Of(in));
  int64_t rows = step.rows, w = k.heads * k.headDim;
  MOE_ALLOC(qkv, bf16, rows * 3 * w, "lightning qkv");
  MOE_ALLOC(mixed, bf16, rows * w, "lightning attention");
  MOE_ALLOC(gate, bf16, rows * w, "lightning gate");
  MOE_ALLOC(y, bf16, rows * k.hidden, "lightning out");
  MOE_RETURN_IF_ERROR(
      step.linear(x, rows, k.hidden, k.qkv, 3 * w, nullptr, qkv));
  kn::LightningAttentionArgs a;
  a.qkv = qkv;
  a.state = state;
  a.decay = step.floatArray(k.decay);
  a.sequences = step.attnSlots; // every slot's state is on the GPU
  a.positions = step.positions;
  a.out = mixed;
  a.rows = rows;
  a.heads = static_cast<int>(k.heads);
  a.headDim = static_cast<int>(k.headDim);
  MOE_CUDA_TRY(kn::lightningAttention(a, step.stream));
  // HF normalises the fp32 attention output: one rounding, after the weight.
  MOE_RETURN_IF_ERROR(normInPlace(step, mixed, k.norm, rows, w, k.eps, false));
  MOE_RETURN_IF_ERROR(step.linear(x, rows, k.hidden, k.gate, w, nullptr, gate));
  MOE_CUDA_TRY(kn::sigmoidGate(gate, w, rows, w, mixed, step.stream));
  MOE_RETURN_IF_ERROR(step.linear(mixed, rows, w, k.out, k.hidden, nullptr, y));
  out.a = y;
  return Status::success();
}

Status runRouter(Step &step, const RouterOp &k, DeviceValue &in,
                 DeviceValue &weights, DeviceValue &indices) {
  MOE_INPUT(x, step.f32Of(in));
  int64_t rows = step.rows;
  MOE_ALLOC(logits32, float, rows *k.experts, "router logits");
  MOE_ALLOC(w, float, rows *k.topK, "route weights");
  MOE_ALLOC(idx, int32_t, rows * k.topK, "route indices");
  MOE_CUDA_TRY(kn::routerLogits(x, step.floatArray(k.weight),
                                step.floatArray(k.bias), rows, k.hidden,
                                k.experts, logits32, step.stream));
  kn::RouterArgs args;
  args.logits = logits32;
  args.correctionBias = step.floatArray(k.correction);
  args.weights = w;
  args.indices = idx;
  args.rows = rows;
  args.experts = static_cast<int>(k.experts);
  args.topK = static_cast<int>(k.topK);
  args.scoring = k.scoring;
  args.selection = k.selection;
  args.groups = k.groups;
  args.keptGroups = k.keptGroups;
  args.normalize = k.normalize;
  args.scaling = k.scaling;
  MOE_CUDA_TRY(kn::routeTopK(args, step.stream));
  weights.f = w;
  indices.i = idx;
  return Status::success();
}

Status runExperts(Step &step, const ExpertsOp &k, DeviceValue &in,
                  const DeviceValue &weights, const DeviceValue &indices,
                  DeviceValue &out) {
  MOE_INPUT(x, step.bf16Of(in));
  int64_t rows = step.rows, pairs = rows * k.topK;
  int64_t h = k.hidden, w = k.width;
  MOE_ALLOC(counts, int32_t, k.experts, "expert counts");
  MOE_ALLOC(offsets, int32_t, k.experts + 1, "expert offsets");
  MOE_ALLOC(slotToPair, int32_t, pairs, "slot to pair");
  MOE_ALLOC(pairToSlot, int32_t, pairs, "pair to slot");
  MOE_ALLOC(xs, bf16, pairs * h, "expert inputs");
  MOE_ALLOC(gu, bf16, pairs * 2 * w, "expert gate|up");
  MOE_ALLOC(act, bf16, pairs * w, "expert activations");
  MOE_ALLOC(down, bf16, pairs * h, "expert outputs");
  MOE_ALLOC(sum, float, rows *h, "expert sum");
  kn::DispatchArgs dispatch;
  dispatch.indices = indices.i;
  dispatch.rows = rows;
  dispatch.topK = static_cast<int>(k.topK);
  dispatch.experts = static_cast<int>(k.experts);
  dispatch.counts = counts;
  dispatch.offsets = offsets;
  dispatch.slotToPair = slotToPair;
  dispatch.pairToSlot = pairToSlot;
  MOE_CUDA_TRY(kn::buildDispatch(dispatch, step.stream));
  MOE_CUDA_TRY(
      kn::gatherRows(x, slotToPair, pairs, dispatch.topK, h, xs, step.stream));
  // Small groups (decode) run as one grouped launch per GEMM with the sizes
  // left on the device, so nothing waits. Large groups (prefill, or B over
  // 128 per expert) run one cuBLASLt GEMM per expert: its Hopper kernels are
  // ~3x the grouped kernel's mma.sync rate there (686 against ~200 TFLOP/s
  // at 512 rows), which is worth one host wait per layer for the counts.
  bool perExpert = pairs >= step.perExpertGemmRows * k.experts;
  std::vector<int32_t> hostOffsets;
  if (perExpert) {
    hostOffsets.resize(k.experts + 1);
    MOE_CUDA_TRY(cudaMemcpyAsync(hostOffsets.data(), offsets,
                                 hostOffsets.size() * sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, step.stream));
    MOE_CUDA_TRY(cudaStreamSynchronize(step.stream));
  }
  // y = x · Wᵀ (+ bias) for every expert's rows.
  auto expertsGemm = [&](const bf16 *in, const ExpertWeight &weight,
                         const ExpertWeight &bias, int64_t n, int64_t kDim,
                         bf16 *y) -> Status {
    if (!perExpert) {
      kn::GroupedGemmArgs args;
      args.x = in;
      args.offsets = offsets;
      args.weight = weight;
      args.bias = bias;
      args.y = y;
      args.rows = pairs;
      args.experts = dispatch.experts;
      args.n = n;
      args.k = kDim;
      MOE_CUDA_TRY(kn::groupedGemm(args, step.stream));
      return Status::success();
    }
    for (int64_t e = 0; e < k.experts; ++e) {
      int64_t first = hostOffsets[e], m = hostOffsets[e + 1] - first;
      if (m > 0)
        MOE_RETURN_IF_ERROR(step.linear(in + first * kDim, m, kDim,
                                        expertBlock(weight, e), n,
                                        expertBlock(bias, e), y + first * n));
    }
    return Status::success();
  };
  MOE_RETURN_IF_ERROR(expertsGemm(xs, k.gateUp, k.gateUpBias, 2 * w, h, gu));
  if (k.clamped)
    MOE_CUDA_TRY(
        kn::swigluClamped(gu, act, pairs, w, k.limit, k.alpha, step.stream));
  else
    MOE_CUDA_TRY(kn::siluMul(gu, act, pairs, w, step.stream));
  MOE_RETURN_IF_ERROR(expertsGemm(act, k.down, k.downBias, h, w, down));
  kn::CombineArgs combine;
  combine.expertOut = down;
  combine.weights = weights.f;
  combine.indices = indices.i;
  combine.pairToSlot = pairToSlot;
  combine.rows = rows;
  combine.topK = dispatch.topK;
  combine.width = h;
  combine.out = sum;
  MOE_CUDA_TRY(kn::combineExperts(combine, step.stream));
  out.f = sum;
  return Status::success();
}

Status runMlp(Step &step, const MlpOp &k, DeviceValue &in, DeviceValue &out) {
  MOE_INPUT(x, step.bf16Of(in));
  int64_t rows = step.rows, h = k.hidden, w = k.width;
  MOE_ALLOC(gu, bf16, rows * 2 * w, "mlp gate|up");
  MOE_ALLOC(act, bf16, rows * w, "mlp activations");
  MOE_ALLOC(y, bf16, rows * h, "mlp out");
  MOE_RETURN_IF_ERROR(step.linear(x, rows, h, k.gateUp, 2 * w, nullptr, gu));
  MOE_CUDA_TRY(kn::siluMul(gu, act, rows, w, step.stream));
  MOE_RETURN_IF_ERROR(step.linear(act, rows, w, k.down, h, nullptr, y));
  if (k.outputGate) {
    MOE_ALLOC(gate, bf16, rows, "mlp output gate");
    MOE_RETURN_IF_ERROR(
        step.linear(x, rows, h, k.outputGate, 1, nullptr, gate));
    MOE_CUDA_TRY(kn::sigmoidGate(gate, 1, rows, h, y, step.stream));
  }
  out.a = y;
  return Status::success();
}

Status runResidual(Step &step, const ResidualOp &k, DeviceValue &skipValue,
                   DeviceValue &updateValue, DeviceValue &out) {
  MOE_INPUT(skip, step.f32Of(skipValue));
  MOE_INPUT(update, step.f32Of(updateValue));
  MOE_ALLOC(y, float, step.rows *k.width, "residual");
  MOE_CUDA_TRY(kn::scaledAdd(skip, update, k.skipScale, k.updateScale,
                             step.rows * k.width, y, step.stream));
  out.f = y;
  return Status::success();
}

// Logits straight into the host array, a chunk of rows at a time so a
// large vocabulary does not need [rows, vocab] of device memory at once.
Status runHead(Step &step, const HeadOp &k, DeviceValue &in) {
  MOE_INPUT(x, step.bf16Of(in));
  bool greedy = step.head.tokens != nullptr;
  constexpr int64_t kChunkBytes = int64_t{64} << 20;
  int64_t chunk = std::clamp<int64_t>(kChunkBytes / (6 * k.vocab), 1,
                                      std::max<int64_t>(step.logitCount, 1));
  MOE_ALLOC(picked, bf16, chunk * k.hidden, "head rows");
  MOE_ALLOC(logits, bf16, chunk * k.vocab, "logits");
  float *logits32 = nullptr;
  int32_t *ids = nullptr;
  if (greedy) {
    MOE_ALLOC(chosen, int32_t, std::max<int64_t>(step.logitCount, 1),
              "greedy tokens");
    ids = chosen;
  } else {
    MOE_ALLOC(wide, float, chunk *k.vocab, "logits fp32");
    logits32 = wide;
  }
  for (int64_t first = 0; first < step.logitCount; first += chunk) {
    int64_t n = std::min(chunk, step.logitCount - first);
    // gatherRows with topK 1 picks rows by index.
    MOE_CUDA_TRY(kn::gatherRows(x, step.logitRows + first, n, 1, k.hidden,
                                picked, step.stream));
    MOE_RETURN_IF_ERROR(
        step.linear(picked, n, k.hidden, k.weight, k.vocab, nullptr, logits));
    if (greedy) {
      MOE_CUDA_TRY(
          kn::argmaxRows(logits, n, k.vocab, ids + first, step.stream));
      continue;
    }
    MOE_CUDA_TRY(kn::bf16ToFloat(logits, n * k.vocab, logits32, step.stream));
    MOE_CUDA_TRY(cudaMemcpyAsync(step.head.logits + first * k.vocab, logits32,
                                 size_t(n * k.vocab) * sizeof(float),
                                 cudaMemcpyDeviceToHost, step.stream));
  }
  if (greedy && step.logitCount > 0)
    MOE_CUDA_TRY(cudaMemcpyAsync(step.head.tokens, ids,
                                 size_t(step.logitCount) * sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, step.stream));
  return Status::success();
}

#undef MOE_ALLOC
#undef MOE_INPUT

} // namespace

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
  State &s = *state_;
  int64_t rows = static_cast<int64_t>(batch.rows.size());
  if (static_cast<int64_t>(batch.tokenIds.size()) != rows)
    return fail(
        makeError("{} token ids for {} rows", batch.tokenIds.size(), rows));
  // Each slot is one run of consecutive positions continuing its cache,
  // the runs in slot order (host slots' rows then come last).
  for (int64_t r = 0; r < rows; ++r) {
    const TokenRow &row = batch.rows[r];
    if (row.slot < 0 || row.slot >= s.slots)
      return fail(makeError("row {}: slot {} is not in 0..{}", r, row.slot,
                            s.slots - 1));
    if (r == 0 || batch.rows[r - 1].slot != row.slot) {
      if (r > 0 && row.slot < batch.rows[r - 1].slot)
        return fail(makeError("row {}: slot {} follows slot {}; runs must be "
                              "in slot order",
                              r, row.slot, batch.rows[r - 1].slot));
      if (row.position != s.lengths[row.slot])
        return fail(makeError("row {}: slot {} continues at position {}, "
                              "not {}",
                              r, row.slot, s.lengths[row.slot], row.position));
    } else if (row.position != batch.rows[r - 1].position + 1) {
      return fail(makeError("row {}: positions of slot {} are not "
                            "consecutive",
                            r, row.slot));
    }
    if (row.position >= s.maxContext)
      return fail(makeError("row {}: position {} exceeds the context of {}", r,
                            row.position, s.maxContext));
    if (batch.tokenIds[r] < 0 || batch.tokenIds[r] >= s.embeddingVocab)
      return fail(makeError("row {}: token id {} is not in 0..{}", r,
                            batch.tokenIds[r], s.embeddingVocab - 1));
  }
  for (int32_t row : batch.logitRows)
    if (row < 0 || row >= rows)
      return fail(makeError("logit row {} is not in 0..{}", row, rows - 1));
  if (logits)
    logits->clear();
  else
    tokens->clear();
  if (rows == 0)
    return Status::success();

  for (size_t i = 1; i < batch.logitRows.size(); ++i)
    if (batch.logitRows[i] <= batch.logitRows[i - 1])
      return fail(makeError("logit rows must increase (row {} follows {})",
                            batch.logitRows[i], batch.logitRows[i - 1]));
  if (logits)
    logits->resize(batch.logitRows.size() * size_t(s.vocab));
  else
    tokens->resize(batch.logitRows.size());

  // Passes of whole slot runs of at most kPassRows rows (a longer run is
  // split; its second part continues the cache). Each pass streams the
  // weights once; within it, chunks of what the step memory holds run layer
  // by layer with their hidden states parked in host memory.
  std::vector<int64_t> passes =
      cutAtSlots(batch.rows, 0, rows, costmodel::kPassRows);
  size_t logitIndex = 0;
  for (size_t p = 0; p + 1 < passes.size(); ++p) {
    int64_t first = passes[p], end = passes[p + 1];
    size_t logitEnd = logitIndex;
    while (logitEnd < batch.logitRows.size() && batch.logitRows[logitEnd] < end)
      ++logitEnd;
    HeadOutput out;
    if (logits)
      out.logits = logits->data() + logitIndex * s.vocab;
    else
      out.tokens = tokens->data() + logitIndex;
    Status ran = runPass(batch, first, end, logitIndex, logitEnd, out);
    if (!ran.ok())
      return fail(ran.error());
    for (int64_t r = first; r < end; ++r)
      if (r + 1 == end || batch.rows[r + 1].slot != batch.rows[r].slot)
        s.lengths[batch.rows[r].slot] = batch.rows[r].position + 1;
    logitIndex = logitEnd;
  }
  return Status::success();
}

Status CudaBackend::runPass(const StepBatch &batch, int64_t first, int64_t end,
                            size_t firstLogit, size_t endLogit,
                            HeadOutput out) {
  State &s = *state_;
  int64_t rows = end - first;
  bool prefill = isPrefill(batch.rows);
  int64_t microBatch = prefill ? s.prefillMicroBatch : s.decodeMicroBatch;
  cudaStream_t stream = s.stream->get();

  // Chunks of what the step memory holds, cut at slot boundaries where
  // possible (a slot's second part continues its cache). Beside a chunk's
  // own rows the step memory holds the previous chunk's parked values and
  // the next chunk's restored ones. Sizes are rounded up by at most 1/16
  // (StepMemory).
  int64_t perRow = std::max<int64_t>(s.rowBytes, 1);
  if (size_t(rows * perRow) > s.memory.limit)
    perRow += s.parkRowBytes + s.restoreRowBytes;
  perRow += perRow / 16;
  int64_t chunkLimit =
      std::max<int64_t>(1, int64_t(s.memory.limit / size_t(perRow)));
  std::vector<int64_t> cuts = cutAtSlots(batch.rows, first, end, chunkLimit);
  for (int64_t &cut : cuts) // pass-relative
    cut -= first;
  size_t chunks = cuts.size() - 1;

  // Per row: token, attention slot, position, cache row; then the logit
  // rows, relative to their chunk.
  std::vector<int32_t> meta(size_t(4 * rows) + (endLogit - firstLogit));
  int32_t *tokens = meta.data(), *attnSlots = tokens + rows,
          *positions = attnSlots + rows, *cacheRows = positions + rows;
  std::vector<KvPass> kvPasses;
  std::vector<size_t> chunkLogits{firstLogit}; // first logit of each chunk
  std::vector<int32_t> chunkSpans;             // Step::maxSpan of each chunk
  for (size_t c = 0; c < chunks; ++c) {
    int64_t from = cuts[c], to = cuts[c + 1];
    int32_t span = 0;
    for (int64_t r = first + from; r < first + to; ++r)
      span = std::max(span, batch.rows[r].position + 1);
    chunkSpans.push_back(span);
    kvPasses.push_back(chunkRows(
        batch, first + from, first + to, s.gpuSlots, s.maxContext, microBatch,
        tokens + from, attnSlots + from, positions + from, cacheRows + from));
    // A slot split across chunks loads what the earlier chunk stored.
    kvPasses.back().loadsAfterCompute = c > 0;
    size_t logit = chunkLogits.back();
    for (; logit < endLogit && batch.logitRows[logit] < first + to; ++logit)
      meta[size_t(4 * rows) + (logit - firstLogit)] =
          static_cast<int32_t>(batch.logitRows[logit] - first - from);
    chunkLogits.push_back(logit);
  }

  int64_t movedBefore =
      s.counters.weightBytesToDevice + s.counters.kvBytesToDevice;
  auto device =
      s.memory.allocate(meta.size() * sizeof(int32_t), "batch", stream);
  if (!device)
    return device.error();
  auto *base = static_cast<int32_t *>(*device);
  MOE_CUDA_TRY(cudaMemcpyAsync(base, meta.data(), meta.size() * sizeof(int32_t),
                               cudaMemcpyHostToDevice, stream));
  // Loads of this pass come after everything of the previous one.
  MOE_RETURN_IF_ERROR(s.passStart->record(stream));
  MOE_RETURN_IF_ERROR(s.kvLoad->wait(*s.passStart));

  // Values crossing a segment boundary are parked per chunk, one fp32,
  // bf16 or i32 form each: value v's rows at parkOffset[v] (elements of 4
  // bytes), in a region it holds from the end of the segment making it to
  // the end of the segment last reading it.
  std::vector<size_t> parkOffset(s.numValues, SIZE_MAX);
  std::vector<char> parkedKind(s.numValues, 'f');
  if (chunks > 1) {
    int64_t widest = 0;
    for (const auto &[begin, stop] : s.segments)
      for (int v = 1; v < s.numValues; ++v)
        if (s.crossesSegment(v, begin, stop))
          widest = std::max(widest, s.valueWidths[v]);
    size_t region = size_t(rows * widest);
    std::vector<int> holders; // per region: the value parked there, or -1
    for (const auto &[begin, stop] : s.segments) {
      for (int &holder : holders)
        if (holder >= 0 && s.lastUse[holder] < int(begin))
          holder = -1;
      for (int v = 1; v < s.numValues; ++v) {
        if (!s.crossesSegment(v, begin, stop))
          continue;
        auto free = std::find(holders.begin(), holders.end(), -1);
        if (free == holders.end())
          free = holders.insert(holders.end(), -1);
        *free = v;
        parkOffset[v] = size_t(free - holders.begin()) * region;
      }
    }
    size_t needed = holders.size() * region * 4;
    if (needed > s.parkingBytes) {
      if (s.parking)
        MOE_CUDA_TRY(cudaFreeHost(s.parking));
      s.parking = nullptr;
      s.parkingBytes = 0;
      MOE_RETURN_IF_ERROR(checkCuda(
          cudaHostAlloc(&s.parking, needed, cudaHostAllocDefault),
          fmt::format("cudaHostAlloc({}) for the hidden states of {} rows "
                      "parked between layers",
                      formatBytes(needed), rows)));
      s.parkingBytes = needed;
    }
  }
  auto *parked = static_cast<char *>(s.parking);

  // Streamed weights: op j's copy waits until the ring slot's previous
  // user (op j - ringSlots) has run for every chunk; the op's first chunk
  // waits for its copy.
  int numStreamed = static_cast<int>(s.streamed.size());
  auto copyWeights = [&](int j) -> Status {
    const Event &slotFree = s.ringSlotFree[j % s.ringSlots];
    MOE_RETURN_IF_ERROR(s.weightCopy->wait(slotFree));
    for (const CopyPart &part : s.streamed[j]) {
      MOE_CUDA_TRY(cudaMemcpyAsync(part.device, part.host, part.bytes,
                                   cudaMemcpyHostToDevice,
                                   s.weightCopy->get()));
      s.counters.weightBytesToDevice += int64_t(part.bytes);
    }
    return s.weightsCopied[j].record(*s.weightCopy);
  };
  for (int j = 0; j < std::min(numStreamed, s.ringSlots); ++j)
    MOE_RETURN_IF_ERROR(copyWeights(j));

  KvStreams kvStreams{s.kvLoad->get(), s.kvStore->get(), s.stagingK,
                      s.stagingV,      s.stagingLoaded,  s.stagingFree,
                      *s.kvReady,      *s.kvStored,      *s.opStart,
                      s.counters};
  std::vector<std::pair<size_t, size_t>> timed; // (stage, timing pair)
  // Times the compute stream's work from here to stopTiming() as `stage`.
  auto startTiming = [&](size_t stage) -> Result<size_t> {
    size_t pair = timed.size();
    while (s.timing.size() < 2 * (pair + 1)) {
      auto event = Event::create(true);
      if (!event)
        return event.error();
      s.timing.push_back(std::move(*event));
    }
    timed.push_back({stage, pair});
    MOE_RETURN_IF_ERROR(s.timing[2 * pair].record(stream));
    return pair;
  };
  auto stopTiming = [&](size_t pair) {
    return s.timing[2 * pair + 1].record(stream);
  };
  std::vector<DeviceValue> values(s.numValues);
  std::vector<std::vector<void *>> owned(s.numValues);
  auto clearValue = [&](int v) {
    owned[v].clear();
    values[v] = DeviceValue{nullptr, nullptr, nullptr, s.valueWidths[v]};
  };
  auto freeValue = [&](int v) -> Status {
    for (void *ptr : owned[v])
      MOE_RETURN_IF_ERROR(s.memory.free(ptr, stream));
    clearValue(v);
    return Status::success();
  };
  // Bytes of parked values freed on the park stream and still counted, by
  // chunk parity: chunk c takes chunk c - 2's back after waiting for its
  // parking, so the pool never holds more than the step memory counts.
  std::array<size_t, 2> parkPending{};
  auto takeBackParked = [&](size_t parity) -> Status {
    if (parkPending[parity] == 0)
      return Status::success();
    MOE_RETURN_IF_ERROR(s.stream->wait(*s.chunkParked[parity]));
    s.memory.release(parkPending[parity]);
    parkPending[parity] = 0;
    return Status::success();
  };
  // A chunk's values made by earlier segments, copied back from the parking
  // buffer on the restore stream while the chunk before it computes. The
  // buffers are allocated on the compute stream, which the restore stream
  // then follows: it has waited for the previous segment's parking.
  struct Restored {
    int value;
    void *buffer;
    size_t bytes;
  };
  std::array<std::vector<Restored>, 2> restored; // by chunk parity
  auto restoreChunk = [&](size_t segmentBegin, size_t c) -> Status {
    std::vector<Restored> &into = restored[c % 2];
    into.clear();
    int64_t from = cuts[c], count = cuts[c + 1] - from;
    for (int v = 1; v < s.numValues; ++v) {
      if (!s.restoredIn(v, segmentBegin))
        continue;
      size_t bytes = size_t(count * s.valueWidths[v]) *
                     (parkedKind[v] == 'a' ? sizeof(bf16) : 4);
      auto buffer = s.memory.allocate(bytes, "parked value", stream);
      if (!buffer)
        return buffer.error();
      into.push_back({v, *buffer, bytes});
    }
    if (into.empty())
      return Status::success();
    MOE_RETURN_IF_ERROR(s.restoreReady->record(stream));
    MOE_RETURN_IF_ERROR(s.restore->wait(*s.restoreReady));
    for (const auto &[v, buffer, bytes] : into) {
      MOE_CUDA_TRY(cudaMemcpyAsync(
          buffer,
          parked + (parkOffset[v] + size_t(from * s.valueWidths[v])) * 4, bytes,
          cudaMemcpyHostToDevice, s.restore->get()));
      s.counters.hiddenBytesToDevice += int64_t(bytes);
    }
    return s.chunkRestored[c % 2]->record(*s.restore);
  };
  for (int v = 0; v < s.numValues; ++v)
    values[v].width = s.valueWidths[v];

  bool parkedInSegment = false;
  for (const auto &[segmentBegin, segmentEnd] : s.segments) {
    for (size_t c = 0; c < chunks; ++c) {
      int64_t from = cuts[c], count = cuts[c + 1] - from;
      Step step{
          s.memory,
          *s.gemm,
          stream,
          count,
          base + rows + from,
          base + 2 * rows + from,
          base + 3 * rows + from,
          base + 4 * rows + (chunkLogits[c] - firstLogit),
          static_cast<int64_t>(chunkLogits[c + 1] - chunkLogits[c]),
          out.logits
              ? HeadOutput{out.logits + (chunkLogits[c] - firstLogit) * s.vocab,
                           nullptr}
              : HeadOutput{nullptr, out.tokens + (chunkLogits[c] - firstLogit)},
          s.maxContext,
          chunkSpans[c],
          s.smCount,
          options_.perExpertGemmRows,
          s.gptOssNorm,
          s.floatsOnDevice,
          kvPasses[c],
          kvStreams,
          {}};
      values[0].i = base + from;
      // The chunk's parked values back on the device (the first chunk's
      // now, the next chunk's ahead).
      if (chunks > 1) {
        auto parkedTiming = startTiming(kParkedStage);
        if (!parkedTiming)
          return parkedTiming.error();
        MOE_RETURN_IF_ERROR(takeBackParked(c % 2));
        if (c == 0)
          MOE_RETURN_IF_ERROR(restoreChunk(segmentBegin, 0));
        if (c + 1 < chunks)
          MOE_RETURN_IF_ERROR(restoreChunk(segmentBegin, c + 1));
        if (!restored[c % 2].empty())
          MOE_RETURN_IF_ERROR(s.stream->wait(*s.chunkRestored[c % 2]));
        for (const auto &[v, buffer, bytes] : restored[c % 2]) {
          owned[v].push_back(buffer);
          DeviceValue &value = values[v];
          value.kind = parkedKind[v];
          if (value.kind == 'f')
            value.f = static_cast<float *>(buffer);
          else if (value.kind == 'a')
            value.a = static_cast<bf16 *>(buffer);
          else
            value.i = static_cast<int32_t *>(buffer);
        }
        restored[c % 2].clear();
        MOE_RETURN_IF_ERROR(stopTiming(*parkedTiming));
      }
      for (size_t index = segmentBegin; index < segmentEnd; ++index) {
        const CompiledOp &op = s.ops[index];
        DeviceValue &in = values[op.operands[0]];
        if (op.streamIndex >= 0 && c == 0) {
          auto waitTiming = startTiming(kWeightWaitStage);
          if (!waitTiming)
            return waitTiming.error();
          MOE_RETURN_IF_ERROR(s.stream->wait(s.weightsCopied[op.streamIndex]));
          MOE_RETURN_IF_ERROR(stopTiming(*waitTiming));
        }
        auto opTiming = startTiming(op.op.index());
        if (!opTiming)
          return opTiming.error();
        Status ran = std::visit(
            [&](const auto &k) -> Status {
              DeviceValue &out = values[op.results[0]];
              using K = std::decay_t<decltype(k)>;
              if constexpr (std::is_same_v<K, EmbeddingOp>)
                return runEmbedding(step, k, in, out);
              else if constexpr (std::is_same_v<K, NormOp>)
                return runNorm(step, k, in, out);
              else if constexpr (std::is_same_v<K, AttentionOp>)
                return runAttention(step, k, s.kv[k.cache], in, out);
              else if constexpr (std::is_same_v<K, MlaOp>)
                return runMla(step, k, s.kv[k.cache], in, out);
              else if constexpr (std::is_same_v<K, LightningOp>)
                return runLightning(step, k, s.lightningStates[k.state], in,
                                    out);
              else if constexpr (std::is_same_v<K, RouterOp>)
                return runRouter(step, k, in, out, values[op.results[1]]);
              else if constexpr (std::is_same_v<K, ExpertsOp>)
                return runExperts(step, k, in, values[op.operands[1]],
                                  values[op.operands[2]], out);
              else if constexpr (std::is_same_v<K, MlpOp>)
                return runMlp(step, k, in, out);
              else if constexpr (std::is_same_v<K, ResidualOp>)
                return runResidual(step, k, in, values[op.operands[1]], out);
              else
                return runHead(step, k, in);
            },
            op.op);
        if (!ran.ok())
          return ran.error().withContext(fmt::format("op {}", index));
        MOE_RETURN_IF_ERROR(stopTiming(*opTiming));
        if (op.streamIndex >= 0 && c + 1 == chunks) {
          int j = op.streamIndex;
          MOE_RETURN_IF_ERROR(s.ringSlotFree[j % s.ringSlots].record(stream));
          if (j + s.ringSlots < numStreamed)
            MOE_RETURN_IF_ERROR(copyWeights(j + s.ringSlots));
        }
        // This op's allocations belong to the values they hold; the rest
        // was scratch. Values nobody reads again are freed.
        for (void *ptr : step.made) {
          int holder = -1;
          for (int v : op.operands)
            if (values[v].a == ptr || values[v].f == ptr)
              holder = v;
          for (int v : op.results)
            if (values[v].a == ptr || values[v].f == ptr || values[v].i == ptr)
              holder = v;
          if (holder >= 0)
            owned[holder].push_back(ptr);
          else
            MOE_RETURN_IF_ERROR(s.memory.free(ptr, stream));
        }
        step.made.clear();
        step.partials = nullptr;
        step.partialBytes = 0;
        for (int v : op.results)
          values[v].kind = values[v].f ? 'f' : values[v].i ? 'i' : 'a';
        for (int v = 1; v < s.numValues; ++v)
          if (!owned[v].empty() && s.lastUse[v] <= static_cast<int>(index))
            MOE_RETURN_IF_ERROR(freeValue(v));
      }
      // The chunk's values that later segments read, parked on the park
      // stream while the next chunk computes (their buffers freed there,
      // after the copy); the rest of its values freed.
      if (chunks > 1) {
        auto parksHere = [&](int v) {
          // Values made before this segment are parked already.
          return !owned[v].empty() && parkOffset[v] != SIZE_MAX &&
                 s.crossesSegment(v, segmentBegin, segmentEnd);
        };
        bool parking = false;
        for (int v = 1; v < s.numValues; ++v)
          parking = parking || parksHere(v);
        if (parking) {
          MOE_RETURN_IF_ERROR(s.parkReady->record(stream));
          MOE_RETURN_IF_ERROR(s.park->wait(*s.parkReady));
          parkedInSegment = true;
        }
        for (int v = 1; v < s.numValues; ++v) {
          if (owned[v].empty())
            continue;
          if (!parksHere(v)) {
            MOE_RETURN_IF_ERROR(freeValue(v));
            continue;
          }
          const DeviceValue &value = values[v];
          parkedKind[v] = value.kind;
          const void *from32 = value.kind == 'f'   ? (const void *)value.f
                               : value.kind == 'a' ? (const void *)value.a
                                                   : (const void *)value.i;
          size_t bytes = size_t(count * value.width) *
                         (value.kind == 'a' ? sizeof(bf16) : 4);
          MOE_CUDA_TRY(cudaMemcpyAsync(
              parked + (parkOffset[v] + size_t(from * value.width)) * 4, from32,
              bytes, cudaMemcpyDeviceToHost, s.park->get()));
          s.counters.hiddenBytesToHost += int64_t(bytes);
          for (void *ptr : owned[v]) {
            auto freed = s.memory.freeLater(ptr, s.park->get());
            if (!freed)
              return freed.error();
            parkPending[c % 2] += *freed;
          }
          clearValue(v);
        }
        if (parking)
          MOE_RETURN_IF_ERROR(s.chunkParked[c % 2]->record(*s.park));
      }
    }
    // The next segment loads what this one parked.
    if (parkedInSegment) {
      MOE_RETURN_IF_ERROR(s.segmentParked->record(*s.park));
      auto parkedTiming = startTiming(kParkedStage);
      if (!parkedTiming)
        return parkedTiming.error();
      MOE_RETURN_IF_ERROR(s.stream->wait(*s.segmentParked));
      MOE_RETURN_IF_ERROR(stopTiming(*parkedTiming));
      s.memory.release(parkPending[0] + parkPending[1]);
      parkPending = {};
      parkedInSegment = false;
    }
  }
  MOE_RETURN_IF_ERROR(s.memory.free(base, stream));
  MOE_RETURN_IF_ERROR(s.stream->synchronize());
  s.counters.devicePeakStepBytes =
      std::max(s.counters.devicePeakStepBytes, int64_t(s.memory.peak));
  s.counters.deviceMemoryTrims = s.memory.trims;
  if (!prefill)
    s.counters.decodeBytesToDevice += s.counters.weightBytesToDevice +
                                      s.counters.kvBytesToDevice - movedBefore;
  for (const auto &[stage, pair] : timed) {
    auto seconds = elapsedSeconds(s.timing[2 * pair], s.timing[2 * pair + 1]);
    if (!seconds)
      return seconds.error();
    s.stageSeconds[prefill ? 0 : 1][stage] += *seconds;
  }
  return Status::success();
}

BackendCounters CudaBackend::counters() const {
  return state_ ? state_->counters : BackendCounters{};
}

std::vector<StageTime> CudaBackend::stageSeconds() const {
  std::vector<StageTime> stages;
  if (!state_)
    return stages;
  for (int phase = 0; phase < 2; ++phase)
    for (size_t kind = 0; kind < kStageNames.size(); ++kind) {
      double seconds = state_->stageSeconds[phase][kind];
      if (seconds <= 0)
        continue;
      std::string name = phase == 0 ? "prefill" : "decode";
      auto same = std::find_if(stages.begin(), stages.end(), [&](auto &t) {
        return t.phase == name && t.stage == kStageNames[kind];
      });
      if (same != stages.end())
        same->seconds += seconds;
      else
        stages.push_back({name, kStageNames[kind], seconds});
    }
  return stages;
}

} // namespace moe::cuda
