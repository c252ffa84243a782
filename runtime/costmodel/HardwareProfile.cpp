// Hardware profile lookups: the measured curves interpolated in log-log
// space, floored by the bandwidths they cannot beat.
#include "runtime/costmodel/HardwareProfile.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moe::costmodel {

int64_t attentionTokens(const AttentionPoint &point) {
  return point.batch * point.context;
}

double attentionPairs(const AttentionPoint &point) {
  return double(point.batch) * double(point.context) *
         double(point.context + 1) / 2;
}

namespace {

// Interpolates seconds(x) between measured (x, seconds) points linearly in
// log-log space. Outside the measured range the rate (x per second) of the
// nearest end point carries on, i.e. time grows in proportion to x.
template <typename Points, typename XOf>
double interpolateLogLog(const Points &points, double x, XOf xOf) {
  auto upper = std::lower_bound(
      points.begin(), points.end(), x,
      [&](const auto &point, double value) { return xOf(point) < value; });
  if (upper == points.begin())
    return points.front().seconds * x / xOf(points.front());
  if (upper == points.end())
    return points.back().seconds * x / xOf(points.back());
  auto lower = std::prev(upper);
  double x0 = xOf(*lower), x1 = xOf(*upper);
  if (x == x1 || x0 == x1)
    return upper->seconds;
  double t = (std::log(x) - std::log(x0)) / (std::log(x1) - std::log(x0));
  return std::exp(std::log(lower->seconds) +
                  t * (std::log(upper->seconds) - std::log(lower->seconds)));
}

// How far apart two positive sizes are on a log scale, as a ratio of at
// least 1: ordered as |log a − log b| is, without the logarithms.
double logDistance(double a, double b) { return a > b ? a / b : b / a; }

constexpr double kBf16Bytes = 2;

} // namespace

Result<HardwareProfile>
HardwareProfile::withBudgets(std::optional<int64_t> gpuBytes,
                             std::optional<int64_t> hostBytes) const {
  if (gpuBytes && *gpuBytes <= 0)
    return makeError("GPU memory budget: must be positive, got {}", *gpuBytes);
  if (hostBytes && *hostBytes <= 0)
    return makeError("host memory budget: must be positive, got {}",
                     *hostBytes);
  HardwareProfile copy = *this;
  if (gpuBytes)
    copy.gpuBudgetBytes_ = *gpuBytes;
  if (hostBytes)
    copy.hostBudgetBytes_ = *hostBytes;
  return copy;
}

double HardwareProfile::gemmSeconds(int64_t m, int64_t n, int64_t k) const {
  if (m <= 0 || n <= 0 || k <= 0)
    return 0;
  double flops = 2.0 * m * n * k;
  double weightBytes = kBf16Bytes * n * k;
  double bytesTouched =
      weightBytes + kBf16Bytes * (double(m) * k + double(m) * n);
  double floor = std::max(peakComputeSeconds(flops), hbmSeconds(bytesTouched));
  return std::max(measuredGemmSeconds(gemm_, m, n, k, weightBytes), floor);
}

std::optional<double> HardwareProfile::fp8GemmSeconds(int64_t m, int64_t n,
                                                      int64_t k) const {
  if (gemmFp8_.empty())
    return std::nullopt;
  if (m <= 0 || n <= 0 || k <= 0)
    return 0.0;
  // Codes of a byte, bf16 outputs; tensor cores at twice bf16's rate.
  double weightBytes = double(n) * k;
  double bytesTouched = weightBytes + double(m) * k + kBf16Bytes * m * n;
  double floor = std::max(peakComputeSeconds(2.0 * m * n * k) / 2,
                          hbmSeconds(bytesTouched));
  return std::max(measuredGemmSeconds(gemmFp8_, m, n, k, weightBytes), floor);
}

