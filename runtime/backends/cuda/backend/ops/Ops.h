// The CUDA backend's ops: each plan op bound to its weights (bf16 in the
// weights arena or streamed through the weight ring, fp32 arrays) and
// launched on a chunk of rows. One file per op family binds it, sizes its
// step memory per row and launches it; Dispatch.cpp holds the one switch.
#pragma once

#include "runtime/backends/cuda/GemmRunner.h"
#include "runtime/backends/cuda/backend/ChunkRows.h"
#include "runtime/backends/cuda/backend/HostAttention.h"
#include "runtime/backends/cuda/backend/KvCaches.h"
#include "runtime/backends/cuda/backend/StepMemory.h"
#include "runtime/backends/cuda/backend/WeightPlacement.h"
#include "runtime/backends/cuda/kernels/Kernels.h"
#include "runtime/backends/cuda/kernels/QuantizedExperts.h"
#include "runtime/engine/Backend.h"
#include "runtime/model/ResolvedModel.h"

#include <span>
#include <variant>
#include <vector>

namespace moe::cuda {

// Each plan op resolved against the uploaded weights. fp32 arrays (sinks,
// correction biases, RoPE tables) are indices into the fp32 arrays, which
// are uploaded after all ops are bound.

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
  kernels::RopeStyle style;
  int cos, sin; // fp32 arrays; -1 without rotation
  float scale;
  const bf16 *q, *k, *v, *o, *qBias, *kBias, *vBias, *oBias;
  plan::QKNorm qkNorm;
  const bf16 *qNorm, *kNorm;
  float qkEps;
  int64_t window;
  int sinks;                    // fp32 array or -1
  std::vector<float> hostSinks; // the host's copy (host attention)
  int cache;
  bool ownsKv;
  // An fp8 cache's row bytes (new rows are encoded into scratch before
  // they are written); 0 for bf16, whose rows are the projections.
  int64_t fp8RowBytes;
};
// DeepSeek's multi-head latent attention in its absorbed form: the cache
// holds each token's normed latent and roped k_pe; W_UK is folded into the
// query and W_UV applied after attention, one GEMM per head each.
struct MlaOp {
  int64_t hidden, heads, qLoraRank, latent, nope, ropeDim, vDim;
  int cos, sin; // fp32 rope tables
  kernels::RopeStyle style;
  float scale, eps;
  const bf16 *q, *qA, *qANorm, *qB, *kvA, *kvANorm, *o;
  const bf16 *wUkT; // [heads][latent][nope]: W_UK,hᵀ as [out, in]
  const bf16 *wUv;  // [heads][vDim][latent]
  int cache;
  bool fp8; // the latent cache holds fp8 rows (model::latentRowBytes)
};
// MiniMax's lightning attention: SiLU(qkv) through the recurrent state
// (kernels::lightningAttention), RMSNorm over all heads, times σ(x·gate),
// then the output projection. The state of every slot stays on the GPU.
struct LightningOp {
  int64_t hidden, heads, headDim;
  float eps;
  int decay; // fp32 array: λ per head
  const bf16 *qkv, *gate, *norm, *out;
  int state; // into the lightning states
};
// Router weights stay fp32 (fp32 arrays): see kernels::routerLogits.
struct RouterOp {
  int64_t hidden, experts, topK;
  int weight, bias, correction; // fp32 arrays; bias and correction may be -1
  kernels::RouterScoring scoring;
  kernels::RouterSelection selection;
  int groups, keptGroups;
  bool normalize;
  float scaling;
};
// Gate and up as one [E, 2I, H] weight: separate layouts are concatenated
// (gate rows first, for siluMul); GPT-OSS's fused layout keeps its
// interleaved columns, transposed to [out, in] (for swigluClamped).
struct ExpertsOp {
  int64_t hidden, width, experts, topK;
  bool clamped;
  float limit, alpha;
  ExpertWeight gateUp, gateUpBias, down, downBias; // down [E, H, I]
  // Quantized experts (runtime/model/WeightFormat.h: fp8, mxfp4): their
  // codes and scales, read by the grouped GEMM as they are and widened
  // into `widened` (shared by every experts op) before per-expert GEMMs;
  // gateUp and down are absent.
  model::WeightDtype dtype = model::WeightDtype::bf16;
  kernels::QuantizedExpertMatrix gateUpQuantized, downQuantized;
  bf16 *widened = nullptr;
};
// Elements of the bf16 scratch quantized experts are widened into: the
// largest stacked matrix (gate|up) of any experts op; 0 for bf16 experts.
int64_t widenedExpertElements(const model::ResolvedModel &model);
// Bytes an experts op's quantized gate|up and down take, each expert one
// block (model::quantizedExpertLayout): in the weights arena, the experts
// the plan keeps on the GPU; in pinned host memory, the streamed ones.
struct QuantizedExpertBytes {
  int64_t resident = 0, streamed = 0;
};
QuantizedExpertBytes quantizedExpertBytes(const plan::Model &model,
                                          const model::ExpertsSpec &e,
                                          model::WeightDtype dtype);
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
// The buffer of a value that its making op wrote last: fp32 (the residual
// stream), bf16 (GEMM inputs and outputs) or i32 (expert indices). A
// chunked pass parks a value in this form.
enum class ValueForm { fp32, bf16, i32 };
inline size_t elementBytes(ValueForm form) {
  return form == ValueForm::bf16 ? sizeof(bf16) : 4;
}

