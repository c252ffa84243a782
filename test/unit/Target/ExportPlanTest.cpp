// Plan round trip: import a model, export the plan, load it with the
// runtime's verifying loader, and find the same model in it.

#include "moe/Analysis/CostModelBridge.h"
#include "moe/Conversion/Passes.h"
#include "moe/Import/HFConfig.h"
#include "moe/Target/Plan.h"
#include "moe/Transforms/Passes.h"

#include "dialects/MoE/MoEOps.h"
#include "dialects/Sched/SchedOps.h"
#include "runtime/costmodel/Plan.h"
#include "runtime/model/ActivationBytes.h"
#include "runtime/model/ResolvedModel.h"
#include "runtime/plan/LoadedPlan.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include <gtest/gtest.h>

#include <string>

using namespace mlir;

namespace {

class ExportPlanTest : public ::testing::TestWithParam<const char *> {};

/// The plan's module kind for an op, to compare program order.
::moe::plan::Module planKindOf(Operation *op) {
  using ::moe::plan::Module;
  if (isa<mlir::moe::EmbeddingOp>(op))
    return Module::Embedding;
  if (isa<mlir::moe::RMSNormOp>(op))
    return Module::RMSNorm;
  if (isa<mlir::moe::AttentionOp>(op))
    return Module::Attention;
  if (isa<mlir::moe::MLAttentionOp>(op))
    return Module::MLAttention;
  if (isa<mlir::moe::LightningAttentionOp>(op))
    return Module::LightningAttention;
  if (isa<mlir::moe::RouterOp>(op))
    return Module::Router;
  if (isa<mlir::moe::ExpertsOp>(op))
    return Module::Experts;
  if (isa<mlir::moe::MLPOp>(op))
    return Module::MLP;
  if (isa<mlir::moe::ResidualOp>(op))
    return Module::Residual;
  if (isa<mlir::moe::LMHeadOp>(op))
    return Module::LMHead;
  return Module::NONE;
}

TEST_P(ExportPlanTest, RoundTripKeepsTheModel) {
  MLIRContext context;
  std::string dir = std::string(MOE_MODELS_DIR) + "/" + GetParam();
  OwningOpRef<ModuleOp> module = mlir::moe::importHFConfig(&context, dir);
  ASSERT_TRUE(module);
  FailureOr<std::vector<uint8_t>> bytes = mlir::moe::exportPlan(*module);
  ASSERT_TRUE(succeeded(bytes));
  ::moe::Result<::moe::LoadedPlan> loaded =
      ::moe::LoadedPlan::fromBytes(*bytes, GetParam());
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  const ::moe::plan::Model &model = loaded->model();

  auto info = (*module)->getAttrOfType<mlir::moe::ModelAttr>("moe.model");
  EXPECT_EQ(model.model_type()->str(), info.getModelType().str());
  EXPECT_EQ(model.vocab_size(), info.getVocabSize());
  EXPECT_EQ(model.hidden_size(), info.getHiddenSize());
  EXPECT_EQ(model.num_layers(), info.getNumLayers());

  unsigned index = 0;
  for (mlir::moe::ParamOp param : module->getOps<mlir::moe::ParamOp>()) {
    ASSERT_LT(index, model.params()->size());
    const ::moe::plan::Param &written = *model.params()->Get(index++);
    EXPECT_EQ(written.name()->str(), param.getSymName().str());
    EXPECT_EQ(written.hf_name()->str(), param.getHfName()->str());
    std::vector<int64_t> shape(written.shape()->begin(),
                               written.shape()->end());
    EXPECT_EQ(shape, std::vector<int64_t>(param.getTensorType().getShape()));
  }
  EXPECT_EQ(index, model.params()->size());

  auto forward = module->lookupSymbol<func::FuncOp>("forward");
  unsigned opIndex = 0;
  for (Operation &op : forward.getBody().front().without_terminator()) {
    ASSERT_LT(opIndex, model.ops()->size());
    const ::moe::plan::Op &written = *model.ops()->Get(opIndex++);
    EXPECT_EQ(written.spec_type(), planKindOf(&op));
    EXPECT_EQ(written.operands()->size(), op.getNumOperands());
    EXPECT_EQ(written.results()->size(), op.getNumResults());
  }
  EXPECT_EQ(opIndex, model.ops()->size());
}

INSTANTIATE_TEST_SUITE_P(
    TinyModels, ExportPlanTest,
    ::testing::Values("tiny-mixtral", "tiny-deepseek-v2", "tiny-deepseek-v3",
                      "tiny-qwen2-moe", "tiny-qwen3-moe", "tiny-minimax",
                      "tiny-gpt-oss", "tiny-yi-lightning"),
    [](const auto &info) {
      std::string name = info.param;
      for (char &c : name)
        if (c == '-')
          c = '_';
      return name;
    });

class RowBytesTest : public ::testing::TestWithParam<const char *> {};

/// The planner's activation budget per decode row holds what the CUDA
/// backend takes per row at its widest op, for each KV format: both count
/// an op's own buffers by model/ActivationBytes.h, and the planner bounds
/// the values alive across it by hidden rows.
TEST_P(RowBytesTest, PlannerHoldsTheBackendsWidestRow) {
  MLIRContext context;
  OwningOpRef<ModuleOp> module = mlir::moe::importHFConfig(
      &context, std::string(MOE_MODELS_DIR) + "/" + GetParam());
  ASSERT_TRUE(module);
  FailureOr<std::vector<uint8_t>> bytes = mlir::moe::exportPlan(*module);
  ASSERT_TRUE(succeeded(bytes));
  auto loaded = ::moe::LoadedPlan::fromBytes(*bytes, GetParam());
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  auto resolved = ::moe::model::ResolvedModel::resolve(loaded->model());
  ASSERT_TRUE(resolved.ok()) << resolved.error().message();
  for (::moe::model::KvDtype kv :
       {::moe::model::KvDtype::bf16, ::moe::model::KvDtype::fp8}) {
    mlir::moe::PlanDtypes dtypes;
    dtypes.cache.kv = kv;
    FailureOr<mlir::moe::CostModelView> view =
        mlir::moe::buildCostModelView(*module, dtypes);
    ASSERT_TRUE(succeeded(view));
    resolved->kvDtype = kv;
    int64_t backend = ::moe::model::stepRowBytes(*resolved);
    int64_t planner = ::moe::costmodel::decodeRowBytes(view->costs);
    EXPECT_GE(planner, backend) << ::moe::model::kvDtypeName(kv);
    // Not a loose bound either: within the values of one layer.
    EXPECT_LE(planner, backend + 24 * view->costs.hiddenSize)
        << ::moe::model::kvDtypeName(kv);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllModels, RowBytesTest,
    ::testing::Values("tiny-mixtral", "tiny-deepseek-v2", "tiny-deepseek-v3",
                      "tiny-qwen2-moe", "tiny-qwen3-moe", "tiny-minimax",
                      "tiny-gpt-oss", "tiny-yi-lightning", "mixtral-8x7b",
                      "mixtral-8x22b", "deepseek-v2-lite", "deepseek-v3",
                      "qwen1.5-moe-a2.7b", "qwen3-30b-a3b", "minimax-text-01",
                      "gpt-oss-120b", "yi-lightning-style"),
    [](const auto &info) {
      std::string name = info.param;
      for (char &c : name)
        if (c == '-' || c == '.')
          c = '_';
      return name;
    });

/// Spot checks of attributes that a wrong field order would scramble.
TEST(ExportPlan, AttributesSurvive) {
  MLIRContext context;
  OwningOpRef<ModuleOp> module = mlir::moe::importHFConfig(
      &context, std::string(MOE_MODELS_DIR) + "/tiny-gpt-oss");
  ASSERT_TRUE(module);
  FailureOr<std::vector<uint8_t>> bytes = mlir::moe::exportPlan(*module);
  ASSERT_TRUE(succeeded(bytes));
  auto loaded = ::moe::LoadedPlan::fromBytes(*bytes, "tiny-gpt-oss");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  const auto &ops = *loaded->model().ops();
  const ::moe::plan::Attention *first = nullptr;
  const ::moe::plan::Router *router = nullptr;
  const ::moe::plan::Experts *experts = nullptr;
  for (const ::moe::plan::Op *op : ops) {
    if (!first && op->spec_as_Attention())
      first = op->spec_as_Attention();
    if (!router && op->spec_as_Router())
      router = op->spec_as_Router();
    if (!experts && op->spec_as_Experts())
      experts = op->spec_as_Experts();
  }
  ASSERT_TRUE(first && router && experts);
  EXPECT_EQ(first->sliding_window(), 8);
  EXPECT_EQ(first->head_dim(), 16);
  EXPECT_DOUBLE_EQ(first->scale(), 0.25);
  EXPECT_EQ(first->rope()->scaling(), ::moe::plan::RopeScaling::yarn);
  EXPECT_FALSE(first->rope()->truncate());
  EXPECT_GE(first->sinks(), 0);
  EXPECT_EQ(first->kv_source_layer(), -1);
  EXPECT_EQ(router->top_k(), 2);
  EXPECT_GE(router->bias(), 0);
  EXPECT_EQ(experts->layout(),
            ::moe::plan::ExpertLayout::fused_interleaved_transposed);
  EXPECT_DOUBLE_EQ(experts->swiglu_limit(), 7.0);
  EXPECT_EQ(experts->gate(), -1);
  EXPECT_GE(experts->gate_up(), 0);
}

/// The planner's decisions travel too: batch sizes, placements, predictions.
TEST(ExportPlan, PlannedModelCarriesItsDecisions) {
  MLIRContext context;
  OwningOpRef<ModuleOp> module = mlir::moe::importHFConfig(
      &context, std::string(MOE_MODELS_DIR) + "/tiny-mixtral");
  ASSERT_TRUE(module);
  PassManager pm(&context);
  mlir::moe::SelectBatchSizesOptions options;
  options.profile = MOE_SMALL_CARD_PROFILE;
  options.gpuMemGiB = 0.002; // forces the experts onto the host
  pm.addPass(mlir::moe::createSelectBatchSizes(options));
  pm.addPass(mlir::moe::createPlace());
  mlir::moe::ScheduleOverlapOptions schedule;
  schedule.profile = MOE_SMALL_CARD_PROFILE;
  pm.addPass(mlir::moe::createScheduleOverlap(schedule));
  ASSERT_TRUE(succeeded(pm.run(*module)));

  FailureOr<std::vector<uint8_t>> bytes = mlir::moe::exportPlan(*module);
  ASSERT_TRUE(succeeded(bytes));
  auto loaded = ::moe::LoadedPlan::fromBytes(*bytes, "tiny-mixtral");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  const ::moe::plan::Plan &plan = loaded->plan();

  auto batching =
      (*module)->getAttrOfType<mlir::moe::BatchingAttr>("moe.batching");
  ASSERT_TRUE(plan.batching());
  EXPECT_EQ(plan.batching()->resident_batch(), batching.getResidentBatch());
  EXPECT_EQ(plan.batching()->attention_micro_batch_decode(),
            batching.getAttentionMicroBatchDecode());
  EXPECT_EQ(plan.batching()->prefetch_depth(), batching.getPrefetchDepth());
  EXPECT_EQ(plan.batching()->gpu_budget_bytes(), batching.getGpuBudgetBytes());
  ASSERT_TRUE(plan.prediction());
  EXPECT_GT(plan.prediction()->decode_tokens_per_second(), 0.0);
  EXPECT_GT(plan.prediction()->decode_stages()->size(), 0u);
  EXPECT_FALSE(plan.prediction()->roofline_bound()->str().empty());

  unsigned index = 0, streamed = 0;
  for (mlir::moe::ParamOp param : module->getOps<mlir::moe::ParamOp>()) {
    const ::moe::plan::Param &written = *plan.model()->params()->Get(index++);
    bool hostStreamed =
        param.getPlacement() == mlir::moe::Placement::host_streamed;
    streamed += hostStreamed;
    EXPECT_EQ(written.placement(), hostStreamed
                                       ? ::moe::plan::Placement::host_streamed
                                       : ::moe::plan::Placement::gpu_resident)
        << param.getSymName().str();
    EXPECT_EQ(written.gpu_experts(), param.getGpuExperts().value_or(0));
  }
  EXPECT_GT(streamed, 0u);

  // The schedule: the same jobs in the same order, on the same streams.
  ASSERT_TRUE(plan.schedule());
  for (mlir::sched::StepOp step : module->getOps<mlir::sched::StepOp>()) {
    const ::moe::plan::StepSchedule *written =
        step.getSymName() == "decode" ? plan.schedule()->decode()
                                      : plan.schedule()->prefill();
    EXPECT_DOUBLE_EQ(written->predicted_seconds(),
                     step.getPredictedSeconds().convertToDouble());
    unsigned job = 0;
    for (Operation &op : step.getBody().front()) {
      ASSERT_LT(job, written->jobs()->size());
      const ::moe::plan::Job &entry = *written->jobs()->Get(job++);
      auto copy = dyn_cast<mlir::sched::CopyOp>(op);
      EXPECT_EQ(entry.kind() == ::moe::plan::JobKind::compute, !copy);
      EXPECT_EQ(entry.after() ? entry.after()->size() : 0u,
                op.getNumOperands());
      if (copy) {
        EXPECT_DOUBLE_EQ(entry.bytes(), copy.getBytes().convertToDouble());
      }
    }
    EXPECT_EQ(job, written->jobs()->size());
  }
}

} // namespace
