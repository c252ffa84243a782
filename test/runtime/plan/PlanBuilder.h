// A small plan built field by field, for tests of what reads plans: an
// embedding and an LM head over two parameters, with optional batching, a
// one-copy schedule and a tail phase.
#pragma once

#include "runtime/schemas/PlanVersion.h"
#include "runtime/schemas/plan_generated.h"

#include <cstdint>
#include <vector>

namespace moe::testing {

struct PlanSpec {
  uint32_t version = plan::kSchemaVersion;
  int headWeight = 1;  // param index the LM head reads
  int headOperand = 1; // value the LM head consumes
  int logits = 2;
  bool includeEmbedding = true;
  int64_t residentBatch = 0; // 0: no batching table
  int64_t decodeMicroBatch = 1;
  int64_t generatedTokens = 256, minGeneratedTokens = 0;
  // (shortest, longest, weight) triples; empty: no distribution recorded.
  std::vector<double> generatedLengths;
  bool withSchedule = false;
  uint32_t copyWaitsFor = 0; // the decode copy job (index 1) waits for this
  plan::StreamKind copyStream = plan::StreamKind::h2d;
  int copyBuffer = 0;
  int ringBuffers = 2;
  int64_t paramRows = 16;
  std::vector<int64_t> eos{2};
  // A phase "tail" of `phaseSlots` slots whose plan is these bytes, its
  // steps as below, the job's plan's 1.0, 1.1 and 1.3 s at 1, 2 and 4 live.
  std::vector<uint8_t> phasePlan;
  int64_t phaseSlots = 4;
  std::vector<int64_t> phaseLive{1, 2, 4};
  std::vector<double> phaseSeconds{0.5, 0.6, 0.8};
};

/// embedding(ids) -> lm_head -> logits, over two parameters.
inline std::vector<uint8_t> buildPlan(const PlanSpec &spec = {}) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<int64_t> shape{spec.paramRows, 8};
  std::vector<flatbuffers::Offset<plan::Param>> params{
      plan::CreateParamDirect(b, "embed", "model.embed_tokens.weight", &shape,
                              plan::DType::bf16),
      plan::CreateParamDirect(b, "lm_head", "lm_head.weight", &shape,
                              plan::DType::bf16,
                              plan::Placement::host_streamed)};
  std::vector<flatbuffers::Offset<plan::Op>> ops;
  if (spec.includeEmbedding) {
    std::vector<int> in{0}, out{1};
    ops.push_back(plan::CreateOpDirect(b, plan::Module::Embedding,
                                       plan::CreateEmbedding(b, 0).Union(), -1,
                                       &in, &out));
  }
  std::vector<int> in{spec.headOperand}, out{2};
  ops.push_back(plan::CreateOpDirect(
      b, plan::Module::LMHead, plan::CreateLMHead(b, spec.headWeight).Union(),
      -1, &in, &out));
  auto model = plan::CreateModelDirect(b, "test", "", 16, 8, 0, 0, 1, &spec.eos,
                                       &params, &ops, 3, spec.logits);
  flatbuffers::Offset<plan::Batching> batching;
  if (spec.residentBatch)
    batching = plan::CreateBatchingDirect(
        b, spec.residentBatch, 1, spec.decodeMicroBatch, 256, 2, 2, 0.0, 0.5,
        512, spec.generatedTokens, 1 << 30, 1 << 30, plan::KvDType::bf16,
        plan::WeightDType::bf16, 0, spec.minGeneratedTokens, nullptr,
        spec.generatedLengths.empty() ? nullptr : &spec.generatedLengths);
  flatbuffers::Offset<plan::Schedule> schedule;
  if (spec.withSchedule) {
    std::vector<flatbuffers::Offset<plan::BufferPool>> pools{
        plan::CreateBufferPool(b, plan::PoolKind::weight_ring, spec.ringBuffers,
                               1024)};
    std::vector<uint32_t> none, after{spec.copyWaitsFor};
    std::vector<flatbuffers::Offset<plan::Job>> jobs{
        plan::CreateJobDirect(b, plan::JobKind::compute,
                              plan::StreamKind::compute, "norm", &none),
        plan::CreateJobDirect(b, plan::JobKind::copy_weights, spec.copyStream,
                              nullptr, &after, 1, 0, -1, 0, 0, 0,
                              spec.copyBuffer, 1024.0)};
    auto decode = plan::CreateStepScheduleDirect(b, 1e-3, &jobs);
    std::vector<flatbuffers::Offset<plan::Job>> noJobs;
    auto prefill = plan::CreateStepScheduleDirect(b, 1e-3, &noJobs);
    schedule = plan::CreateScheduleDirect(b, &pools, decode, prefill);
  }
  flatbuffers::Offset<flatbuffers::Vector<flatbuffers::Offset<plan::Phase>>>
      phases;
  if (!spec.phasePlan.empty()) {
    std::vector<int64_t> live{1, 2, 4};
    std::vector<double> seconds{1.0, 1.1, 1.3};
    auto current = plan::CreateLiveStepsDirect(b, &live, &seconds);
    auto steps =
        plan::CreateLiveStepsDirect(b, &spec.phaseLive, &spec.phaseSeconds);
    std::vector<flatbuffers::Offset<plan::Phase>> list{
        plan::CreatePhaseDirect(b, "tail", spec.phaseSlots, 700, current, steps,
                                12.5, &spec.phasePlan)};
    phases = b.CreateVector(list);
  }
  plan::FinishSizePrefixedPlanBuffer(
      b,
      plan::CreatePlan(b, spec.version, model, batching, 0, schedule, phases));
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

// A job of 64 slots with a tail phase whose plan has `slots`.
inline PlanSpec withTail(int64_t slots = 4) {
  PlanSpec tail;
  tail.residentBatch = slots;
  PlanSpec job;
  job.residentBatch = 64;
  job.phasePlan = buildPlan(tail);
  return job;
}

} // namespace moe::testing