// One value of a step on the device. Activations are bf16 (GEMM inputs and
// outputs) or fp32 (the residual stream: embedding, residual adds, the
// experts' weighted sum); each form is made from the other on first use.
// Routing weights are fp32, expert indices i32.
struct DeviceValue {
  bf16 *a = nullptr;
  float *f = nullptr;
  int32_t *i = nullptr;
  int64_t width = 0;
  ValueForm form = ValueForm::fp32;

  // The form the making op wrote: fp32 where it wrote both.
  ValueForm written() const {
    return f ? ValueForm::fp32 : i ? ValueForm::i32 : ValueForm::bf16;
  }
  const void *buffer() const {
    return form == ValueForm::fp32   ? static_cast<const void *>(f)
           : form == ValueForm::bf16 ? static_cast<const void *>(a)
                                     : static_cast<const void *>(i);
  }
  void setBuffer(ValueForm to, void *buffer) {
    form = to;
    if (to == ValueForm::fp32)
      f = static_cast<float *>(buffer);
    else if (to == ValueForm::bf16)
      a = static_cast<bf16 *>(buffer);
    else
      i = static_cast<int32_t *>(buffer);
  }
};

// Where the LM head's results go (host memory): logits [rows, vocab], or
// the greedy token of each row when `tokens` is set.
struct HeadOutput {
  float *logits = nullptr;
  int32_t *tokens = nullptr;
};

// What one op sees of the step: the chunk's device arrays, the step memory,
// the streams and the caches.
struct Step {
  StepMemory &memory;
  GemmRunner &gemm;
  cudaStream_t stream;
  int64_t rows;
  // Per row: the slot in the KV array attention reads (a GPU slot, or a
  // host slot's index in its staging buffer), its position, the row of
  // that array where its K/V go and, for a host slot, its row in the host
  // pool.
  const int32_t *attnSlots, *positions, *cacheRows, *poolRows, *logitRows;
  int64_t logitCount;
  HeadOutput head; // host
  int32_t maxContext;
  int32_t maxSpan; // the longest context a row attends to (+1: its own)
  // Rows per run of one slot's consecutive rows: a prompt's chunk in
  // prefill, 1 in decode.
  int64_t rowsPerSlot;
  int layer = -1;  // of the op running, for traced spans
  int smCount;
  int64_t perExpertGemmRows;
  int64_t expertMicroBatch; // b_e: most rows of one per-expert GEMM
  bool fp8ExpertInputs;     // CudaBackendOptions'
  bool gptOssNorm;
  const std::vector<float *> &floats;
  const std::vector<float *> &lightningStates;
  KvCaches &kv;
  const KvPass &kvPass;
  const HostPageTable &hostPages;
  HostAttention &host;
  BackendCounters &counters;
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
  Result<float *> attentionPartials(size_t bytes);
  const float *floatArray(int index) const {
    return index < 0 ? nullptr : floats[index];
  }
  // The bf16 / fp32 form of an activation, converted on first use.
  Result<const bf16 *> bf16Of(DeviceValue &value);
  Result<const float *> f32Of(DeviceValue &value);
  Status linear(const bf16 *x, int64_t m, int64_t k, const bf16 *w, int64_t n,
                const bf16 *bias, bf16 *y);
  // x = RMSNorm(x) · w in place, for `count` rows of `width`.
  Status normInPlace(bf16 *x, const bf16 *weight, int64_t count, int64_t width,
                     float eps, bool weightAfterCast);
};

