// Places a plan's params where the plan put them, converted to bf16 (their
// sizes checked by model::ResolvedModel): resident params are uploaded once
// (on first use) into the weights arena; streamed ones go to pinned host
// memory and are copied into the op's weight-ring buffer before each run of
// the op (WeightRing); the params kept in fp32 (fp32Params) become fp32
// arrays, uploaded with the KV caches once every op is bound.
#pragma once

#include "runtime/backends/cuda/Memory.h"
#include "runtime/backends/cuda/backend/WeightRing.h"
#include "runtime/backends/cuda/kernels/GroupedGemm.h"
#include "runtime/model/ResolvedModel.h"
#include "runtime/model/Rope.h"
#include "runtime/schemas/plan_generated.h"
#include "runtime/support/ThreadPool.h"
#include "runtime/weights/WeightSet.h"

#include <cuda_bf16.h>

#include <array>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace moe::cuda {

using bf16 = __nv_bfloat16;

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

// The params an op keeps in fp32 (bindFloat) instead of bf16, with the fp32
// arrays rather than in the weights arena: a router's weight, bias and
// correction bias (its top-k picks hinge on near-ties that bf16 rounding
// would flip) and attention sinks. -1 where absent.
struct Fp32Params {
  int routerWeight = -1, routerBias = -1, correctionBias = -1, sinks = -1;
  std::array<int, 4> all() const {
    return {routerWeight, routerBias, correctionBias, sinks};
  }
};
Fp32Params fp32Params(const model::ResolvedOp &op);

// A stacked [E, ...] expert weight whose first `residentExperts` blocks
// stay in the weights arena while the rest are streamed into the op's ring
// buffer (the plan's gpu_experts); null when the op has no such weight.
// Experts of a stacked param of `experts` kept on the GPU: all unless the
// plan streams it.
int64_t residentExperts(const plan::Param &param, int64_t experts);

using ExpertWeight = kernels::ExpertMatrix;
// Expert e's block of a stacked weight; null when the weight is absent.
const bf16 *expertBlock(const ExpertWeight &w, int64_t e);

class WeightPlacement {
public:
  WeightPlacement(const plan::Model &model, const WeightSet &weights,
                  DeviceArena &arena, WeightRing &ring, PinnedHostPool &pinned,
                  std::vector<std::vector<float>> &floats, int32_t maxContext);

  // Streamed weights of op `op`, bound next, go to its ring buffer after
  // those of the earlier ops of its turn (model::RingSchedule). endOp()
  // hands the op's copies to the ring (`name` in traces).
  void beginOp(int op) { op_ = op, parts_.clear(); }
  void endOp(std::string name);

  const WeightSet &weights() const { return weights_; }
  ThreadPool &threads() { return threads_; }
  HostBf16 readBf16(int index) const;
  bool isStreamed(int index) const;
  // Experts of the param kept on the GPU: all unless it is streamed.
  int64_t residentExperts(int index, int64_t experts) const;

  Result<const void *> upload(std::span<const std::byte> host,
                              const char *what);
  Result<const bf16 *> upload(std::span<const bf16> host, const char *what) {
    return typed<bf16>(upload(std::as_bytes(host), what));
  }
  // `host` into pinned memory and a copy of it into this op's ring buffer.
  Result<const void *> stream(std::span<const std::byte> host,
                              const char *what);
  Result<const bf16 *> stream(std::span<const bf16> host, const char *what) {
    return typed<bf16>(stream(std::as_bytes(host), what));
  }
  // A stacked weight of `experts` equal blocks, split as the plan placed it:
  // where its resident and its streamed blocks are (either may be null).
  Result<std::pair<const void *, const void *>>
  place(std::span<const std::byte> host, int64_t experts,
        int64_t residentExperts, const char *what);
  Result<ExpertWeight> place(std::span<const bf16> host, int64_t experts,
                             int64_t residentExperts, const char *what);

  // Absent (model::kAbsent) binds as null.
  Result<ExpertWeight> bindExperts(int index, int64_t experts,
                                   const char *field);
  // The embedding table is read in place when streamed: the kernel gathers
  // only the batch's rows from pinned memory (mapped into the device's
  // address space).
  Status bindTable(const bf16 *&out, int index, int64_t size);
  // Absent (model::kAbsent) binds as null.
  Status bind(const bf16 *&out, int index, const char *field);
  // An fp32 param kept in fp32 (Fp32Params): -1 when absent, else its
  // index among the fp32 arrays.
  int bindFloat(int index);
  // An fp32 array made on the host (lightning decays): its index.
  int addFloats(std::vector<float> values);
  // The values of fp32 array `array` (bindFloat, addFloats) before they
  // are uploaded; empty for -1.
  std::vector<float> floatValues(int array) const {
    return array < 0 ? std::vector<float>{} : floats_[size_t(array)];
  }
  // The bf16 scratch quantized experts are widened into (null without).
  void setWidenedExperts(bf16 *scratch) { widenedExperts_ = scratch; }
  bf16 *widenedExperts() const { return widenedExperts_; }
  // cos and sin tables, shared by the layers of one RoPE; -1 each without
  // rotation.
  std::pair<int, int> ropeTables(const model::RopeParams &rope);

private:
  template <typename T> static Result<const T *> typed(Result<const void *> p) {
    if (!p)
      return p.error();
    return static_cast<const T *>(*p);
  }

  const plan::Model &model_;
  const WeightSet &weights_;
  DeviceArena &arena_;
  WeightRing &ring_;
  PinnedHostPool &pinned_;
  int op_ = -1;
  std::vector<CopyPart> parts_;
  std::vector<size_t> turnUsed_; // per turn's first op: bytes taken
  ThreadPool threads_{0};
  std::vector<std::vector<float>> &floats_;
  int32_t maxContext_;
  std::vector<const bf16 *> uploaded_;
  bf16 *widenedExperts_ = nullptr;
  std::vector<std::pair<model::RopeParams, std::pair<int, int>>> ropes_;
};

} // namespace moe::cuda
