// A measured hardware profile (models/hardware/README.md describes the JSON)
// and the timing functions the cost model builds on. Measurements come from
// the GPU machine; nothing here guesses a number that was not measured, except
// the roofline floors (bytes / bandwidth, FLOPs / measured peak) that bound
// every estimate from below.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/model/KvFormat.h"
#include "runtime/support/Result.h"

namespace moe::costmodel {

inline constexpr std::string_view kHardwareProfileSchema =
    "moe-hardware-profile/1";

// memoryBytes - reservedBytes is what a plan may use by default: the rest
// is for what runs beside it (CUDA context, cuBLASLt workspace and backend
// headroom on the GPU; the OS and the process on the host).
struct DeviceInfo {
  std::string name;
  int64_t memoryBytes = 0;
  int64_t reservedBytes = 0;
  int64_t smCount = 0;
  std::string computeCapability;
};

struct HostInfo {
  int64_t memoryBytes = 0;
  int64_t reservedBytes = 0;
  int64_t cpuCores = 0;
};

struct LinkBandwidths {
  double h2dPinnedBytesPerSecond = 0;
  double d2hPinnedBytesPerSecond = 0;
  double h2dPageableBytesPerSecond = 0;
  double hbmBytesPerSecond = 0;
};

struct GemmPoint {
  int64_t m = 0;
  double seconds = 0;
};

// y[m,n] = x[m,k] · W[n,k]ᵀ in bf16, timed for several token counts m.
struct GemmShapeProfile {
  int64_t n = 0;
  int64_t k = 0;
  std::vector<GemmPoint> points; // Sorted by m, distinct m.
};

struct GroupedGemmPoint {
  int64_t rowsPerExpert = 0;
  double seconds = 0;
};

// The routed experts' grouped kernel: one launch over `experts` experts of
// W [n, k], each given the same rows, timed for several rows per expert (the
// CUDA backend runs decode-sized expert groups this way).
struct GroupedGemmShapeProfile {
  int64_t n = 0;
  int64_t k = 0;
  int64_t experts = 0;
  std::vector<GroupedGemmPoint> points; // Sorted by rows per expert.
};

struct AttentionPoint {
  int64_t batch = 0;
  int64_t context = 0;
  double seconds = 0;
};
// What a curve's points are ordered and interpolated by: a decode point's
// tokens read (batch · context), a prefill point's (row, key) pairs
// (`batch` prompts of `context` rows, row p attending keys 0..p).
int64_t attentionTokens(const AttentionPoint &point);
double attentionPairs(const AttentionPoint &point);

// Attention over bf16 KV of one head shape. Decode curves (one query token
// per sequence): `batch` sequences at `context`. Prefill curves: `batch`
// prompts of `context` tokens, every row attending its causal prefix.
struct AttentionShapeProfile {
  int64_t heads = 0;
  int64_t kvHeads = 0;
  int64_t headDim = 0;
  // Sorted by batch·context (decode) or by (row, key) pairs (prefill).
  std::vector<AttentionPoint> points;
};

// DeepSeek's absorbed MLA (kernels::mlaAttention): `heads` query heads per
// token over one shared cache row of latentDim + ropeDim; points as
// AttentionShapeProfile's.
struct MlaShapeProfile {
  int64_t heads = 0;
  int64_t latentDim = 0;
  int64_t ropeDim = 0;
  std::vector<AttentionPoint> points;
};

// The host's cores as a second attention device (optional "host_cpu",
// measured by runtime/host's profiler): what it reads per second, with how
// many threads, and how long its decode attention kernels take.
struct HostVectorIsa {
  bool avx2 = false;
  bool avx512f = false;
  bool avx512bf16 = false;
  bool avx512fp16 = false;
  bool amxBf16 = false;
};

struct NumaNode {
  int64_t node = 0;
  std::vector<int64_t> cpus;
  int64_t memoryBytes = 0; // 0 for a node without memory
};

struct HostReadPoint {
  int64_t threads = 0;
  double bytesPerSecond = 0;
};

// Reading with `threads` threads while the GPU copies pinned host memory
// (H2D) as fast as it can: both draw on the same DRAM. Needs a GPU; absent
// from profiles measured without one.
struct HostReadWithCopyPoint {
  int64_t threads = 0;
  double readBytesPerSecond = 0;
  double h2dBytesPerSecond = 0;
};

struct HostAttentionPoint {
  int64_t kvBytes = 0; // K/V (or latent) bytes read
  double seconds = 0;
};

// Host decode attention (runtime/host/DecodeAttention.h) over host KV of one
// format, on `threads` threads; points sorted by bytes read.
struct HostAttentionShapeProfile {
  int64_t heads = 0;
  int64_t kvHeads = 0;
  int64_t headDim = 0;
  std::string kvDtype; // "bf16" or "fp8"
  int64_t threads = 0;
  std::vector<HostAttentionPoint> points;
};
struct HostMlaShapeProfile {
  int64_t heads = 0;
  int64_t latentDim = 0;
  int64_t ropeDim = 0;
  std::string kvDtype;
  int64_t threads = 0;
  std::vector<HostAttentionPoint> points;
};

struct HostCpuProfile {
  HostVectorIsa isa;
  // The attention kernels measured: "avx512_amx", "avx512" or "avx2".
  std::string kernelIsa;
  std::vector<NumaNode> numaNodes;
  std::vector<HostReadPoint> readBandwidth;       // sorted by threads
  std::vector<HostReadWithCopyPoint> readWithH2d; // sorted by threads
  std::vector<HostAttentionShapeProfile> attention;
  std::vector<HostMlaShapeProfile> mla;
};

// The "host_cpu" object's JSON text, as fromJson reads it.
std::string hostCpuProfileJson(const HostCpuProfile &profile);
// Writes the profile at `inPath` to `outPath` with the named top-level
// sections taken from `measured` (a JSON object, e.g. a profile re-measured
// in part; a section it lacks is left out), checked by loading it first.
Status writeProfileWithSections(const std::string &inPath,
                                const std::string &outPath,
                                std::string_view measured,
                                const std::vector<std::string> &sections);
// The same with `host` as the host_cpu section.
Status writeProfileWithHost(const std::string &inPath,
                            const std::string &outPath,
                            const HostCpuProfile &host);

enum class CopyDirection {
  HostToDevicePinned,
  DeviceToHostPinned,
  HostToDevicePageable
};

class HardwareProfile {
public:
  // Parses and validates; errors name the offending field
  // ("links.hbm_bytes_per_s: must be a positive number").
  static Result<HardwareProfile> fromJson(std::string_view text);
  static Result<HardwareProfile> load(const std::string &path);

