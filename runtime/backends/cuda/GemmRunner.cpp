// Layout: cuBLASLt is column-major, so the runner computes the transpose,
//   yᵀ[n, m] = W[n, k] · xᵀ[k, m]:
// A = W, stored k×n with ld k and used transposed; B = xᵀ, stored k×m with
// ld k; C = D = yᵀ, stored n×m with ld ldy. The bias epilogue adds bias[i]
// to row i of D, i.e. to output feature i of y. With fp8 operands, A's
// scales are BLK128x128_32F and B's VEC128_32F: the layouts
// Fp8GemmOperands describes are the ones cuBLASLt 13 reads for this
// operand order (bench/probes/cublaslt_fp8_block_scales.cu).
#include "runtime/backends/cuda/GemmRunner.h"

#include <algorithm>
#include <bit>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include <cublasLt.h>

#include "runtime/backends/cuda/CudaCheck.h"
#include "runtime/backends/cuda/Stream.h"

namespace moe::cuda {
namespace {

// Identifies a cached plan (m exact) or a bucket's choice (m = bucket).
struct Key {
  std::int64_t m, n, k;
  bool bias;
  int alignment; // bytes all operands and their rows are aligned to
  bool fp8;
  std::int64_t ldy, ldx;
  std::int64_t batch, xStride, wStride, yStride;
  auto tied() const {
    return std::tie(m, n, k, bias, alignment, fp8, ldy, ldx, batch, xStride,
                    wStride, yStride);
  }
  bool operator<(const Key &o) const { return tied() < o.tied(); }
};

bool isFp8(const GemmArgs &a) { return a.fp8.x != nullptr; }
std::int64_t ldyOf(const GemmArgs &a) { return a.ldy > 0 ? a.ldy : a.n; }
std::int64_t ldxOf(const GemmArgs &a) { return a.ldx > 0 ? a.ldx : a.k; }
const void *xOperand(const GemmArgs &a) {
  return isFp8(a) ? static_cast<const void *>(a.fp8.x) : a.x;
}
const void *wOperand(const GemmArgs &a) {
  return isFp8(a) ? static_cast<const void *>(a.fp8.w) : a.w;
}

// The largest power of two up to 16 that divides every operand address and
// row stride; cuBLASLt must not pick a vectorised kernel the data cannot
// feed (expert slices of a gathered activation buffer start anywhere).
int operandAlignment(const GemmArgs &a) {
  std::uint64_t bits = 16;
  for (const void *p :
       {xOperand(a), wOperand(a), static_cast<const void *>(a.y)})
    bits |= reinterpret_cast<std::uintptr_t>(p);
  bits |= static_cast<std::uint64_t>(a.k) * (isFp8(a) ? 1 : 2);
  for (std::int64_t elements :
       {ldyOf(a), ldxOf(a), a.xStride, a.wStride, a.yStride})
    bits |= static_cast<std::uint64_t>(elements) * 2;
  return static_cast<int>(bits & (~bits + 1)); // lowest set bit
}

Key keyOf(const GemmArgs &a, std::int64_t m) {
  return {m,         a.n,      a.k,      a.bias != nullptr, operandAlignment(a),
          isFp8(a),  ldyOf(a), ldxOf(a), a.batch,           a.xStride,
          a.wStride, a.yStride};
}

// One exact problem: its descriptors, heuristic candidates and the algorithm
// in use.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  std::vector<cublasLtMatmulHeuristicResult_t> candidates;
  cublasLtMatmulAlgo_t algo{};
  bool chosen = false;
  int index = -1;

