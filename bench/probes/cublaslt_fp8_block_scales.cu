// cuBLASLt's FP8 (E4M3) GEMMs with DeepSeek-V3's scales on this GPU: a
// weight W [n, k] with one fp32 scale per 128 x 128 block
// (CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F), activations x [m, k] with
// one per 128 inputs of a token (VEC128_32F), y [m, n] = x W^T in bf16.
// Part 0 asks the heuristic which row counts it runs. Part 1 tries both
// operand orders and several arrangements of each scale
// tensor against a double-precision reference, on blocks and token groups
// scaled by 2^-4 .. 2^4 so that a misread scale shows; part 2 times the
// routed experts' shapes against cuBLASLt's bf16 GEMM (unit scales).
// Results: bench/results/2026-12-07-fp8-latent-cache.json.
//
//   nvcc -O2 -std=c++17 -arch=sm_90a -o cublaslt_fp8_block_scales \
//     bench/probes/cublaslt_fp8_block_scales.cu -lcublasLt -cudart static
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#define CK(x)                                                                  \
  do {                                                                         \
    cudaError_t e = (x);                                                       \
    if (e != cudaSuccess) {                                                    \
      std::printf("CUDA %s at %d: %s\n", #x, __LINE__, cudaGetErrorString(e)); \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)
#define LT(x)                                                                  \
  do {                                                                         \
    cublasStatus_t s = (x);                                                    \
    if (s != CUBLAS_STATUS_SUCCESS) {                                          \
      std::printf("cuBLASLt %s at %d: %d\n", #x, __LINE__, int(s));            \
      return -1.0;                                                             \
    }                                                                          \
  } while (0)

static cublasLtHandle_t handle;
static void *workspace;
static const size_t kWs = 64 << 20;

static int cdiv(int a, int b) { return (a + b - 1) / b; }

struct Fp8Matrix {
  std::vector<uint8_t> codes;
  std::vector<float> scales; // block grid row-major
  std::vector<float> values; // what it stands for
};

// Rows x cols, blocks of br x bc.
static Fp8Matrix quantize(const std::vector<float> &v, int rows, int cols,
                          int br, int bc) {
  Fp8Matrix q;
  q.codes.resize(size_t(rows) * cols);
  q.values.resize(size_t(rows) * cols);
  int gr = cdiv(rows, br), gc = cdiv(cols, bc);
  q.scales.resize(size_t(gr) * gc);
  for (int a = 0; a < gr; ++a)
    for (int b = 0; b < gc; ++b) {
      float amax = 0;
      for (int r = a * br; r < std::min(rows, (a + 1) * br); ++r)
        for (int c = b * bc; c < std::min(cols, (b + 1) * bc); ++c)
          amax = std::max(amax, std::fabs(v[size_t(r) * cols + c]));
      float s = amax / 448.0f;
      q.scales[size_t(a) * gc + b] = s;
      for (int r = a * br; r < std::min(rows, (a + 1) * br); ++r)
        for (int c = b * bc; c < std::min(cols, (b + 1) * bc); ++c) {
          size_t i = size_t(r) * cols + c;
          __nv_fp8_e4m3 code(s > 0 ? v[i] / s : 0.0f);
          q.codes[i] = code.__x;
          q.values[i] = float(code) * s;
        }
    }
  return q;
}

template <typename T> T *up(const std::vector<T> &h) {
  T *d;
  CK(cudaMalloc(&d, h.size() * sizeof(T)));
  CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

static std::vector<float> transposeGrid(const std::vector<float> &g, int rows,
                                        int cols) {
  std::vector<float> t(g.size());
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c)
      t[size_t(c) * rows + r] = g[size_t(r) * cols + c];
  return t;
}

// D col-major [p x q] (ld p) = A B^T for A [p, k] and B [q, k] row-major,
// operands of `type`, with the best of the heuristic's candidates for
// `desc`; returns seconds per call over `iters` calls (0: one call of the
// first candidate, for its values), < 0 when refused. `algos`: how many
// candidates the heuristic offered.
static double bestMatmul(cublasLtMatmulDesc_t desc, cudaDataType_t type, int q,
                         int p, int k, const void *A, const void *B,
                         __nv_bfloat16 *D, int iters, int *algos) {
  cublasOperation_t t = CUBLAS_OP_T, nn = CUBLAS_OP_N;
  LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t,
                                    sizeof t));
  LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &nn,
                                    sizeof nn));
  cublasLtMatrixLayout_t a, b, c;
  LT(cublasLtMatrixLayoutCreate(&a, type, k, p, k));
  LT(cublasLtMatrixLayoutCreate(&b, type, k, q, k));
  LT(cublasLtMatrixLayoutCreate(&c, CUDA_R_16BF, p, q, p));
  cublasLtMatmulPreference_t pref;
  LT(cublasLtMatmulPreferenceCreate(&pref));
  LT(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWs, sizeof kWs));
  cublasLtMatmulHeuristicResult_t res[8] = {};
  int count = 0;
  LT(cublasLtMatmulAlgoGetHeuristic(handle, desc, a, b, c, c, pref, 8, res,
                                    &count));
  if (algos)
    *algos = count;
  if (count == 0)
    return -2.0;
  float alpha = 1, beta = 0;
  double best = 1e30;
  for (int i = 0; i < count; ++i) {
    if (res[i].state != CUBLAS_STATUS_SUCCESS)
      continue;
    LT(cublasLtMatmul(handle, desc, &alpha, A, a, B, b, &beta, D, c, D, c,
                      &res[i].algo, workspace, kWs, 0));
    if (iters == 0)
      return 0.0;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaEventRecord(e0));
    for (int it = 0; it < iters; ++it)
      LT(cublasLtMatmul(handle, desc, &alpha, A, a, B, b, &beta, D, c, D, c,
                        &res[i].algo, workspace, kWs, 0));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min(best, ms / 1e3 / iters);
  }
  return best;
}