  // The same hardware with other memory budgets, e.g. a 24 GB card planned on
  // an 80 GB one. An absent value keeps the measured memory size.
  Result<HardwareProfile> withBudgets(std::optional<int64_t> gpuBytes,
                                      std::optional<int64_t> hostBytes) const;

  const DeviceInfo &device() const { return device_; }
  const HostInfo &host() const { return host_; }
  const LinkBandwidths &links() const { return links_; }
  const std::vector<GemmShapeProfile> &gemmShapes() const { return gemm_; }
  const std::vector<AttentionShapeProfile> &attentionShapes() const {
    return attention_;
  }
  const std::vector<GroupedGemmShapeProfile> &groupedGemmShapes() const {
    return groupedGemm_;
  }
  const std::vector<MlaShapeProfile> &mlaShapes() const { return mla_; }
  const std::vector<AttentionShapeProfile> &attentionPrefillShapes() const {
    return attentionPrefill_;
  }
  const std::vector<MlaShapeProfile> &mlaPrefillShapes() const {
    return mlaPrefill_;
  }
  // None for profiles measured before the host was.
  const std::optional<HostCpuProfile> &hostCpu() const { return hostCpu_; }

  int64_t gpuBudgetBytes() const { return gpuBudgetBytes_; }
  int64_t hostBudgetBytes() const { return hostBudgetBytes_; }

  // The best bf16 FLOP rate of any measured GEMM point.
  double peakGemmFlopsPerSecond() const { return peakGemmFlops_; }

  // Time of y[m,n] = x[m,k]·W[n,k]ᵀ: the measured FLOP rate at m of the
  // measured shape closest in n·k (log-log interpolation over m), never below
  // max(FLOPs / peak rate, bytes touched / HBM bandwidth).
  double gemmSeconds(int64_t m, int64_t n, int64_t k) const;
  // The same for cuBLASLt's block-scaled FP8 GEMM (E4M3 operands, a scale
  // per 128 × 128 block of W and per 128 inputs of x) from the optional
  // gemm_fp8_block curve, never below max(FLOPs / twice the bf16 peak,
  // bytes / HBM bandwidth) with a byte a code. None without the curve.
  std::optional<double> fp8GemmSeconds(int64_t m, int64_t n, int64_t k) const;