double HardwareProfile::measuredGemmSeconds(
    const std::vector<GemmShapeProfile> &shapes, int64_t m, int64_t n,
    int64_t k, double weightBytes) const {
  const GemmShapeProfile *closest = &shapes.front();
  for (const GemmShapeProfile &shape : shapes)
    if (logDistance(double(n) * k, double(shape.n) * shape.k) <
        logDistance(double(n) * k, double(closest->n) * closest->k))
      closest = &shape;
  double sizeRatio = double(n) * k / (double(closest->n) * closest->k);
  double measured = sizeRatio * interpolateLogLog(closest->points, double(m),
                                                  [](const GemmPoint &p) {
                                                    return double(p.m);
                                                  });
  // Below the smallest measured m a GEMM is bound by reading its weight.
  if (m < closest->points.front().m)
    measured = std::max(measured, hbmSeconds(weightBytes));
  return measured;
}

std::optional<double> HardwareProfile::groupedGemmSeconds(int64_t rowsPerExpert,
                                                          double experts,
                                                          int64_t n,
                                                          int64_t k) const {
  if (groupedGemm_.empty())
    return std::nullopt;
  if (rowsPerExpert <= 0 || experts <= 0 || n <= 0 || k <= 0)
    return 0.0;
  double rows = experts * double(rowsPerExpert);
  double flops = 2.0 * rows * n * k;
  double bytesTouched = kBf16Bytes * (experts * n * k + rows * (n + k));
  double floor = std::max(peakComputeSeconds(flops), hbmSeconds(bytesTouched));

  const GroupedGemmShapeProfile *closest = &groupedGemm_.front();
  for (const GroupedGemmShapeProfile &shape : groupedGemm_)
    if (logDistance(double(n) * k, double(shape.n) * shape.k) <
        logDistance(double(n) * k, double(closest->n) * closest->k))
      closest = &shape;
  // Per expert of the measured launch, scaled to this size and count.
  double perExpert = interpolateLogLog(closest->points, double(rowsPerExpert),
                                       [](const GroupedGemmPoint &p) {
                                         return double(p.rowsPerExpert);
                                       }) /
                     double(closest->experts);
  double sizeRatio = double(n) * k / (double(closest->n) * closest->k);
  return std::max(perExpert * sizeRatio * experts, floor);
}

double HardwareProfile::attentionDecodeSeconds(int64_t batch, int64_t context,
                                               int64_t heads, int64_t kvHeads,
                                               int64_t headDim) const {
  if (batch <= 0 || context <= 0)
    return 0;
  double kvBytes =
      2.0 * kBf16Bytes * double(batch) * context * kvHeads * headDim;
  double floor = hbmSeconds(kvBytes);
  for (const AttentionShapeProfile &shape : attention_) {
    if (shape.heads != heads || shape.kvHeads != kvHeads ||
        shape.headDim != headDim)
      continue;
    double measured = interpolateLogLog(
        shape.points, double(batch) * context,
        [](const AttentionPoint &p) { return double(attentionTokens(p)); });
    return std::max(measured, floor);
  }
  return floor;
}

std::optional<double>
HardwareProfile::mlaDecodeSeconds(int64_t batch, int64_t context, int64_t heads,
                                  int64_t latentDim, int64_t ropeDim) const {
  for (const MlaShapeProfile &shape : mla_) {
    if (shape.heads != heads || shape.latentDim != latentDim ||
        shape.ropeDim != ropeDim)
      continue;
    if (batch <= 0 || context <= 0)
      return 0.0;
    double measured = interpolateLogLog(
        shape.points, double(batch) * context,
        [](const AttentionPoint &p) { return double(attentionTokens(p)); });
    return std::max(measured, hbmSeconds(kBf16Bytes * double(batch) * context *
                                         double(latentDim + ropeDim)));
  }
  return std::nullopt;
}

namespace {

// A prefill curve's time for `prompts` prompts of `pairsPerPrompt` pairs
// each, on `shape`'s points; none without a measured shape.
template <typename Shape>
std::optional<double> prefillSeconds(const Shape *shape, int64_t prompts,
                                     double pairsPerPrompt) {
  if (!shape)
    return std::nullopt;
  if (prompts <= 0 || pairsPerPrompt <= 0)
    return 0.0;
  return interpolateLogLog(shape->points, double(prompts) * pairsPerPrompt,
                           attentionPairs);
}

} // namespace

