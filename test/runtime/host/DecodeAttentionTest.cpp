// Host decode attention against the CPU backend's reference
// (cpu::attendHead, cpu::attendLatentHead) on every attention kind, cache
// format and output type, with each instruction set this CPU runs.
//
// Tolerances: q, K and V are bf16 or fp8 values, exact in fp32 on both
// sides, so the kernels and the reference differ only in fp32 rounding: dot
// products and sums in another order, q times the scale before the dot,
// a polynomial exp (2 ulp), an online softmax rescaled per tile and chunks
// merged. With |v| ≤ 1 and contexts ≤ 1200 those stay below 1e-5 in fp32
// outputs (4e-5 for MLA's 576-wide scores, larger by their width). A bf16
// output adds its own rounding: one bf16 ulp (2^-7 relative) on top.
#include "runtime/host/DecodeAttention.h"

#include "runtime/backends/cpu/Kernels.h"
#include "runtime/weights/HalfFloat.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace moe::host {
namespace {

using model::KvDtype;

constexpr int32_t kMaxContext = 1200;

struct Rows {
  std::vector<int32_t> slots, lengths;
  DecodeRows view() const {
    return {static_cast<int64_t>(slots.size()), slots.data(), lengths.data()};
  }
};

// Lengths of 0, 1, under and over a tile, a chunk, and several chunks;
// slots out of order.
Rows someRows() {
  return {{3, 0, 5, 1, 4, 2, 6}, {1, 17, 0, 300, 1200, 16, 700}};
}

std::vector<float> uniform(size_t count, float scale, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> values(count);
  for (float &v : values)
    v = dist(rng);
  return values;
}

std::vector<uint16_t> toBf16(const std::vector<float> &values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i)
    bits[i] = floatToBf16(values[i]);
  return bits;
}

std::vector<float> fromBf16(const std::vector<uint16_t> &bits) {
  std::vector<float> values(bits.size());
  for (size_t i = 0; i < bits.size(); ++i)
    values[i] = bf16ToFloat(bits[i]);
  return values;
}

// A cache of `slots` × kMaxContext rows of `vectors` vectors of `width`
// values, in `dtype`, and the values it stands for ([slot][position][·]).
struct Cache {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
  int64_t rowBytes = 0;
};

Cache makeCache(KvDtype dtype, int64_t slots, int64_t vectors, int64_t width,
                uint32_t seed) {
  Cache cache;
  int64_t rows = slots * kMaxContext, rowWidth = vectors * width;
  cache.rowBytes = model::kvRowBytes(dtype, vectors, width);
  cache.bytes.resize(rows * cache.rowBytes);
  cache.values = uniform(rows * rowWidth, 1.0f, seed);
  for (int64_t r = 0; r < rows; ++r) {
    float *v = cache.values.data() + r * rowWidth;
    uint8_t *row = cache.bytes.data() + r * cache.rowBytes;
    if (dtype == KvDtype::fp8) {
      model::encodeFp8Row(v, vectors, width, row);
      model::decodeFp8Row(row, vectors, width, v);
    } else {
      for (int64_t i = 0; i < rowWidth; ++i) {
        uint16_t bits = floatToBf16(v[i]);
        std::memcpy(row + 2 * i, &bits, 2);
        v[i] = bf16ToFloat(bits);
      }
    }
  }
  return cache;
}

// An fp8 cache of random codes, every one but NaN's (subnormals, zeros and
// ±448 included), under random scales in [0.5, 1) / 448: values within ±1.
Cache makeCodeCache(int64_t slots, int64_t vectors, int64_t width,
                    uint32_t seed) {
  Cache cache;
  int64_t rows = slots * kMaxContext, rowWidth = vectors * width;
  cache.rowBytes = model::kvRowBytes(KvDtype::fp8, vectors, width);
  cache.bytes.resize(rows * cache.rowBytes);
  cache.values.resize(rows * rowWidth);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> code(0, 253); // skipping 0x7F and 0xFF
  std::uniform_real_distribution<float> scale(0.5f / kFp8Max, 1.0f / kFp8Max);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t *row = cache.bytes.data() + r * cache.rowBytes;
    for (int64_t i = 0; i < rowWidth; ++i) {
      int c = code(rng);
      row[i] = uint8_t(c < 0x7F ? c : c + 1);
    }
    for (int64_t h = 0; h < vectors; ++h) {
      float s = scale(rng);
      std::memcpy(row + model::fp8ScalesOffset(vectors, width) + 4 * h, &s,
                  sizeof s);
    }
    model::decodeFp8Row(row, vectors, width,
                        cache.values.data() + r * rowWidth);
  }
  return cache;
}