  Plan() = default;
  Plan(const Plan &) = delete;
  Plan &operator=(const Plan &) = delete;
  ~Plan() {
    if (c)
      cublasLtMatrixLayoutDestroy(c);
    if (b)
      cublasLtMatrixLayoutDestroy(b);
    if (a)
      cublasLtMatrixLayoutDestroy(a);
    if (desc)
      cublasLtMatmulDescDestroy(desc);
  }
};

Status validate(const GemmArgs &a) {
  if (a.m < 0 || a.n <= 0 || a.k <= 0 ||
      std::max({a.m, a.n, a.k}) > std::numeric_limits<std::int32_t>::max())
    return makeError("gemm: bad shape m={} n={} k={}", a.m, a.n, a.k);
  if (a.ldy != 0 && a.ldy < a.n)
    return makeError("gemm m={} n={} k={}: y's row stride {} is under n", a.m,
                     a.n, a.k, a.ldy);
  if (a.ldx != 0 && a.ldx < a.k)
    return makeError("gemm m={} n={} k={}: x's row stride {} is under k", a.m,
                     a.n, a.k, a.ldx);
  if (a.batch < 1 || a.batch > std::numeric_limits<std::int32_t>::max() ||
      a.xStride < 0 || a.wStride < 0 || a.yStride < 0)
    return makeError("gemm m={} n={} k={}: bad batch {} (strides {}, {}, {})",
                     a.m, a.n, a.k, a.batch, a.xStride, a.wStride, a.yStride);
  if ((a.batch > 1 || a.ldx != 0) && (isFp8(a) || a.bias))
    return makeError("gemm m={} n={} k={}: batches and x's row stride are "
                     "for bf16 GEMMs without bias",
                     a.m, a.n, a.k);
  if (isFp8(a)) {
    if (a.m > 0 && (!a.fp8.w || !a.fp8.xScales || !a.fp8.wScales || !a.y))
      return makeError("fp8 gemm m={} n={} k={}: null operand", a.m, a.n, a.k);
    if (a.bias)
      return makeError("fp8 gemm m={} n={} k={}: no bias is supported", a.m,
                       a.n, a.k);
    return Status::success();
  }
  if (a.m > 0 && (!a.x || !a.w || !a.y))
    return makeError("gemm m={} n={} k={}: null operand", a.m, a.n, a.k);
  return Status::success();
}

} // namespace

struct GemmRunner::State {
  GemmRunnerOptions options;
  cublasLtHandle_t handle = nullptr;
  void *workspace = nullptr;
  bool ownsWorkspace = false;
  std::map<Key, std::unique_ptr<Plan>> plans;
  std::map<Key, cublasLtMatmulAlgo_t> bucketChoices;
  std::set<Key> refused; // problems cuBLASLt has no algorithm for

  ~State() {
    plans.clear();
    if (ownsWorkspace && workspace)
      cudaFree(workspace);
    if (handle)
      cublasLtDestroy(handle);
  }

  Result<Plan *> planFor(const GemmArgs &args);
  Status choose(Plan &plan, const GemmArgs &args, cudaStream_t stream);
  Status tune(Plan &plan, const GemmArgs &args, cudaStream_t stream);
  cublasStatus_t matmul(const Plan &plan, const cublasLtMatmulAlgo_t &algo,
                        const GemmArgs &args, cudaStream_t stream);
};

Result<Plan *> GemmRunner::State::planFor(const GemmArgs &args) {
  const int alignment = operandAlignment(args);
  const Key key = keyOf(args, args.m);
  auto found = plans.find(key);
  if (found != plans.end())
    return found->second.get();

  auto plan = std::make_unique<Plan>();
  MOE_CUBLAS_TRY(
      cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
  MOE_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof opT));
  MOE_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(
      plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof opN));
  if (args.bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t biasType = CUDA_R_16BF;
    MOE_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    MOE_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &biasType,
        sizeof biasType));
    // The heuristic needs a bias pointer to rank the epilogue; run() sets
    // the real one on every call.
    MOE_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &args.bias,
        sizeof args.bias));
  }
  const bool fp8 = isFp8(args);
  if (fp8) {
    const cublasLtMatmulMatrixScale_t weightScales =
        CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    const cublasLtMatmulMatrixScale_t inputScales =
        CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    MOE_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &weightScales,
        sizeof weightScales));
    MOE_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &inputScales,
        sizeof inputScales));
    // As with the bias: run() sets each call's scales.
    MOE_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &args.fp8.wScales,
        sizeof args.fp8.wScales));
    MOE_CUBLAS_TRY(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &args.fp8.xScales,
        sizeof args.fp8.xScales));
  }
  const cudaDataType_t operands = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
  MOE_CUBLAS_TRY(
      cublasLtMatrixLayoutCreate(&plan->a, operands, args.k, args.n, args.k));
  MOE_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&plan->b, operands, args.k, args.m,
                                            ldxOf(args)));
  MOE_CUBLAS_TRY(cublasLtMatrixLayoutCreate(&plan->c, CUDA_R_16BF, args.n,
                                            args.m, ldyOf(args)));
  if (args.batch > 1) {
    const std::int32_t batch = static_cast<std::int32_t>(args.batch);
    for (auto [layout, stride] :
         {std::pair{plan->a, args.wStride}, std::pair{plan->b, args.xStride},
          std::pair{plan->c, args.yStride}}) {
      MOE_CUBLAS_TRY(cublasLtMatrixLayoutSetAttribute(
          layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
      MOE_CUBLAS_TRY(cublasLtMatrixLayoutSetAttribute(
          layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
          sizeof stride));
    }
  }

  cublasLtMatmulPreference_t pref = nullptr;
  MOE_CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&pref));
  const std::uint64_t workspaceBytes = options.workspaceBytes;
  const std::uint32_t align = static_cast<std::uint32_t>(alignment);
  cublasStatus_t status = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspaceBytes,
      sizeof workspaceBytes);
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    if (status == CUBLAS_STATUS_SUCCESS)
      status = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align,
                                                    sizeof align);
  cublasLtMatmulHeuristicResult_t results[kMaxCandidates] = {};
  int count = 0;
  if (status == CUBLAS_STATUS_SUCCESS)
    status = cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->a,
                                            plan->b, plan->c, plan->c, pref,
                                            kMaxCandidates, results, &count);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED ||
      (status == CUBLAS_STATUS_SUCCESS && count == 0))
    refused.insert(key);
  if (status != CUBLAS_STATUS_SUCCESS)
    return cublasFailure(status, fmt::format("cublasLtMatmulAlgoGetHeuristic "
                                             "(m={} n={} k={})",
                                             args.m, args.n, args.k));
  for (int i = 0; i < count; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS)
      plan->candidates.push_back(results[i]);
  if (plan->candidates.empty())
    return makeError("cuBLASLt has no {} algorithm for m={} n={} k={}{} "
                     "(operands {}-byte aligned)",
                     fp8 ? "block-scaled fp8" : "bf16", args.m, args.n, args.k,
                     args.bias ? " with bias" : "", alignment);
  Plan *raw = plan.get();
  plans.emplace(key, std::move(plan));
  return raw;
}