// The fp8 product of A and B (bestMatmul's shapes) with scale tensors aS
// and bS of modes am and bm.
static double fp8Gemm(
    int q, int p, int k, const uint8_t *A, const float *aS, const uint8_t *B,
    const float *bS, __nv_bfloat16 *D, int iters, int *algos,
    cublasLtMatmulMatrixScale_t am =
        CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
    cublasLtMatmulMatrixScale_t bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F) {
  cublasLtMatmulDesc_t desc;
  LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
                                    &am, sizeof am));
  LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
                                    &bm, sizeof bm));
  LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                    &aS, sizeof aS));
  LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                    &bS, sizeof bS));
  return bestMatmul(desc, CUDA_R_8F_E4M3, q, p, k, A, B, D, iters, algos);
}

// y [m, n] = x W^T in bf16 (the D of W [n, k] and x [m, k]).
static double bf16Gemm(int m, int n, int k, const __nv_bfloat16 *w,
                       const __nv_bfloat16 *x, __nv_bfloat16 *y, int iters) {
  cublasLtMatmulDesc_t desc;
  LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  return bestMatmul(desc, CUDA_R_16BF, m, n, k, w, x, y, iters, nullptr);
}

// How many algorithms the heuristic offers for the block-scaled FP8 GEMM
// (A = W with BLK128x128, B = x with VEC128) of m rows, with every operand's
// alignment stated as `alignment` bytes (0: not stated, cuBLASLt's default).
static int fp8Candidates(int m, int n, int k, uint32_t alignment) {
  cublasLtMatmulDesc_t desc;
  if (cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F))
    return -1;
  cublasOperation_t t = CUBLAS_OP_T, nn = CUBLAS_OP_N;
  cublasLtMatmulMatrixScale_t am = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
                              bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  const float *scales = static_cast<const float *>(workspace);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &nn,
                                 sizeof nn);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am,
                                 sizeof am);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm,
                                 sizeof bm);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                 &scales, sizeof scales);
  cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                 &scales, sizeof scales);
  cublasLtMatrixLayout_t a, b, c;
  cublasLtMatrixLayoutCreate(&a, CUDA_R_8F_E4M3, k, n, k);
  cublasLtMatrixLayoutCreate(&b, CUDA_R_8F_E4M3, k, m, k);
  cublasLtMatrixLayoutCreate(&c, CUDA_R_16BF, n, m, n);
  cublasLtMatmulPreference_t pref;
  cublasLtMatmulPreferenceCreate(&pref);
  cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWs, sizeof kWs);
  if (alignment)
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      cublasLtMatmulPreferenceSetAttribute(pref, attr, &alignment,
                                           sizeof alignment);
  cublasLtMatmulHeuristicResult_t res[8] = {};
  int count = 0;
  cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle, desc, a, b, c, c, pref, 8, res, &count);
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(c);
  cublasLtMatrixLayoutDestroy(b);
  cublasLtMatrixLayoutDestroy(a);
  cublasLtMatmulDescDestroy(desc);
  return status == CUBLAS_STATUS_SUCCESS ? count : -int(status);
}

