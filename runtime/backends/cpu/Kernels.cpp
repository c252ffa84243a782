#include "runtime/backends/cpu/Kernels.h"

#include <algorithm>
#include <numbers>
#include <numeric>

namespace moe::cpu {

float dot(const float *a, const float *b, int64_t n) {
  // Eight independent lanes vectorise without reassociation (no fast-math),
  // then combine in a fixed tree.
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l)
      lane[l] += a[i + l] * b[i + l];
  float tail = 0;
  for (; i < n; ++i)
    tail += a[i] * b[i];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
         ((lane[4] + lane[5]) + (lane[6] + lane[7])) + tail;
}

void linear(ThreadPool &pool, const float *x, int64_t rows, int64_t in,
            const float *w, int64_t out, const float *bias, float *y) {
  // Tiles of rows × output columns keep a block of weight rows in cache
  // while the activation rows stream past it.
  constexpr int64_t rowTile = 16, colTile = 32;
  int64_t rowTiles = (rows + rowTile - 1) / rowTile;
  int64_t colTiles = (out + colTile - 1) / colTile;
  pool.parallelFor(rowTiles * colTiles, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      int64_t r0 = (t / colTiles) * rowTile, c0 = (t % colTiles) * colTile;
      int64_t r1 = std::min(rows, r0 + rowTile),
              c1 = std::min(out, c0 + colTile);
      for (int64_t c = c0; c < c1; ++c) {
        const float *wc = w + c * in;
        float b = bias ? bias[c] : 0.0f;
        for (int64_t r = r0; r < r1; ++r)
          y[r * out + c] = dot(x + r * in, wc, in) + b;
      }
    }
  });
}

void rmsNorm(const float *x, const float *w, int64_t n, double eps, float *y) {
  // The sum of squares in double stands in for torch's pairwise fp32 sum.
  double sum = 0;
  for (int64_t i = 0; i < n; ++i)
    sum += static_cast<double>(x[i]) * x[i];
  float variance = static_cast<float>(sum / static_cast<double>(n));
  float inverse = 1.0f / std::sqrt(variance + static_cast<float>(eps));
  for (int64_t i = 0; i < n; ++i)
    y[i] = w[i] * (x[i] * inverse);
}

//===----------------------------------------------------------------------===//
// Attention of one query head over cached tokens
//===----------------------------------------------------------------------===//

void softmaxWithSink(float *scores, int64_t n, const float *sink) {
  float max = sink ? *sink : scores[0];
  for (int64_t j = 0; j < n; ++j)
    max = std::max(max, scores[j]);
  float sum = 0;
  for (int64_t j = 0; j < n; ++j)
    sum += scores[j] = std::exp(scores[j] - max);
  if (sink)
    sum += std::exp(*sink - max);
  for (int64_t j = 0; j < n; ++j)
    scores[j] /= sum;
}

void attendHead(const float *q, const CachedRows &keys,
                const CachedRows &values, int64_t first, int64_t n,
                int64_t headDim, float scale, const float *sink, float *scores,
                float *out) {
  for (int64_t j = 0; j < n; ++j)
    scores[j] = dot(q, keys.at(first + j), headDim) * scale;
  softmaxWithSink(scores, n, sink);
  std::fill(out, out + headDim, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float *vj = values.at(first + j);
    for (int64_t d = 0; d < headDim; ++d)
      out[d] += scores[j] * vj[d];
  }
}

void attendLatentHead(const float *qLatent, const float *qRope,
                      const CachedRows &rows, int64_t n, int64_t latentDim,
                      int64_t ropeDim, float scale, float *scores,
                      float *mixed) {
  for (int64_t j = 0; j < n; ++j) {
    const float *row = rows.at(j);
    scores[j] =
        (dot(qLatent, row, latentDim) + dot(qRope, row + latentDim, ropeDim)) *
        scale;
  }
  softmaxWithSink(scores, n, nullptr);
  std::fill(mixed, mixed + latentDim, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    const float *row = rows.at(j);
    for (int64_t c = 0; c < latentDim; ++c)
      mixed[c] += scores[j] * row[c];
  }
}

//===----------------------------------------------------------------------===//
// RoPE
//===----------------------------------------------------------------------===//

RopeTable::RopeTable(const model::RopeParams &rope, int64_t maxPositions)
    : rope_(rope), half_(rope.rotaryDim / 2) {
  model::RopeTables tables = model::ropeTables(rope, maxPositions);
  cos_ = std::move(tables.cos);
  sin_ = std::move(tables.sin);
}