cublasStatus_t GemmRunner::State::matmul(const Plan &plan,
                                         const cublasLtMatmulAlgo_t &algo,
                                         const GemmArgs &args,
                                         cudaStream_t stream) {
  if (args.bias) {
    cublasStatus_t status = cublasLtMatmulDescSetAttribute(
        plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &args.bias,
        sizeof args.bias);
    if (status != CUBLAS_STATUS_SUCCESS)
      return status;
  }
  if (isFp8(args))
    for (auto [attribute, scales] :
         {std::pair{CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, args.fp8.wScales},
          std::pair{CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, args.fp8.xScales}}) {
      cublasStatus_t status = cublasLtMatmulDescSetAttribute(
          plan.desc, attribute, &scales, sizeof scales);
      if (status != CUBLAS_STATUS_SUCCESS)
        return status;
    }
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(handle, plan.desc, &alpha, wOperand(args), plan.a,
                        xOperand(args), plan.b, &beta, args.y, plan.c, args.y,
                        plan.c, &algo, workspace, options.workspaceBytes,
                        stream);
}

// Times each candidate on the caller's operands (y is overwritten, inputs
// only read) and keeps the fastest for this plan and its bucket.
Status GemmRunner::State::tune(Plan &plan, const GemmArgs &args,
                               cudaStream_t stream) {
  constexpr int kRepeats = 5;
  auto start = Event::create();
  if (!start)
    return start.error();
  auto stop = Event::create();
  if (!stop)
    return stop.error();
  double best = std::numeric_limits<double>::infinity();
  cublasStatus_t lastFailure = CUBLAS_STATUS_SUCCESS;
  for (int i = 0; i < static_cast<int>(plan.candidates.size()); ++i) {
    const cublasLtMatmulAlgo_t &algo = plan.candidates[i].algo;
    // The untimed first call loads the kernel; a candidate that fails to
    // launch is skipped.
    cublasStatus_t status = matmul(plan, algo, args, stream);
    if (status != CUBLAS_STATUS_SUCCESS) {
      lastFailure = status;
      continue;
    }
    MOE_RETURN_IF_ERROR(start->record(stream));
    for (int r = 0; r < kRepeats && status == CUBLAS_STATUS_SUCCESS; ++r)
      status = matmul(plan, algo, args, stream);
    MOE_RETURN_IF_ERROR(stop->record(stream));
    MOE_RETURN_IF_ERROR(stop->synchronize());
    if (status != CUBLAS_STATUS_SUCCESS) {
      lastFailure = status;
      continue;
    }
    auto seconds = elapsedSeconds(*start, *stop);
    MOE_RETURN_IF_ERROR(seconds);
    if (*seconds < best) {
      best = *seconds;
      plan.algo = algo;
      plan.index = i;
    }
  }
  if (plan.index < 0)
    return cublasFailure(lastFailure,
                         fmt::format("cublasLtMatmul (m={} n={} k={}, every "
                                     "candidate)",
                                     args.m, args.n, args.k));
  plan.chosen = true;
  return Status::success();
}

