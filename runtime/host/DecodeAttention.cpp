#include "runtime/host/DecodeAttention.h"

#include "runtime/weights/HalfFloat.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

namespace moe::host {

struct DecodeAttention::Problem {
  // bf16 [rows, heads, keyWidth − qRopeWidth]; MLA's q_pe is the rest of
  // the key width, [rows, heads, qRopeWidth].
  const uint16_t *q;
  const uint16_t *qRope = nullptr;
  int64_t qRopeWidth = 0;
  HostKvCache cache;
  DecodeRows rows;
  int64_t groups, groupHeads; // heads = groups · groupHeads
  int64_t keyWidth;           // elements a group's key vector has
  int64_t valueWidth;         // ... and its value vector
  bool valuesInKeys;          // MLA: values are the keys' first elements
  int64_t fp8Scales;          // byte offset of an fp8 row's scales
  int64_t fp8Group;           // elements per fp8 scale
  const float *sinks;
  int64_t window;
  float scale;
  AttentionOutput out;

  int64_t heads() const { return groups * groupHeads; }
  // Row r attends the last span(r) of its lengths[r] positions.
  int64_t span(int64_t r) const {
    int64_t length = rows.lengths[r];
    return window > 0 ? std::min(length, window) : length;
  }
};

namespace {

constexpr int64_t kTile = 32;            // tokens scored and mixed at once
constexpr int64_t kPrefetch = 2 * kTile; // tokens read ahead of the tile
constexpr int64_t kMinChunk = 256;       // tokens of a chunk, at least
constexpr int64_t kChunksPerThread = 4;  // balance uneven contexts

struct Chunk {
  int64_t row, first, count; // positions [first, first + count) of the row
};

Status checkOutput(const AttentionOutput &out) {
  if ((out.f32 == nullptr) == (out.bf16 == nullptr))
    return makeError("host attention: set exactly one of out.f32, out.bf16");
  return Status::success();
}

Status checkRows(const DecodeRows &rows, const HostKvCache &cache) {
  if (rows.count > 0 && (!rows.slots || !rows.lengths))
    return makeError("host attention: rows need slots and lengths");
  if (!cache.k || cache.rowBytes <= 0 || cache.pageTokens <= 0 ||
      !cache.pages || cache.pagesPerSlot <= 0)
    return makeError("host attention: the cache needs k, row bytes and a "
                     "table of pages");
  int64_t capacity = cache.pagesPerSlot * cache.pageTokens;
  for (int64_t r = 0; r < rows.count; ++r) {
    int32_t slot = rows.slots[r], length = rows.lengths[r];
    if (slot < 0 || length < 0 || length > capacity)
      return makeError("host attention: row {}: slot {} length {} (a slot "
                       "holds {} positions)",
                       r, slot, length, capacity);
    const int32_t *table = cache.pages + slot * cache.pagesPerSlot;
    for (int64_t p = 0; p * cache.pageTokens < length; ++p)
      if (table[p] < 0)
        return makeError("host attention: row {}: slot {} has no page for "
                         "positions from {}",
                         r, slot, p * cache.pageTokens);
  }
  return Status::success();
}

} // namespace

std::vector<int32_t> consecutivePages(int64_t slots, int64_t pagesPerSlot) {
  std::vector<int32_t> table(size_t(slots * pagesPerSlot));
  std::iota(table.begin(), table.end(), 0);
  return table;
}

Result<DecodeAttention> DecodeAttention::create(ThreadPool &pool,
                                                VectorIsa isa) {
  if (!supports(cpuFeatures(), isa))
    return makeError("host attention: this CPU cannot run {}",
                     vectorIsaName(isa));
  return DecodeAttention(pool, isa, tileKernels(isa));
}

Result<DecodeAttention> DecodeAttention::create(ThreadPool &pool) {
  std::optional<VectorIsa> isa = bestVectorIsa();
  if (!isa)
    return makeError("host attention: needs AVX2 with FMA and F16C");
  return create(pool, *isa);
}

Status DecodeAttention::run(const SoftmaxAttentionArgs &a) {
  if (a.heads <= 0 || a.kvHeads <= 0 || a.heads % a.kvHeads != 0 ||
      a.headDim <= 0 || a.headDim % 8 != 0)
    return makeError("host attention: heads {} over {} KV heads of {} "
                     "(KV heads must divide heads, head_dim a multiple of 8)",
                     a.heads, a.kvHeads, a.headDim);
  if (a.window < 0)
    return makeError("host attention: window {} is negative", a.window);
  int64_t rowBytes = model::kvRowBytes(a.cache.dtype, a.kvHeads, a.headDim);
  if (a.cache.rowBytes != rowBytes || !a.cache.v)
    return makeError("host attention: K/V rows of {} KV heads of {} in {} "
                     "are {} bytes, got {}{}",
                     a.kvHeads, a.headDim, model::kvDtypeName(a.cache.dtype),
                     rowBytes, a.cache.rowBytes, a.cache.v ? "" : ", no V");
  MOE_RETURN_IF_ERROR(checkOutput(a.out));
  MOE_RETURN_IF_ERROR(checkRows(a.rows, a.cache));
  Problem p{.q = a.q,
            .cache = a.cache,
            .rows = a.rows,
            .groups = a.kvHeads,
            .groupHeads = a.heads / a.kvHeads,
            .keyWidth = a.headDim,
            .valueWidth = a.headDim,
            .valuesInKeys = false,
            .fp8Scales = model::fp8ScalesOffset(a.kvHeads, a.headDim),
            .fp8Group = a.headDim,
            .sinks = a.sinks,
            .window = a.window,
            .scale = a.scale,
            .out = a.out};
  attend(p);
  return Status::success();
}

Status DecodeAttention::run(const LatentAttentionArgs &a) {
  if (a.heads <= 0 || a.latentDim <= 0 || a.latentDim % 8 != 0 ||
      a.ropeDim <= 0 || a.ropeDim % 8 != 0)
    return makeError("host attention: MLA of {} heads, latent {}, rope {} "
                     "(dims must be multiples of 8)",
                     a.heads, a.latentDim, a.ropeDim);
  if (a.cache.dtype == model::KvDtype::fp8 && a.latentDim % a.ropeDim != 0)
    return makeError("host attention: an fp8 latent of {} is not in groups "
                     "of rope_dim {}",
                     a.latentDim, a.ropeDim);
  int64_t rowBytes =
      model::latentRowBytes(a.cache.dtype, a.latentDim, a.ropeDim);
  if (a.cache.rowBytes != rowBytes)
    return makeError("host attention: latent rows of {} + {} in {} are {} "
                     "bytes, got {}",
                     a.latentDim, a.ropeDim, model::kvDtypeName(a.cache.dtype),
                     rowBytes, a.cache.rowBytes);
  MOE_RETURN_IF_ERROR(checkOutput(a.out));
  MOE_RETURN_IF_ERROR(checkRows(a.rows, a.cache));
  int64_t width = a.latentDim + a.ropeDim;
  Problem p{.q = a.qLatent,
            .qRope = a.qRope,
            .qRopeWidth = a.ropeDim,
            .cache = a.cache,
            .rows = a.rows,
            .groups = 1,
            .groupHeads = a.heads,
            .keyWidth = width,
            .valueWidth = a.latentDim,
            .valuesInKeys = true,
            .fp8Scales = model::fp8ScalesOffset(width / a.ropeDim, a.ropeDim),
            .fp8Group = a.ropeDim,
            .sinks = nullptr,
            .window = 0,
            .scale = a.scale,
            .out = a.out};
  attend(p);
  return Status::success();
}

void DecodeAttention::attend(const Problem &p) {
  const TileKernels &tiles = *tiles_;
  const int64_t heads = p.heads(), kw = p.keyWidth, vw = p.valueWidth;
  const int64_t g = p.groupHeads;
  const int64_t keyRow = p.groups * kw;
  const bool fp8 = p.cache.dtype == model::KvDtype::fp8;
  // Kernels read bf16 rows and fp8 codes directly; a K or V vector's one fp8
  // scale multiplies its token's score or weight. MLA's fp8 latent, scaled
  // per group within the vector, is widened to fp32 per tile first.
  const bool widened = fp8 && p.valuesInKeys;
  const bool scaledRows = fp8 && !p.valuesInKeys;
  // AMX scores whole tiles of 16 tokens for groups of 16 heads over bf16
  // keys; other tiles take fp32 products.
  const bool amx = tiles.scoreAmx && !fp8 && g % 16 == 0 && kw % 32 == 0;

  int64_t total = 0;
  for (int64_t r = 0; r < p.rows.count; ++r)
    total += p.span(r);
  int64_t perChunk = (total + kChunksPerThread * pool_->size() - 1) /
                     (kChunksPerThread * pool_->size());
  perChunk = std::max(kMinChunk, (perChunk + kTile - 1) / kTile * kTile);
  std::vector<Chunk> chunks;
  std::vector<int64_t> firstChunk(p.rows.count + 1, 0);
  for (int64_t r = 0; r < p.rows.count; ++r) {
    int64_t length = p.rows.lengths[r], span = p.span(r);
    for (int64_t at = length - span; at < length; at += perChunk)
      chunks.push_back({r, at, std::min(perChunk, length - at)});
    firstChunk[r + 1] = static_cast<int64_t>(chunks.size());
  }
  // Per chunk: each head's running max, sum and weighted values.
  const int64_t partial = heads * (2 + vw);
  partials_.resize(chunks.size() * partial);

  pool_->parallelFor(static_cast<int64_t>(chunks.size()), [&](int64_t begin,
                                                              int64_t end) {
    std::vector<uint16_t> qBits(heads * kw);
    std::vector<float> q(heads * kw), widenedRows(widened ? kTile * keyRow : 0),
        scores(heads * kTile);
    for (int64_t c = begin; c < end; ++c) {
      const Chunk &chunk = chunks[c];
      float *max = partials_.data() + c * partial, *sum = max + heads,
            *acc = sum + heads;
      std::fill(max, max + heads, -std::numeric_limits<float>::infinity());
      std::fill(sum, sum + heads + heads * vw, 0.0f);
      // The row's queries [heads][kw]: bf16 as given for AMX, and fp32
      // times the softmax scale.
      int64_t qWidth = kw - p.qRopeWidth;
      for (int64_t h = 0; h < heads; ++h) {
        uint16_t *to = qBits.data() + h * kw;
        std::copy_n(p.q + (chunk.row * heads + h) * qWidth, qWidth, to);
        if (p.qRope)
          std::copy_n(p.qRope + (chunk.row * heads + h) * p.qRopeWidth,
                      p.qRopeWidth, to + qWidth);
        for (int64_t e = 0; e < kw; ++e)
          q[h * kw + e] = bf16ToFloat(to[e]) * p.scale;
      }
      int64_t slot = p.rows.slots[chunk.row];
      const RowFormat format = fp8 ? RowFormat::fp8Codes : RowFormat::bf16;
      const int64_t elementBytes = fp8 ? 1 : 2, rowBytes = p.cache.rowBytes;
      const int64_t pageTokens = p.cache.pageTokens;
      // A row's fp8 scale of a group (its K or V vector), when it has one.
      auto scaleOf = [&](const uint8_t *row, int64_t group) {
        float scale;
        std::memcpy(&scale, row + p.fp8Scales + group * 4, sizeof scale);
        return scale;
      };
      int64_t end = chunk.first + chunk.count;
      // Tiles end where pages do: a tile's rows are consecutive.
      for (int64_t t = chunk.first, count; t < end; t += count) {
        count = std::min({kTile, end - t, pageTokens - t % pageTokens});
        const uint8_t *kTile0 = p.cache.row(p.cache.k, slot, t);
        const uint8_t *vTile0 =
            p.cache.v ? p.cache.row(p.cache.v, slot, t) : nullptr;
        // Rows kPrefetch tokens ahead start coming in while this tile
        // computes.
        for (int64_t a = t + kPrefetch, stop = std::min(a + count, end);
             a < stop;) {
          int64_t run = std::min(stop - a, pageTokens - a % pageTokens);
          const uint8_t *kAhead = p.cache.row(p.cache.k, slot, a);
          const uint8_t *vAhead =
              p.cache.v ? p.cache.row(p.cache.v, slot, a) : nullptr;
          for (int64_t b = 0; b < run * rowBytes; b += 64) {
            __builtin_prefetch(kAhead + b);
            if (vAhead)
              __builtin_prefetch(vAhead + b);
          }
          a += run;
        }
        if (widened)
          tiles.widenFp8(kTile0, kTile0 + p.fp8Scales, rowBytes, count, keyRow,
                         p.fp8Group, widenedRows.data());
        for (int64_t group = 0; group < p.groups; ++group) {
          int64_t h0 = group * g;
          TileRows keyRows{kTile0 + group * kw * elementBytes, rowBytes,
                           format};
          TileRows valueRows =
              p.valuesInKeys ? TileRows{kTile0, rowBytes, format}
                             : TileRows{vTile0 + group * vw * elementBytes,
                                        rowBytes, format};
          if (widened)
            keyRows = valueRows = {
                reinterpret_cast<const uint8_t *>(widenedRows.data()),
                keyRow * int64_t(sizeof(float)), RowFormat::fp32};
          float *s0 = scores.data() + h0 * kTile;
          const bool amxTile = amx && count % 16 == 0;
          if (amxTile)
            tiles.scoreAmx(qBits.data() + h0 * kw, g, keyRows, count, kw, s0,
                           kTile);
          else
            tiles.score(q.data() + h0 * kw, g, keyRows, count, kw, s0, kTile);
          // A token's fp8 key scale joins its scores, its value scale its
          // weights (after the sums).
          float keyScales[kTile], valueScales[kTile];
          if (scaledRows)
            for (int64_t j = 0; j < count; ++j) {
              keyScales[j] = scaleOf(kTile0 + j * rowBytes, group);
              valueScales[j] = scaleOf(vTile0 + j * rowBytes, group);
            }
          for (int64_t h = h0; h < h0 + g; ++h) {
            float *s = scores.data() + h * kTile;
            float tileMax = tiles.scaleMax(s, count, amxTile ? p.scale : 1.0f,
                                           scaledRows ? keyScales : nullptr);
            if (tileMax > max[h]) {
              // exp(−inf) = 0: a first tile starts from nothing.
              float factor = std::exp(max[h] - tileMax);
              sum[h] *= factor;
              for (float *a = acc + h * vw, *e = a + vw; a < e; ++a)
                *a *= factor;
              max[h] = tileMax;
            }
            sum[h] += tiles.expSum(s, count, max[h],
                                   scaledRows ? valueScales : nullptr);
          }
          tiles.mix(s0, kTile, g, valueRows, count, vw, acc + h0 * vw);
        }
      }
    }
  });

  pool_->parallelFor(p.rows.count, [&](int64_t begin, int64_t end) {
    std::vector<float> merged(vw);
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        std::fill(merged.begin(), merged.end(), 0.0f);
        if (firstChunk[r] < firstChunk[r + 1]) {
          float top =
              p.sinks ? p.sinks[h] : -std::numeric_limits<float>::infinity();
          for (int64_t c = firstChunk[r]; c < firstChunk[r + 1]; ++c)
            top = std::max(top, partials_[c * partial + h]);
          float total = p.sinks ? std::exp(p.sinks[h] - top) : 0.0f;
          for (int64_t c = firstChunk[r]; c < firstChunk[r + 1]; ++c) {
            const float *part = partials_.data() + c * partial;
            float weight = std::exp(part[h] - top);
            total += part[heads + h] * weight;
            const float *acc = part + 2 * heads + h * vw;
            for (int64_t e = 0; e < vw; ++e)
              merged[e] += acc[e] * weight;
          }
          for (float &m : merged)
            m /= total;
        }
        int64_t at = (r * heads + h) * vw;
        if (p.out.f32)
          std::copy(merged.begin(), merged.end(), p.out.f32 + at);
        else
          for (int64_t e = 0; e < vw; ++e)
            p.out.bf16[at + e] = floatToBf16(merged[e]);
      }
    }
  });
}

} // namespace moe::host