void RopeTable::apply(float *x, int64_t position) const {
  const float *c = cos_.data() + position * half_;
  const float *s = sin_.data() + position * half_;
  if (rope_.style == plan::RopeStyle::neox) {
    for (int64_t i = 0; i < half_; ++i) {
      float a = x[i], b = x[i + half_];
      x[i] = a * c[i] - b * s[i];
      x[i + half_] = b * c[i] + a * s[i];
    }
  } else {
    for (int64_t i = 0; i < half_; ++i) {
      float a = x[2 * i], b = x[2 * i + 1];
      x[2 * i] = a * c[i] - b * s[i];
      x[2 * i + 1] = b * c[i] + a * s[i];
    }
  }
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

void routeToken(const model::RouterSpec &router, const float *logits,
                const float *correctionBias, float *weights, int32_t *indices) {
  int64_t e = router.experts;
  std::vector<float> scores(e);
  if (router.scoring == plan::RouterScoring::softmax) {
    float max = *std::max_element(logits, logits + e);
    float sum = 0;
    for (int64_t i = 0; i < e; ++i)
      sum += scores[i] = std::exp(logits[i] - max);
    for (float &s : scores)
      s /= sum;
  } else {
    for (int64_t i = 0; i < e; ++i)
      scores[i] = sigmoid(logits[i]);
  }
  std::vector<float> choice(scores);
  if (correctionBias)
    for (int64_t i = 0; i < e; ++i)
      choice[i] += correctionBias[i];

  // Descending by value; ties keep the lower index first.
  auto ranking = [](const std::vector<float> &values, int64_t count) {
    std::vector<int32_t> order(values.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + count, order.end(),
                      [&](int32_t a, int32_t b) {
                        return values[a] > values[b] ||
                               (values[a] == values[b] && a < b);
                      });
    order.resize(count);
    return order;
  };

  if (router.selection != plan::RouterSelection::greedy && router.groups > 1) {
    int64_t size = e / router.groups;
    std::vector<float> groupScore(router.groups);
    for (int64_t g = 0; g < router.groups; ++g) {
      std::vector<float> members(choice.begin() + g * size,
                                 choice.begin() + (g + 1) * size);
      std::sort(members.begin(), members.end(), std::greater<float>());
      groupScore[g] = router.selection == plan::RouterSelection::noaux_tc
                          ? members[0] + (size > 1 ? members[1] : 0.0f)
                          : members[0];
    }
    std::vector<bool> kept(router.groups, false);
    for (int32_t g : ranking(groupScore, router.keptGroups))
      kept[g] = true;
    // HF masks the other groups' choice scores to 0, not to −inf.
    for (int64_t i = 0; i < e; ++i)
      if (!kept[i / size])
        choice[i] = 0.0f;
  }

  std::vector<int32_t> top = ranking(choice, router.topK);
  float sum = 0;
  for (int64_t j = 0; j < router.topK; ++j) {
    indices[j] = top[j];
    weights[j] = scores[top[j]];
    sum += weights[j];
  }
  // DeepSeek-V3 adds 1e-20; for the softmax routers it vanishes in fp32.
  if (router.normalize)
    for (int64_t j = 0; j < router.topK; ++j)
      weights[j] /= sum + 1e-20f;
  float scaling = static_cast<float>(router.scaling);
  for (int64_t j = 0; j < router.topK; ++j)
    weights[j] *= scaling;
}

//===----------------------------------------------------------------------===//
// Lightning attention
//===----------------------------------------------------------------------===//

void lightningRecurrent(const float *q, const float *k, const float *v,
                        int64_t stride, int64_t n, int64_t d, float decay,
                        float *state, float *out, int64_t outStride) {
  float ratio = std::exp(-decay);
  for (int64_t t = 0; t < n; ++t) {
    const float *qt = q + t * stride, *kt = k + t * stride,
                *vt = v + t * stride;
    for (int64_t a = 0; a < d; ++a)
      for (int64_t b = 0; b < d; ++b)
        state[a * d + b] = ratio * state[a * d + b] + kt[a] * vt[b];
    float *ot = out + t * outStride;
    std::fill(ot, ot + d, 0.0f);
    for (int64_t a = 0; a < d; ++a)
      for (int64_t b = 0; b < d; ++b)
        ot[b] += qt[a] * state[a * d + b];
  }
}

void lightningBlocks(const float *q, const float *k, const float *v,
                     int64_t stride, int64_t n, int64_t d, float decay,
                     int64_t blockSize, float *state, float *out,
                     int64_t outStride) {
  std::vector<float> decays(blockSize + 1); // e^{−λ m}, m = 0..B
  for (int64_t m = 0; m <= blockSize; ++m)
    decays[m] = std::exp(-decay * static_cast<float>(m));
  std::vector<float> update(d * d);
  for (int64_t start = 0; start < n; start += blockSize) {
    int64_t b = std::min(blockSize, n - start);
    for (int64_t i = 0; i < b; ++i) {
      const float *qi = q + (start + i) * stride;
      float *oi = out + (start + i) * outStride;
      // Inter-block: the incoming state seen through e^{−λ(i+1)}.
      std::fill(oi, oi + d, 0.0f);
      for (int64_t a = 0; a < d; ++a) {
        float qa = qi[a] * decays[i + 1];
        for (int64_t c = 0; c < d; ++c)
          oi[c] += qa * state[a * d + c];
      }
      // Intra-block: causal (q_i·k_j) e^{−λ(i−j)} v_j.
      for (int64_t j = 0; j <= i; ++j) {
        float w = dot(qi, k + (start + j) * stride, d) * decays[i - j];
        const float *vj = v + (start + j) * stride;
        for (int64_t c = 0; c < d; ++c)
          oi[c] += w * vj[c];
      }
    }
    std::fill(update.begin(), update.end(), 0.0f);
    for (int64_t j = 0; j < b; ++j) {
      const float *kj = k + (start + j) * stride,
                  *vj = v + (start + j) * stride;
      for (int64_t a = 0; a < d; ++a) {
        float ka = kj[a] * decays[b - 1 - j];
        for (int64_t c = 0; c < d; ++c)
          update[a * d + c] += ka * vj[c];
      }
    }
    for (int64_t a = 0; a < d * d; ++a)
      state[a] = state[a] * decays[b] + update[a];
  }
}

} // namespace moe::cpu