Status GemmRunner::State::choose(Plan &plan, const GemmArgs &args,
                                 cudaStream_t stream) {
  const Key bucket = keyOf(args, mBucket(args.m));
  auto choice = bucketChoices.find(bucket);
  if (choice != bucketChoices.end()) {
    cublasLtMatmulHeuristicResult_t check{};
    if (cublasLtMatmulAlgoCheck(handle, plan.desc, plan.a, plan.b, plan.c,
                                plan.c, &choice->second,
                                &check) == CUBLAS_STATUS_SUCCESS &&
        check.workspaceSize <= options.workspaceBytes) {
      plan.algo = choice->second;
      plan.chosen = true;
      return Status::success();
    }
  }
  if (options.autotune && choice == bucketChoices.end()) {
    MOE_RETURN_IF_ERROR(tune(plan, args, stream));
    bucketChoices[bucket] = plan.algo;
    return Status::success();
  }
  plan.algo = plan.candidates.front().algo;
  plan.index = 0;
  plan.chosen = true;
  return Status::success();
}

GemmRunner::GemmRunner(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

GemmRunner::~GemmRunner() = default;

Result<std::unique_ptr<GemmRunner>>
GemmRunner::create(const GemmRunnerOptions &options) {
  auto state = std::make_unique<State>();
  state->options = options;
  MOE_CUBLAS_TRY(cublasLtCreate(&state->handle));
  if (options.workspace) {
    state->workspace = options.workspace;
  } else if (options.workspaceBytes > 0) {
    cudaError_t code = cudaMalloc(&state->workspace, options.workspaceBytes);
    if (code != cudaSuccess)
      return cudaFailure(code,
                         fmt::format("cudaMalloc({}) for the GEMM workspace",
                                     formatBytes(options.workspaceBytes)));
    state->ownsWorkspace = true;
  }
  return std::unique_ptr<GemmRunner>(new GemmRunner(std::move(state)));
}

Status GemmRunner::run(const GemmArgs &args, cudaStream_t stream) {
  MOE_RETURN_IF_ERROR(validate(args));
  if (args.m == 0)
    return Status::success();
  auto plan = state_->planFor(args);
  MOE_RETURN_IF_ERROR(plan);
  if (!(*plan)->chosen)
    MOE_RETURN_IF_ERROR(state_->choose(**plan, args, stream));
  cublasStatus_t status = state_->matmul(**plan, (*plan)->algo, args, stream);
  if (status != CUBLAS_STATUS_SUCCESS)
    return cublasFailure(status, fmt::format("cublasLtMatmul (m={} n={} k={})",
                                             args.m, args.n, args.k));
  return Status::success();
}

Result<bool> GemmRunner::supports(const GemmArgs &args) {
  MOE_RETURN_IF_ERROR(validate(args));
  if (args.m == 0)
    return true;
  if (state_->refused.count(keyOf(args, args.m)))
    return false;
  auto plan = state_->planFor(args);
  if (plan.ok())
    return true;
  if (state_->refused.count(keyOf(args, args.m)))
    return false;
  return plan.error();
}

Result<int> GemmRunner::candidateCount(const GemmArgs &args) {
  MOE_RETURN_IF_ERROR(validate(args));
  auto plan = state_->planFor(args);
  MOE_RETURN_IF_ERROR(plan);
  return static_cast<int>((*plan)->candidates.size());
}

Status GemmRunner::selectCandidate(const GemmArgs &args, int index) {
  MOE_RETURN_IF_ERROR(validate(args));
  auto plan = state_->planFor(args);
  MOE_RETURN_IF_ERROR(plan);
  Plan &p = **plan;
  if (index < 0 || index >= static_cast<int>(p.candidates.size()))
    return makeError("gemm m={} n={} k={}: no candidate {} (of {})", args.m,
                     args.n, args.k, index, p.candidates.size());
  p.algo = p.candidates[index].algo;
  p.index = index;
  p.chosen = true;
  state_->bucketChoices[keyOf(args, mBucket(args.m))] = p.algo;
  return Status::success();
}

int GemmRunner::selectedCandidate(const GemmArgs &args) const {
  auto found = state_->plans.find(keyOf(args, args.m));
  return found == state_->plans.end() ? -1 : found->second->index;
}

std::int64_t GemmRunner::mBucket(std::int64_t m) {
  return m <= 1 ? 1
                : static_cast<std::int64_t>(
                      std::bit_ceil(static_cast<std::uint64_t>(m)));
}

} // namespace moe::cuda