// The caches' rows in a pool of pages of kPageTokens, the slots' pages
// taken in reverse (slot 0 gets the pool's last): tiles cut where pages
// end, which is not where the 32-token tiles would.
constexpr int64_t kPageTokens = 48;
constexpr int64_t kPagesPerSlot = kMaxContext / kPageTokens;

struct PagedCache {
  std::vector<uint8_t> k, v;
  std::vector<int32_t> table;
  HostKvCache cache;
};

PagedCache paged(const Cache &k, const Cache *v, KvDtype dtype) {
  PagedCache pages;
  int64_t slots = int64_t(k.bytes.size()) / (kMaxContext * k.rowBytes);
  int64_t count = slots * kPagesPerSlot, pageBytes = kPageTokens * k.rowBytes;
  pages.table.resize(size_t(count));
  for (int64_t page = 0; page < count; ++page)
    pages.table[size_t(page)] = int32_t(count - 1 - page);
  for (auto [from, to] : {std::pair{&k, &pages.k}, std::pair{v, &pages.v}}) {
    if (!from)
      continue;
    to->resize(from->bytes.size());
    for (int64_t page = 0; page < count; ++page)
      std::memcpy(to->data() + pages.table[size_t(page)] * pageBytes,
                  from->bytes.data() + page * pageBytes, size_t(pageBytes));
  }
  pages.cache = {
      pages.k.data(), v ? pages.v.data() : nullptr, dtype,        k.rowBytes,
      kPageTokens,    pages.table.data(),           kPagesPerSlot};
  return pages;
}

// Each output within `tolerance`, plus a bf16 ulp of the reference when the
// output was bf16.
void expectNear(const std::vector<float> &got, const std::vector<float> &want,
                float tolerance, bool bf16) {
  ASSERT_EQ(got.size(), want.size());
  int failures = 0;
  for (size_t i = 0; i < got.size() && failures < 10; ++i) {
    float allowed = tolerance + (bf16 ? std::fabs(want[i]) * 0x1p-7f : 0.0f);
    if (!(std::fabs(got[i] - want[i]) <= allowed)) {
      ADD_FAILURE() << "output " << i << ": " << got[i] << ", reference "
                    << want[i];
      ++failures;
    }
  }
}

struct SoftmaxCase {
  std::string name;
  int64_t heads, kvHeads, headDim;
  KvDtype dtype;
  bool sinks;
  int64_t window;
  bool bf16Out;
  bool everyCode = false; // fp8: random codes rather than encoded values
};

class HostAttentionTest : public ::testing::TestWithParam<VectorIsa> {
protected:
  void SetUp() override {
    if (!supports(cpuFeatures(), GetParam()))
      GTEST_SKIP() << "this CPU cannot run " << vectorIsaName(GetParam());
  }

  // The reference: per row and head, cpu::attendHead over the row's window
  // of the values the cache stands for.
  std::vector<float> reference(const SoftmaxCase &c, const Rows &rows,
                               const std::vector<float> &q,
                               const std::vector<float> &sinks, const Cache &k,
                               const Cache &v, float scale) {
    int64_t kvw = c.kvHeads * c.headDim, qw = c.heads * c.headDim;
    std::vector<float> out(rows.slots.size() * qw, 0.0f), scores(kMaxContext);
    for (size_t r = 0; r < rows.slots.size(); ++r) {
      int64_t length = rows.lengths[r];
      int64_t n = c.window > 0 ? std::min(length, c.window) : length;
      if (n == 0)
        continue;
      // The reference reads a slot's rows as one page of the whole context.
      int32_t page = rows.slots[r];
      for (int64_t h = 0; h < c.heads; ++h) {
        int64_t g = h / (c.heads / c.kvHeads);
        cpu::CachedRows keys{
            k.values.data() + g * c.headDim, kvw, {&page, 1}, kMaxContext};
        cpu::CachedRows values{
            v.values.data() + g * c.headDim, kvw, {&page, 1}, kMaxContext};
        cpu::attendHead(q.data() + r * qw + h * c.headDim, keys, values,
                        length - n, n, c.headDim, scale,
                        c.sinks ? &sinks[h] : nullptr, scores.data(),
                        out.data() + r * qw + h * c.headDim);
      }
    }
    return out;
  }

