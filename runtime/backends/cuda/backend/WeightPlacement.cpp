#include "runtime/backends/cuda/backend/WeightPlacement.h"

#include "runtime/backends/cuda/CudaCheck.h"

#include <cstring>

namespace moe::cuda {

Fp32Params fp32Params(const model::ResolvedOp &op) {
  Fp32Params params;
  if (const auto *router = std::get_if<model::RouterSpec>(&op.spec)) {
    params.routerWeight = router->weight;
    params.routerBias = router->bias;
    params.correctionBias = router->correction;
  }
  if (const auto *attention = std::get_if<model::AttentionSpec>(&op.spec))
    params.sinks = attention->sinks;
  return params;
}

const bf16 *expertBlock(const ExpertWeight &w, int64_t e) {
  if (!w.resident && !w.streamed)
    return nullptr;
  return e < w.residentExperts
             ? w.resident + e * w.stride
             : w.streamed + (e - w.residentExperts) * w.stride;
}

WeightPlacement::WeightPlacement(const plan::Model &model,
                                 const WeightSet &weights, DeviceArena &arena,
                                 WeightRing &ring, PinnedHostPool &pinned,
                                 std::vector<std::vector<float>> &floats,
                                 int32_t maxContext)
    : model_(model), weights_(weights), arena_(arena), ring_(ring),
      pinned_(pinned), turnUsed_(model.ops()->size(), 0), floats_(floats),
      maxContext_(maxContext), uploaded_(model.params()->size(), nullptr) {}

void WeightPlacement::endOp(std::string name) {
  if (ring_.streamed.size() <= size_t(op_))
    ring_.streamed.resize(size_t(op_) + 1);
  ring_.streamed[size_t(op_)] = {std::move(parts_), std::move(name)};
  parts_.clear();
}

HostBf16 WeightPlacement::readBf16(int index) const {
  size_t count = 1;
  for (int64_t dim : weights_.param(size_t(index)).shape)
    count *= size_t(dim);
  HostBf16 host(count);
  weights_.toBf16(size_t(index), host.bits(0, count));
  return host;
}

bool WeightPlacement::isStreamed(int index) const {
  return model_.params()->Get(index)->placement() ==
         plan::Placement::host_streamed;
}

int64_t residentExperts(const plan::Param &param, int64_t experts) {
  return param.placement() == plan::Placement::host_streamed
             ? std::min<int64_t>(param.gpu_experts(), experts)
             : experts;
}

int64_t WeightPlacement::residentExperts(int index, int64_t experts) const {
  return moe::cuda::residentExperts(*model_.params()->Get(index), experts);
}

Result<const void *> WeightPlacement::upload(std::span<const std::byte> host,
                                             const char *what) {
  auto device = arena_.allocate(host.size(), what);
  if (!device)
    return device.error();
  MOE_CUDA_TRY(
      cudaMemcpy(*device, host.data(), host.size(), cudaMemcpyHostToDevice));
  return static_cast<const void *>(*device);
}

Result<const void *> WeightPlacement::stream(std::span<const std::byte> host,
                                             const char *what) {
  size_t bytes = host.size();
  // The first op of the turn keeps the count; place() refuses ops without.
  int turn = ring_.schedule.turnOf[size_t(op_)];
  size_t *used = turn >= 0 ? &turnUsed_[size_t(turn)] : nullptr;
  MOE_ASSIGN_OR_RETURN(char *device,
                       ring_.place(op_, used ? *used : 0, bytes, what));
  auto staged = pinned_.allocate(bytes, what);
  if (!staged)
    return staged.error();
  std::memcpy(*staged, host.data(), bytes);
  *used += poolAligned(bytes);
  parts_.push_back({*staged, device, bytes});
  return static_cast<const void *>(device);
}

Result<std::pair<const void *, const void *>>
WeightPlacement::place(std::span<const std::byte> host, int64_t experts,
                       int64_t residentExperts, const char *what) {
  std::pair<const void *, const void *> at{nullptr, nullptr};
  size_t split = host.size() / size_t(experts) * size_t(residentExperts);
  if (split > 0) {
    MOE_ASSIGN_OR_RETURN(at.first, upload(host.first(split), what));
  }
  if (split < host.size()) {
    MOE_ASSIGN_OR_RETURN(at.second, stream(host.subspan(split), what));
  }
  return at;
}

Result<ExpertWeight> WeightPlacement::place(std::span<const bf16> host,
                                            int64_t experts,
                                            int64_t residentExperts,
                                            const char *what) {
  MOE_ASSIGN_OR_RETURN(
      auto at, place(std::as_bytes(host), experts, residentExperts, what));
  ExpertWeight w;
  w.stride = static_cast<int64_t>(host.size()) / experts;
  w.residentExperts = residentExperts;
  w.resident = static_cast<const bf16 *>(at.first);
  w.streamed = static_cast<const bf16 *>(at.second);
  return w;
}

Result<ExpertWeight> WeightPlacement::bindExperts(int index, int64_t experts,
                                                  const char *field) {
  if (index == model::kAbsent)
    return ExpertWeight{};
  return place(readBf16(index), experts, residentExperts(index, experts),
               field);
}

Status WeightPlacement::bindTable(const bf16 *&out, int index, int64_t size) {
  if (!isStreamed(index))
    return bind(out, index, "table");
  auto staged = pinned_.allocate(size_t(size) * sizeof(bf16), "table");
  if (!staged)
    return staged.error();
  weights_.toBf16(size_t(index),
                  {static_cast<uint16_t *>(*staged), size_t(size)});
  out = static_cast<const bf16 *>(*staged);
  return Status::success();
}

Status WeightPlacement::bind(const bf16 *&out, int index, const char *field) {
  out = nullptr;
  if (index == model::kAbsent)
    return Status::success();
  if (isStreamed(index)) {
    auto device = stream(readBf16(index), field);
    if (!device)
      return device.error();
    out = *device;
    return Status::success();
  }
  if (!uploaded_[index]) {
    auto device = upload(readBf16(index), field);
    if (!device)
      return device.error();
    uploaded_[index] = *device;
  }
  out = uploaded_[index];
  return Status::success();
}

int WeightPlacement::bindFloat(int index) {
  if (index == model::kAbsent)
    return -1;
  return addFloats(weights_.toFloat32(index));
}

int WeightPlacement::addFloats(std::vector<float> values) {
  floats_.push_back(std::move(values));
  return static_cast<int>(floats_.size()) - 1;
}

std::pair<int, int> WeightPlacement::ropeTables(const model::RopeParams &rope) {
  if (rope.rotaryDim == 0)
    return {-1, -1};
  for (const auto &[params, tables] : ropes_)
    if (params == rope)
      return tables;
  model::RopeTables tables = model::ropeTables(rope, maxContext_);
  int at = addFloats(std::move(tables.cos));
  addFloats(std::move(tables.sin));
  ropes_.emplace_back(rope, std::pair{at, at + 1});
  return ropes_.back().second;
}

} // namespace moe::cuda