// Binding: each resolved op's weights placed, and what the CUDA kernels
// cannot run refused.
Result<EmbeddingOp> bindEmbeddingOp(WeightPlacement &placement,
                                    const model::EmbeddingSpec &spec);
Result<NormOp> bindNormOp(WeightPlacement &placement,
                          const model::NormSpec &spec);
Result<AttentionOp> bindAttentionOp(WeightPlacement &placement,
                                    const model::AttentionSpec &spec,
                                    const Fp32Params &fp32, const KvCaches &kv);
Result<MlaOp> bindMlaOp(WeightPlacement &placement,
                        const model::LatentAttentionSpec &spec,
                        const KvCaches &kv);
Result<LightningOp> bindLightningOp(WeightPlacement &placement,
                                    const model::LightningSpec &spec);
Result<RouterOp> bindRouterOp(WeightPlacement &placement,
                              const model::RouterSpec &spec,
                              const Fp32Params &fp32);
Result<ExpertsOp> bindExpertsOp(WeightPlacement &placement,
                                const model::ExpertsSpec &spec,
                                model::WeightDtype dtype);
Result<MlpOp> bindMlpOp(WeightPlacement &placement, const model::MlpSpec &spec);
ResidualOp residualOp(const model::ResidualSpec &spec);
Result<HeadOp> bindHeadOp(WeightPlacement &placement,
                          const model::HeadSpec &spec);

// Launching: the op on the step's rows, its results into the values.
Status runEmbedding(Step &step, const EmbeddingOp &k, const DeviceValue &ids,
                    DeviceValue &out);
Status runNorm(Step &step, const NormOp &k, const DeviceValue &x,
               DeviceValue &out);
Status runAttention(Step &step, const AttentionOp &k, const KvCache &cache,
                    DeviceValue &in, DeviceValue &out);
Status runMla(Step &step, const MlaOp &k, const KvCache &cache, DeviceValue &in,
              DeviceValue &out);
Status runLightning(Step &step, const LightningOp &k, float *state,
                    DeviceValue &in, DeviceValue &out);
Status runRouter(Step &step, const RouterOp &k, DeviceValue &in,
                 DeviceValue &weights, DeviceValue &indices);
// Whether the routed experts over `rows` rows run one cuBLASLt GEMM per
// expert, which needs their counts on the host (a wait for the stream), or
// one grouped launch per GEMM with the counts left on the device.
bool expertsWaitForHost(const ExpertsOp &k, int64_t rows,
                        int64_t perExpertGemmRows);
Status runExperts(Step &step, const ExpertsOp &k, DeviceValue &in,
                  const DeviceValue &weights, const DeviceValue &indices,
                  DeviceValue &out);
Status runMlp(Step &step, const MlpOp &k, DeviceValue &in, DeviceValue &out);
Status runResidual(Step &step, const ResidualOp &k, DeviceValue &skipValue,
                   DeviceValue &updateValue, DeviceValue &out);
// Logits straight into the host array, a chunk of rows at a time so a
// large vocabulary does not need [rows, vocab] of device memory at once.
Status runHead(Step &step, const HeadOp &k, DeviceValue &in);

// The one dispatch: `op` with its operand and result values.
Status runOp(Step &step, const Op &op, std::span<const int> operands,
             std::span<const int> results, std::vector<DeviceValue> &values);

} // namespace moe::cuda