  void check(const SoftmaxCase &c) {
    SCOPED_TRACE(c.name);
    ThreadPool pool(3);
    auto attention = DecodeAttention::create(pool, GetParam());
    ASSERT_TRUE(attention.ok()) << attention.error().message();
    Rows rows = someRows();
    int64_t qw = c.heads * c.headDim;
    auto qBits = toBf16(uniform(rows.slots.size() * qw, 3.0f, 1));
    std::vector<float> sinks = uniform(c.heads, 2.0f, 2);
    Cache k = c.everyCode ? makeCodeCache(7, c.kvHeads, c.headDim, 3)
                          : makeCache(c.dtype, 7, c.kvHeads, c.headDim, 3);
    Cache v = c.everyCode ? makeCodeCache(7, c.kvHeads, c.headDim, 4)
                          : makeCache(c.dtype, 7, c.kvHeads, c.headDim, 4);
    float scale = 1.0f / std::sqrt(float(c.headDim));

    SoftmaxAttentionArgs args;
    args.q = qBits.data();
    PagedCache kv = paged(k, &v, c.dtype);
    args.cache = kv.cache;
    args.rows = rows.view();
    args.heads = c.heads;
    args.kvHeads = c.kvHeads;
    args.headDim = c.headDim;
    args.sinks = c.sinks ? sinks.data() : nullptr;
    args.window = c.window;
    args.scale = scale;
    std::vector<float> got(rows.slots.size() * qw, NAN);
    std::vector<uint16_t> gotBits(got.size(), 0xFFFF);
    if (c.bf16Out)
      args.out.bf16 = gotBits.data();
    else
      args.out.f32 = got.data();
    Status status = attention->run(args);
    ASSERT_TRUE(status.ok()) << status.error().message();
    if (c.bf16Out)
      got = fromBf16(gotBits);
    expectNear(got, reference(c, rows, fromBf16(qBits), sinks, k, v, scale),
               1e-5f, c.bf16Out);
  }
};

TEST_P(HostAttentionTest, GroupedQueryAttention) {
  check({"gqa bf16", 8, 2, 64, KvDtype::bf16, false, 0, false});
  check({"gqa fp8", 8, 2, 64, KvDtype::fp8, false, 0, false});
  check({"gqa bf16 out", 32, 8, 128, KvDtype::bf16, false, 0, true});
  check({"gqa groups of 6", 12, 2, 40, KvDtype::fp8, false, 0, false});
}

TEST_P(HostAttentionTest, EveryFp8Code) {
  check({"gqa", 32, 8, 128, KvDtype::fp8, false, 0, false, true});
  check({"groups of 6", 12, 2, 40, KvDtype::fp8, true, 0, false, true});
  check({"mha head_dim 88", 3, 3, 88, KvDtype::fp8, false, 0, true, true});
}

TEST_P(HostAttentionTest, MultiHeadAttention) {
  check({"mha bf16", 4, 4, 128, KvDtype::bf16, false, 0, false});
  check({"mha fp8 head_dim 16", 4, 4, 16, KvDtype::fp8, false, 0, false});
  check({"mha head_dim 24", 2, 2, 24, KvDtype::bf16, false, 0, false});
}

TEST_P(HostAttentionTest, SinksAndSlidingWindows) {
  check({"sinks", 8, 2, 64, KvDtype::bf16, true, 0, false});
  check({"window", 8, 2, 64, KvDtype::bf16, false, 128, false});
  check({"sinks window fp8", 8, 1, 64, KvDtype::fp8, true, 300, true});
}

struct LatentCase {
  std::string name;
  int64_t heads, latentDim, ropeDim;
  KvDtype dtype;
  bool bf16Out;
};

