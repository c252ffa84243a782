#include "runtime/host/HostProfiler.h"

#include "runtime/host/CpuFeatures.h"
#include "runtime/host/DecodeAttention.h"
#include "runtime/host/NumaTopology.h"
#include "runtime/host/ReadBandwidth.h"
#include "runtime/support/ThreadPool.h"

#include <algorithm>
#include <chrono>

namespace moe::host {
namespace {

constexpr int64_t kMiB = int64_t(1) << 20;

// Each profiled slot's pages, one after another: the runtime's slots hold
// pages scattered over a pool, each a run of rows read the same way.
struct SlotPages {
  int64_t pagesPerSlot, slotTokens;
  std::vector<int32_t> table;
  SlotPages(int64_t slots, int64_t maxContext)
      : pagesPerSlot((maxContext + model::kHostKvPageTokens - 1) /
                     model::kHostKvPageTokens),
        slotTokens(pagesPerSlot * model::kHostKvPageTokens),
        table(consecutivePages(slots, pagesPerSlot)) {}
  HostKvCache cache(const uint8_t *k, const uint8_t *v, model::KvDtype dtype,
                    int64_t rowBytes) const {
    return {
        k,           v, dtype, rowBytes, model::kHostKvPageTokens, table.data(),
        pagesPerSlot};
  }
};

struct Context {
  const HostProfileOptions &options;
  ThreadPool &pool;
  DecodeAttention &attention;
  double readBytesPerSecond; // all cores
  template <typename... Args>
  void print(fmt::format_string<Args...> format, Args &&...args) const {
    if (options.log)
      options.log(fmt::format(format, std::forward<Args>(args)...));
  }
};

// Median seconds of `run` over a few calls after a warm-up call.
template <typename Run> Result<double> medianSeconds(const Run &run) {
  std::vector<double> seconds;
  for (int i = 0; i < 6; ++i) {
    auto start = std::chrono::steady_clock::now();
    MOE_RETURN_IF_ERROR(run());
    if (i > 0)
      seconds.push_back(std::chrono::duration<double>(
                            std::chrono::steady_clock::now() - start)
                            .count());
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

// Cache bytes of moderate values (no zeros, infinities, NaN or subnormal
// products, which would time other paths): bf16 elements in ±[2^-7, 2), fp8
// codes and scale bytes in [0x20, 0x3F].
std::vector<uint8_t> filledCache(ThreadPool &pool, int64_t bytes,
                                 model::KvDtype dtype) {
  std::vector<uint8_t> cache(bytes);
  pool.parallelFor(
      bytes / 2,
      [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          uint16_t value =
              dtype == model::KvDtype::bf16
                  ? uint16_t(0x3C00 | (i * 7 & 0x3FF) | (i & 1) << 15)
                  : uint16_t(0x2020 | (i * 7 & 0x1F1F));
          cache[2 * i] = uint8_t(value);
          cache[2 * i + 1] = uint8_t(value >> 8);
        }
      },
      1 << 16);
  return cache;
}

// The sizes measured: `rows` decode rows at growing contexts.
struct Sizes {
  int64_t rows;
  std::vector<int64_t> contexts;
};
Sizes sizes(const HostProfileOptions &options) {
  if (options.quick)
    return {8, {256, 1024}};
  return {32, {256, 1024, 4096, 8192}};
}

void report(const Context &ctx, std::string_view shape, int64_t rows,
            int64_t context, int64_t bytes, double seconds) {
  double rate = double(bytes) / seconds;
  ctx.print("attn   {:<26} rows {:>3} context {:>5}: {:>8.2f} ms  KV {:>6} "
            "MiB  {:>6.1f} GB/s = {:>3.0f}% of the read bandwidth",
            shape, rows, context, seconds * 1e3, bytes / kMiB, rate / 1e9,
            100 * rate / ctx.readBytesPerSecond);
}

Result<costmodel::HostAttentionShapeProfile>
measureAttention(const Context &ctx, int64_t heads, int64_t kvHeads,
                 int64_t headDim, model::KvDtype dtype) {
  Sizes s = sizes(ctx.options);
  SlotPages pages(s.rows, s.contexts.back());
  int64_t rowBytes = model::kvRowBytes(dtype, kvHeads, headDim);
  std::vector<uint8_t> k =
      filledCache(ctx.pool, s.rows * pages.slotTokens * rowBytes, dtype);
  std::vector<uint8_t> v =
      filledCache(ctx.pool, s.rows * pages.slotTokens * rowBytes, dtype);
  std::vector<uint16_t> q(s.rows * heads * headDim);
  for (size_t i = 0; i < q.size(); ++i)
    q[i] = uint16_t(0x3F80 | (i * 5 & 0x7F));
  std::vector<uint16_t> out(q.size());
  std::vector<int32_t> slots(s.rows), lengths(s.rows);
  for (int64_t r = 0; r < s.rows; ++r)
    slots[r] = int32_t(r);

  costmodel::HostAttentionShapeProfile profile{
      heads,           kvHeads, headDim, std::string(model::kvDtypeName(dtype)),
      ctx.pool.size(), {}};
  std::string shape = fmt::format("gqa {}/{}/{} {}", heads, kvHeads, headDim,
                                  model::kvDtypeName(dtype));
  for (int64_t context : s.contexts) {
    std::fill(lengths.begin(), lengths.end(), int32_t(context));
    SoftmaxAttentionArgs args;
    args.q = q.data();
    args.cache = pages.cache(k.data(), v.data(), dtype, rowBytes);
    args.rows = {s.rows, slots.data(), lengths.data()};
    args.heads = heads;
    args.kvHeads = kvHeads;
    args.headDim = headDim;
    args.scale = 0.08838835f;
    args.out.bf16 = out.data();
    auto seconds = medianSeconds([&] { return ctx.attention.run(args); });
    MOE_RETURN_IF_ERROR(seconds);
    int64_t bytes = 2 * s.rows * context * rowBytes;
    profile.points.push_back({bytes, *seconds});
    report(ctx, shape, s.rows, context, bytes, *seconds);
  }
  return profile;
}

Result<costmodel::HostMlaShapeProfile>
measureMla(const Context &ctx, int64_t heads, int64_t latentDim,
           int64_t ropeDim, model::KvDtype dtype) {
  Sizes s = sizes(ctx.options);
  SlotPages pages(s.rows, s.contexts.back());
  int64_t rowBytes = model::latentRowBytes(dtype, latentDim, ropeDim);
  std::vector<uint8_t> cache =
      filledCache(ctx.pool, s.rows * pages.slotTokens * rowBytes, dtype);
  std::vector<uint16_t> qLatent(s.rows * heads * latentDim),
      qRope(s.rows * heads * ropeDim), out(qLatent.size());
  for (size_t i = 0; i < qLatent.size(); ++i)
    qLatent[i] = uint16_t(0x3F80 | (i * 5 & 0x7F));
  for (size_t i = 0; i < qRope.size(); ++i)
    qRope[i] = uint16_t(0x3F80 | (i * 3 & 0x7F));
  std::vector<int32_t> slots(s.rows), lengths(s.rows);
  for (int64_t r = 0; r < s.rows; ++r)
    slots[r] = int32_t(r);

  costmodel::HostMlaShapeProfile profile{
      heads,           latentDim,
      ropeDim,         std::string(model::kvDtypeName(dtype)),
      ctx.pool.size(), {}};
  std::string shape = fmt::format("mla {}/{}+{} {}", heads, latentDim, ropeDim,
                                  model::kvDtypeName(dtype));
  for (int64_t context : s.contexts) {
    std::fill(lengths.begin(), lengths.end(), int32_t(context));
    LatentAttentionArgs args;
    args.qLatent = qLatent.data();
    args.qRope = qRope.data();
    args.cache = pages.cache(cache.data(), nullptr, dtype, rowBytes);
    args.rows = {s.rows, slots.data(), lengths.data()};
    args.heads = heads;
    args.latentDim = latentDim;
    args.ropeDim = ropeDim;
    args.scale = 0.07216878f;
    args.out.bf16 = out.data();
    auto seconds = medianSeconds([&] { return ctx.attention.run(args); });
    MOE_RETURN_IF_ERROR(seconds);
    int64_t bytes = s.rows * context * rowBytes;
    profile.points.push_back({bytes, *seconds});
    report(ctx, shape, s.rows, context, bytes, *seconds);
  }
  return profile;
}

} // namespace

Result<costmodel::HostCpuProfile>
profileHost(const HostProfileOptions &options) {
  costmodel::HostCpuProfile profile;
  const CpuFeatures &features = cpuFeatures();
  profile.isa = {features.avx2, features.avx512f, features.avx512bf16,
                 features.avx512fp16, features.amxBf16};
  ThreadPool pool(0);
  auto attention = DecodeAttention::create(pool);
  MOE_RETURN_IF_ERROR(attention);
  profile.kernelIsa = std::string(vectorIsaName(attention->isa()));
  auto nodes = readNumaNodes();
  MOE_RETURN_IF_ERROR(nodes);
  profile.numaNodes = std::move(*nodes);

  Context ctx{options, pool, *attention, 0};
  ctx.print("host   {} threads; vector ISA: avx2 {} avx512f {} avx512_bf16 {} "
            "avx512_fp16 {} amx_bf16 {}; kernels {}; {} NUMA node(s)",
            pool.size(), features.avx2, features.avx512f, features.avx512bf16,
            features.avx512fp16, features.amxBf16, profile.kernelIsa,
            profile.numaNodes.size());
  for (const costmodel::NumaNode &node : profile.numaNodes)
    ctx.print("numa   node {}: {} CPUs, {} MiB", node.node, node.cpus.size(),
              node.memoryBytes / kMiB);

  ReadBandwidthOptions read;
  if (options.quick)
    read.bufferBytes = 256 * kMiB;
  for (int threads : readThreadCounts(pool.size())) {
    double rate = measureReadBandwidth(threads, read);
    profile.readBandwidth.push_back({threads, rate});
    ctx.readBytesPerSecond = std::max(ctx.readBytesPerSecond, rate);
    ctx.print("read   {:>3} threads: {:>6.1f} GB/s", threads, rate / 1e9);
  }

  // The work per KV byte grows with the query heads sharing a KV head, so
  // each group size of the shipped models is measured: 1 (Qwen1.5-MoE), 4
  // (Mixtral), 8 (Qwen3-30B-A3B, GPT-OSS), 16 (Qwen3-235B-A22B); fp8 at the
  // two most common.
  struct Shape {
    int64_t heads, kvHeads, headDim;
    model::KvDtype dtype;
  };
  for (const Shape &gqa : {Shape{16, 16, 128, model::KvDtype::bf16},
                           Shape{32, 8, 128, model::KvDtype::bf16},
                           Shape{32, 4, 128, model::KvDtype::bf16},
                           Shape{64, 4, 128, model::KvDtype::bf16},
                           Shape{32, 8, 128, model::KvDtype::fp8},
                           Shape{32, 4, 128, model::KvDtype::fp8}}) {
    auto shape =
        measureAttention(ctx, gqa.heads, gqa.kvHeads, gqa.headDim, gqa.dtype);
    MOE_RETURN_IF_ERROR(shape);
    profile.attention.push_back(std::move(*shape));
  }
  auto mla = measureMla(ctx, 16, 512, 64, model::KvDtype::bf16);
  MOE_RETURN_IF_ERROR(mla);
  profile.mla.push_back(std::move(*mla));
  return profile;
}

} // namespace moe::host
