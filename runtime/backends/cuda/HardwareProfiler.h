// Measures what the planner's cost model needs from one GPU and its host:
// copy rates over PCIe and HBM, bf16 GEMM times through cuBLASLt for the real
// models' expert/attention shapes, decode-attention times, and the host's
// cores (runtime/host's profiler). The result is
// written as JSON (schema "moe-hardware-profile/1") that the compiler's
// hardware-profile loader reads.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/costmodel/HardwareProfile.h"
#include "runtime/support/Result.h"

namespace moe::cuda {

struct DeviceInfo {
  std::string name;
  std::int64_t memoryBytes = 0;
  // Not for plans: what the CUDA context holds (total - free once it
  // exists) plus the CUDA backend's headroom and 1 GiB of slack.
  std::int64_t reservedBytes = 0;
  int smCount = 0;
  std::string computeCapability; // "9.0"
};

struct HostInfo {
  std::int64_t memoryBytes = 0;   // MemTotal of /proc/meminfo
  std::int64_t reservedBytes = 0; // not for plans: the OS and the process
  int cpuCores = 0;               // CPUs this process may run on
};

// All rates in bytes per second.
struct LinkRates {
  double h2dPinned = 0;
  double d2hPinned = 0;
  double h2dPageable = 0;
  double hbm = 0; // device-to-device copy, bytes read + bytes written
};

// y[m, n] = x[m, k] · W[n, k]ᵀ, bf16 in/out, fp32 accumulation (cuBLASLt,
// the fastest of its heuristic's candidate algorithms for each (m, n, k)).
struct GemmPoint {
  std::int64_t m = 0;
  double seconds = 0;
};
struct GemmProfile {
  std::int64_t n = 0;
  std::int64_t k = 0;
  std::vector<GemmPoint> points;
};

// The routed experts' grouped kernel (kernels::groupedGemm): one launch
// over `experts` experts of W [n, k], each given `rowsPerExpert` rows.
struct GroupedGemmPoint {
  std::int64_t rowsPerExpert = 0;
  double seconds = 0;
};
struct GroupedGemmProfile {
  std::int64_t n = 0;
  std::int64_t k = 0;
  std::int64_t experts = 0;
  std::vector<GroupedGemmPoint> points;
};

// One decode step of attention for `batch` sequences of `context` tokens
// (one query token each), all heads of one layer.
struct AttentionPoint {
  std::int64_t batch = 0;
  std::int64_t context = 0;
  double seconds = 0;
};
struct AttentionProfile {
  int heads = 0;
  int kvHeads = 0;
  int headDim = 0;
  std::vector<AttentionPoint> points;
};

// DeepSeek's absorbed MLA decode (kernels::mlaAttention): `heads` query
// heads per token over one shared latent cache row of latentDim + ropeDim.
struct MlaAttentionProfile {
  int heads = 0;
  int latentDim = 0;
  int ropeDim = 0;
  std::vector<AttentionPoint> points;
};

struct HardwareProfile {
  DeviceInfo device;
  HostInfo host;
  LinkRates links;
  std::vector<GemmProfile> gemmBf16;
  // cuBLASLt's block-scaled FP8 GEMM (GemmRunner with Fp8GemmOperands) at
  // the routed experts' shapes.
  std::vector<GemmProfile> gemmFp8Block;
  std::vector<GroupedGemmProfile> groupedGemmBf16;
  std::vector<AttentionProfile> attentionDecodeBf16;
  std::vector<MlaAttentionProfile> mlaAttentionDecodeBf16;
  // Prefill: points of `batch` prompts of `context` tokens, every row
  // attending its causal prefix, as the backend runs prompt rows.
  std::vector<AttentionProfile> attentionPrefillBf16;
  std::vector<MlaAttentionProfile> mlaAttentionPrefillBf16;
  // The host's cores (runtime/host/HostProfiler.h), and their reads on all
  // threads beside the GPU's copies of pinned host memory (readWithH2d).
  std::optional<costmodel::HostCpuProfile> hostCpu;
};

struct ProfileOptions {
  bool quick = false; // a subset of every measurement, for smoke tests
  // Only the correctness checks (for compute-sanitizer); the profile then
  // holds the device and host facts alone.
  bool checksOnly = false;
  // Only these sections (kProfileSections), beside the device facts; empty:
  // all of them.
  std::vector<std::string> sections;
  int device = 0;
  // Receives one line of the progress table at a time (no newline).
  std::function<void(std::string_view)> log;
};

// The measured sections of a profile, by their JSON keys.
inline constexpr std::string_view kProfileSections[] = {
    "links",
    "gemm_bf16",
    "gemm_fp8_block",
    "grouped_gemm_bf16",
    "attention_decode_bf16",
    "mla_attention_decode_bf16",
    "attention_prefill_bf16",
    "mla_attention_prefill_bf16",
    "host_cpu"};

// Runs every measurement (after checking the GEMM layout and the decode
// attention kernel against CPU references). Fails with "no CUDA device: ..."
// when there is none.
Result<HardwareProfile> profileHardware(const ProfileOptions &options);

// The profile as JSON text, schema "moe-hardware-profile/1".
std::string profileToJson(const HardwareProfile &profile);

// Writes profileToJson(profile) to `path`.
Status writeProfileJson(const HardwareProfile &profile,
                        const std::string &path);

// Measures (profileHardware) and writes the profile to `path`: an
// unwritable path fails before measuring, a failure leaves no new file.
Status measureProfileToFile(const ProfileOptions &options,
                            const std::string &path);

} // namespace moe::cuda