TEST_P(HostAttentionTest, LatentAttention) {
  for (const LatentCase &c :
       {LatentCase{"deepseek bf16", 16, 512, 64, KvDtype::bf16, false},
        LatentCase{"deepseek fp8", 16, 512, 64, KvDtype::fp8, true},
        LatentCase{"tiny fp8", 4, 32, 8, KvDtype::fp8, false}}) {
    SCOPED_TRACE(c.name);
    ThreadPool pool(3);
    auto attention = DecodeAttention::create(pool, GetParam());
    ASSERT_TRUE(attention.ok()) << attention.error().message();
    Rows rows = someRows();
    int64_t width = c.latentDim + c.ropeDim;
    int64_t count = static_cast<int64_t>(rows.slots.size());
    auto qLatent = toBf16(uniform(count * c.heads * c.latentDim, 0.3f, 5));
    auto qRope = toBf16(uniform(count * c.heads * c.ropeDim, 0.3f, 6));
    Cache cache = makeCache(c.dtype, 7, width / c.ropeDim, c.ropeDim, 7);
    float scale = 1.0f / std::sqrt(float(128 + c.ropeDim));

    LatentAttentionArgs args;
    args.qLatent = qLatent.data();
    args.qRope = qRope.data();
    PagedCache latent = paged(cache, nullptr, c.dtype);
    args.cache = latent.cache;
    args.rows = rows.view();
    args.heads = c.heads;
    args.latentDim = c.latentDim;
    args.ropeDim = c.ropeDim;
    args.scale = scale;
    std::vector<float> got(count * c.heads * c.latentDim, NAN);
    std::vector<uint16_t> gotBits(got.size(), 0xFFFF);
    if (c.bf16Out)
      args.out.bf16 = gotBits.data();
    else
      args.out.f32 = got.data();
    Status status = attention->run(args);
    ASSERT_TRUE(status.ok()) << status.error().message();
    if (c.bf16Out)
      got = fromBf16(gotBits);

    std::vector<float> want(got.size(), 0.0f), scores(kMaxContext);
    std::vector<float> ql = fromBf16(qLatent), qr = fromBf16(qRope);
    for (int64_t r = 0; r < count; ++r) {
      if (rows.lengths[r] == 0)
        continue;
      int32_t page = rows.slots[r];
      cpu::CachedRows latents{
          cache.values.data(), width, {&page, 1}, kMaxContext};
      for (int64_t h = 0; h < c.heads; ++h)
        cpu::attendLatentHead(ql.data() + (r * c.heads + h) * c.latentDim,
                              qr.data() + (r * c.heads + h) * c.ropeDim,
                              latents, rows.lengths[r], c.latentDim, c.ropeDim,
                              scale, scores.data(),
                              want.data() + (r * c.heads + h) * c.latentDim);
    }
    expectNear(got, want, 4e-5f, c.bf16Out);
  }
}

TEST_P(HostAttentionTest, ExponentialsMatchTheLibrary) {
  const TileKernels &tiles = tileKernels(GetParam());
  std::vector<float> x(1001);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = -100.0f + 0.1f * float(i);
  std::vector<float> e = x;
  float sum =
      tiles.expSum(e.data(), static_cast<int64_t>(e.size()), 0.5f, nullptr);
  double want = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    // The shift is subtracted in fp32, as the reference does.
    double exact = std::exp(double(x[i] - 0.5f));
    want += exact;
    // Below e^-87.3 the kernel gives ~1e-38 where the library is subnormal.
    EXPECT_NEAR(e[i], exact, 4e-7 * exact + 2e-38) << "x = " << x[i];
  }
  EXPECT_NEAR(sum, want, 1e-6 * want);
}

TEST_P(HostAttentionTest, RefusesWhatDoesNotFit) {
  ThreadPool pool(1);
  auto attention = DecodeAttention::create(pool, GetParam());
  ASSERT_TRUE(attention.ok());
  Cache k = makeCache(KvDtype::bf16, 1, 2, 16, 1);
  std::vector<uint16_t> q(4 * 16);
  std::vector<float> out(q.size());
  std::vector<int32_t> slots{0}, lengths{kMaxContext + 1};
  SoftmaxAttentionArgs args;
  args.q = q.data();
  PagedCache kv = paged(k, &k, KvDtype::bf16);
  args.cache = kv.cache;
  args.rows = {1, slots.data(), lengths.data()};
  args.heads = 4;
  args.kvHeads = 2;
  args.headDim = 16;
  args.out.f32 = out.data();
  auto message = [&] {
    Status status = attention->run(args);
    return status.ok() ? std::string("ok") : status.error().message();
  };
  EXPECT_NE(message().find("length 1201 (a slot holds 1200"), std::string::npos)
      << message();
  lengths[0] = 5;
  EXPECT_EQ(message(), "ok");
  lengths[0] = 100;
  kv.table[2] = -1;
  EXPECT_NE(message().find("slot 0 has no page for positions from 96"),
            std::string::npos)
      << message();
  lengths[0] = 96;
  EXPECT_EQ(message(), "ok");
  args.cache.dtype = KvDtype::fp8;
  EXPECT_NE(message().find("are 48 bytes, got 64"), std::string::npos)
      << message();
  args.cache.dtype = KvDtype::bf16;
  args.kvHeads = 3;
  EXPECT_NE(message().find("KV heads must divide heads"), std::string::npos);
  args.kvHeads = 2;
  std::vector<uint16_t> bf16Out(q.size());
  args.out.bf16 = bf16Out.data();
  EXPECT_NE(message().find("exactly one"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Isa, HostAttentionTest,
                         ::testing::Values(VectorIsa::avx2, VectorIsa::avx512,
                                           VectorIsa::avx512amx),
                         [](const auto &info) {
                           return std::string(vectorIsaName(info.param));
                         });

} // namespace
} // namespace moe::host