  // One grouped launch over `experts` experts (a mean: the expected number
  // a step reaches) of W [n, k] with `rowsPerExpert` rows each: the measured
  // shape closest in n·k, interpolated log-log over rows per expert, scaled
  // by size and expert count, never below the floors. None without grouped
  // measurements.
  std::optional<double> groupedGemmSeconds(int64_t rowsPerExpert,
                                           double experts, int64_t n,
                                           int64_t k) const;

  // Decode attention of `batch` sequences over `context` cached tokens. Uses
  // the measured points of the same head shape; without them, the time to
  // read the KV once from HBM.
  double attentionDecodeSeconds(int64_t batch, int64_t context, int64_t heads,
                                int64_t kvHeads, int64_t headDim) const;
  // MLA decode of `batch` sequences over `context` latent rows: the measured
  // points of the same shape, never below reading the latent cache once from
  // HBM. None without them.
  std::optional<double> mlaDecodeSeconds(int64_t batch, int64_t context,
                                         int64_t heads, int64_t latentDim,
                                         int64_t ropeDim) const;

  // Prefill attention of `prompts` prompts whose rows attend
  // `pairsPerPrompt` (row, key) pairs each (a prompt of n tokens: n(n+1)/2
  // without a window), as the backend runs prompt rows: the measured
  // prefill points of the same shape, interpolated log-log over pairs.
  // None without them.
  std::optional<double> attentionPrefillSeconds(int64_t prompts,
                                                double pairsPerPrompt,
                                                int64_t heads, int64_t kvHeads,
                                                int64_t headDim) const;
  std::optional<double> mlaPrefillSeconds(int64_t prompts,
                                          double pairsPerPrompt, int64_t heads,
                                          int64_t latentDim,
                                          int64_t ropeDim) const;

  double copySeconds(double bytes, CopyDirection direction) const;

  // The host's cores reading DRAM on all threads: alone, or beside the
  // GPU's copies of host memory where the profile measured that. None
  // without host measurements.
  std::optional<double> hostReadBytesPerSecond(bool whileCopying) const;
  // Decode attention on the host's cores reading `kvBytes` of host KV in
  // format `dtype`, `headsPerKvHead` query heads sharing each K/V vector:
  // the measured host shape of that format closest in heads per KV head,
  // interpolated log-log over bytes read, scaled up by how many more heads
  // share a KV head than in that shape. `whileCopying`: the GPU copies host
  // memory meanwhile and both draw on the same DRAM, so the time grows by
  // the cores' read bandwidth alone over theirs beside the copies (where
  // the profile measured that). None without host attention measurements
  // of the format.
  std::optional<double> hostAttentionSeconds(double kvBytes,
                                             model::KvDtype dtype,
                                             int64_t headsPerKvHead,
                                             bool whileCopying) const;

  // Lower bounds that any estimate respects.
  double hbmSeconds(double bytes) const {
    return bytes / links_.hbmBytesPerSecond;
  }
  double peakComputeSeconds(double flops) const {
    return flops / peakGemmFlops_;
  }

private:
  // The closest measured shape's time at m, scaled by size.
  double measuredGemmSeconds(const std::vector<GemmShapeProfile> &shapes,
                             int64_t m, int64_t n, int64_t k,
                             double weightBytes) const;

  DeviceInfo device_;
  HostInfo host_;
  LinkBandwidths links_;
  std::vector<GemmShapeProfile> gemm_;
  std::vector<GemmShapeProfile> gemmFp8_;
  std::vector<AttentionShapeProfile> attention_;
  std::vector<GroupedGemmShapeProfile> groupedGemm_;
  std::vector<MlaShapeProfile> mla_;
  std::vector<AttentionShapeProfile> attentionPrefill_;
  std::vector<MlaShapeProfile> mlaPrefill_;
  std::optional<HostCpuProfile> hostCpu_;
  int64_t gpuBudgetBytes_ = 0;
  int64_t hostBudgetBytes_ = 0;
  double peakGemmFlops_ = 0;
};

} // namespace moe::costmodel