int main() {
  LT(cublasLtCreate(&handle));
  CK(cudaMalloc(&workspace, kWs));
  std::printf("cuBLASLt version %zu\n", cublasLtGetVersion());

  // 0. Which row counts and stated alignments the heuristic takes.
  for (int m : {1, 2, 3, 4, 5, 8, 12, 16, 37, 40, 200, 630, 632})
    for (uint32_t alignment : {0u, 16u, 256u})
      std::printf("m %4d n 384 k 1024, alignment %3u: %d candidates\n", m,
                  alignment, fp8Candidates(m, 384, 1024, alignment));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 1);

  // 1. Which roles and scale layouts, at k 640 (5 scale columns) and 1024
  // (8): W's blocks scaled by powers of two from 2^-4 to 2^4, x's tokens and
  // groups too, so that a misread scale shows. W's grid is tried row-major,
  // row-major with rows padded to a multiple of 4 scales (PyTorch's
  // blockwise _scaled_mm asks for that padding), and transposed.
  for (int k : {640, 1024}) {
    const int m = 200, n = 384;
    std::uniform_int_distribution<int> e(-4, 4);
    std::vector<float> wv(size_t(n) * k), xv(size_t(m) * k);
    std::vector<float> blockScale(size_t(n / 128) * (k / 128)),
        groupScale(size_t(m) * (k / 128));
    for (auto &v : blockScale)
      v = std::ldexp(1.0f, e(rng));
    for (auto &v : groupScale)
      v = std::ldexp(1.0f, e(rng));
    for (int r = 0; r < n; ++r)
      for (int c = 0; c < k; ++c)
        wv[size_t(r) * k + c] =
            nd(rng) * 0.05f * blockScale[(r / 128) * (k / 128) + c / 128];
    for (int r = 0; r < m; ++r)
      for (int c = 0; c < k; ++c)
        xv[size_t(r) * k + c] = nd(rng) * groupScale[r * (k / 128) + c / 128];
    Fp8Matrix W = quantize(wv, n, k, 128, 128), X = quantize(xv, m, k, 1, 128);
    std::vector<double> ref(size_t(m) * n); // y[i][j]
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double acc = 0;
        for (int c = 0; c < k; ++c)
          acc +=
              double(X.values[size_t(i) * k + c]) * W.values[size_t(j) * k + c];
        ref[size_t(i) * n + j] = acc;
      }
    uint8_t *dw = up(W.codes), *dx = up(X.codes);
    __nv_bfloat16 *dy;
    CK(cudaMalloc(&dy, size_t(m) * n * 2));
    int gn = n / 128, gk = k / 128, gkPadded = cdiv(gk, 4) * 4;
    std::vector<float> wPadded(size_t(gn) * gkPadded, 0.0f);
    for (int r = 0; r < gn; ++r)
      std::copy_n(W.scales.begin() + size_t(r) * gk, gk,
                  wPadded.begin() + size_t(r) * gkPadded);
    const char *wNames[] = {"[n/128][k/128]", "[n/128][pad4(k/128)]",
                            "[k/128][n/128]"};
    for (int role = 0; role < 2; ++role)
      for (int wt = 0; wt < 3; ++wt)
        for (int xt = 0; xt < 2; ++xt) {
          std::vector<float> wsv = wt == 0   ? W.scales
                                   : wt == 1 ? wPadded
                                             : transposeGrid(W.scales, gn, gk);
          std::vector<float> xsv =
              xt ? transposeGrid(X.scales, m, gk) : X.scales;
          float *dws = up(wsv), *dxs = up(xsv);
          CK(cudaMemset(dy, 0, size_t(m) * n * 2));
          int algos = 0;
          // role 0: A = W (BLK128x128), B = x (VEC128): D [n x m] col-major
          // is y row-major. role 1: A = x (VEC128), B = W: D [m x n]
          // col-major is y^T row-major.
          double r = role == 0
                         ? fp8Gemm(m, n, k, dw, dws, dx, dxs, dy, 0, &algos)
                         : fp8Gemm(n, m, k, dx, dxs, dw, dws, dy, 0, &algos,
                                   CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
                                   CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F);
          CK(cudaDeviceSynchronize());
          std::vector<__nv_bfloat16> got(size_t(m) * n);
          CK(cudaMemcpy(got.data(), dy, got.size() * 2,
                        cudaMemcpyDeviceToHost));
          double num = 0, den = 0;
          for (int i = 0; i < m; ++i)
            for (int j = 0; j < n; ++j) {
              float g = __bfloat162float(role == 0 ? got[size_t(i) * n + j]
                                                   : got[size_t(j) * m + i]);
              double d = double(g) - ref[size_t(i) * n + j];
              num += d * d;
              den += ref[size_t(i) * n + j] * ref[size_t(i) * n + j];
            }
          std::printf("k %d: A = %s: W scales %s, x scales %s: status %.0f "
                      "algos %d rel-L2 %.3e\n",
                      k,
                      role ? "x (VEC128), B = W (BLK128x128)"
                           : "W (BLK128x128), B = x (VEC128)",
                      wNames[wt], xt ? "[k/128][m]" : "[m][k/128]", r, algos,
                      std::sqrt(num / den));
          cudaFree(dws);
          cudaFree(dxs);
        }
    cudaFree(dw);
    cudaFree(dx);
    cudaFree(dy);
  }

  // 2. Rates at expert shapes (gate|up fused, and down), several m.
  struct Shape {
    const char *name;
    int n, k;
  } shapes[] = {
      {"mixtral gate|up", 28672, 4096},  {"mixtral down", 4096, 14336},
      {"qwen3 gate|up", 1536, 2048},     {"qwen3 down", 2048, 768},
      {"dsv2-lite gate|up", 2816, 2048}, {"dsv2-lite down", 2048, 1408}};
  for (const Shape &s : shapes)
    for (int m : {512, 4096}) {
      size_t wn = size_t(s.n) * s.k, xn = size_t(m) * s.k;
      uint8_t *w8, *x8;
      float *ws, *xs;
      __nv_bfloat16 *wb, *xb, *y;
      CK(cudaMalloc(&w8, wn));
      CK(cudaMalloc(&x8, xn));
      CK(cudaMalloc(&wb, wn * 2));
      CK(cudaMalloc(&xb, xn * 2));
      CK(cudaMalloc(&y, size_t(m) * s.n * 2));
      CK(cudaMemset(w8, 0x38, wn));
      CK(cudaMemset(x8, 0x38, xn));
      CK(cudaMemset(wb, 0x3c, wn * 2));
      CK(cudaMemset(xb, 0x3c, xn * 2));
      std::vector<float> ones(size_t(cdiv(s.n, 128)) * cdiv(s.k, 128), 1.0f),
          xones(size_t(m) * cdiv(s.k, 128), 1.0f);
      ws = up(ones);
      xs = up(xones);
      int iters = std::max(3, int(2e11 / (2.0 * m * s.n * s.k)));
      iters = std::min(iters, 200);
      double tf = fp8Gemm(m, s.n, s.k, w8, ws, x8, xs, y, iters, nullptr);
      double tb = bf16Gemm(m, s.n, s.k, wb, xb, y, iters);
      double flops = 2.0 * m * s.n * s.k;
      std::printf("%-18s m %5d n %5d k %5d: fp8 %8.1f us %6.0f TFLOP/s | bf16 "
                  "%8.1f us %6.0f TFLOP/s | x%.2f\n",
                  s.name, m, s.n, s.k, tf * 1e6, flops / tf / 1e12, tb * 1e6,
                  flops / tb / 1e12, tb / tf);
      cudaFree(w8);
      cudaFree(x8);
      cudaFree(wb);
      cudaFree(xb);
      cudaFree(y);
      cudaFree(ws);
      cudaFree(xs);
    }
  return 0;
}