std::optional<double>
HardwareProfile::attentionPrefillSeconds(int64_t prompts, double pairsPerPrompt,
                                         int64_t heads, int64_t kvHeads,
                                         int64_t headDim) const {
  auto shape = std::find_if(
      attentionPrefill_.begin(), attentionPrefill_.end(), [&](const auto &s) {
        return s.heads == heads && s.kvHeads == kvHeads && s.headDim == headDim;
      });
  return prefillSeconds(shape == attentionPrefill_.end() ? nullptr : &*shape,
                        prompts, pairsPerPrompt);
}

std::optional<double>
HardwareProfile::mlaPrefillSeconds(int64_t prompts, double pairsPerPrompt,
                                   int64_t heads, int64_t latentDim,
                                   int64_t ropeDim) const {
  auto shape =
      std::find_if(mlaPrefill_.begin(), mlaPrefill_.end(), [&](const auto &s) {
        return s.heads == heads && s.latentDim == latentDim &&
               s.ropeDim == ropeDim;
      });
  return prefillSeconds(shape == mlaPrefill_.end() ? nullptr : &*shape, prompts,
                        pairsPerPrompt);
}

double HardwareProfile::copySeconds(double bytes,
                                    CopyDirection direction) const {
  switch (direction) {
  case CopyDirection::HostToDevicePinned:
    return bytes / links_.h2dPinnedBytesPerSecond;
  case CopyDirection::DeviceToHostPinned:
    return bytes / links_.d2hPinnedBytesPerSecond;
  case CopyDirection::HostToDevicePageable:
    return bytes / links_.h2dPageableBytesPerSecond;
  }
  return bytes / links_.h2dPinnedBytesPerSecond;
}

std::optional<double>
HardwareProfile::hostAttentionSeconds(double kvBytes, model::KvDtype dtype,
                                      int64_t headsPerKvHead,
                                      bool whileCopying) const {
  if (!hostCpu_)
    return std::nullopt;
  const HostAttentionShapeProfile *closest = nullptr;
  auto distance = [&](const HostAttentionShapeProfile &shape) {
    return std::abs(std::log(double(shape.heads) / double(shape.kvHeads)) -
                    std::log(double(headsPerKvHead)));
  };
  for (const HostAttentionShapeProfile &shape : hostCpu_->attention)
    if (shape.kvDtype == model::kvDtypeName(dtype) && !shape.points.empty() &&
        (!closest || distance(shape) < distance(*closest)))
      closest = &shape;
  if (!closest)
    return std::nullopt;
  if (kvBytes <= 0)
    return 0.0;
  double seconds = interpolateLogLog(
      closest->points, kvBytes,
      [](const HostAttentionPoint &p) { return double(p.kvBytes); });
  // Each KV byte feeds every query head of its group, and the cores run out
  // of arithmetic before bytes: a larger group than the closest measured
  // one costs its time scaled by the ratio, a smaller one the same.
  double measuredGroup = double(closest->heads) / double(closest->kvHeads);
  seconds *= std::max(1.0, double(headsPerKvHead) / measuredGroup);
  std::optional<double> alone = hostReadBytesPerSecond(false);
  std::optional<double> beside = hostReadBytesPerSecond(whileCopying);
  if (alone && beside && *beside < *alone)
    seconds *= *alone / *beside;
  return seconds;
}

std::optional<double>
HardwareProfile::hostReadBytesPerSecond(bool whileCopying) const {
  if (!hostCpu_ || hostCpu_->readBandwidth.empty())
    return std::nullopt;
  // Points are sorted by threads; the attention runs on all of them.
  if (whileCopying && !hostCpu_->readWithH2d.empty())
    return hostCpu_->readWithH2d.back().readBytesPerSecond;
  return hostCpu_->readBandwidth.back().bytesPerSecond;
}

} // namespace moe::costmodel
