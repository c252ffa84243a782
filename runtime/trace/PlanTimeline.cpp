#include "runtime/trace/PlanTimeline.h"

#include "runtime/costmodel/CriticalPath.h"

#include <fmt/format.h>

#include <algorithm>

namespace moe {
namespace {

namespace cm = costmodel;

cm::Stream streamOf(plan::StreamKind stream) {
  switch (stream) {
  case plan::StreamKind::compute:
    return cm::Stream::Compute;
  case plan::StreamKind::h2d:
    return cm::Stream::HostToDevice;
  case plan::StreamKind::d2h:
    return cm::Stream::DeviceToHost;
  case plan::StreamKind::host:
    return cm::Stream::Host;
  }
  return cm::Stream::Compute;
}

// Copies by their kind, compute jobs by the stage name the planner wrote.
Result<cm::Stage> stageOf(const plan::Job &job) {
  switch (job.kind()) {
  case plan::JobKind::copy_weights:
    return cm::Stage::WeightCopy;
  case plan::JobKind::kv_load:
    return cm::Stage::KvLoad;
  case plan::JobKind::kv_store:
    return cm::Stage::KvStore;
  case plan::JobKind::hidden_load:
    return cm::Stage::HiddenLoad;
  case plan::JobKind::hidden_store:
    return cm::Stage::HiddenStore;
  case plan::JobKind::host_attention:
    return cm::Stage::HostAttention;
  case plan::JobKind::compute:
    break;
  }
  std::string_view name = job.stage() ? job.stage()->string_view() : "";
  for (size_t s = 0; s < cm::kNumStages; ++s)
    if (cm::stageName(cm::Stage(s)) == name)
      return cm::Stage(s);
  return makeError("compute stage '{}' is not one the planner prices", name);
}

// "layer 3 attention 2" (micro-batch or prefill chunk 2). The plan numbers
// layers as the cost model does: 0 is the embedding, the last the final
// norm and LM head, the model's layers in between.
std::string jobLabel(const plan::Job &job, cm::Stage stage,
                     int64_t modelLayers) {
  std::string label(cm::stageName(stage));
  if (job.layer() == 0 && stage != cm::Stage::Embedding)
    label = "embedding " + label;
  else if (job.layer() == modelLayers + 1 && stage != cm::Stage::LmHead)
    label = "head " + label;
  else if (job.layer() > 0 && job.layer() <= modelLayers)
    label = layerSpanName(int(job.layer()) - 1, label);
  if (job.micro_batch() >= 0)
    label += fmt::format(" {}", job.micro_batch());
  return label;
}

Status addTimeline(ChromeTrace &trace, const plan::StepSchedule &step,
                   int64_t modelLayers, const std::string &name) {
  const auto &jobs = *step.jobs();
  cm::Dag dag;
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    const plan::Job &job = *jobs.Get(i);
    auto stage = stageOf(job);
    if (!stage)
      return stage.error().withContext(fmt::format("{} job {}", name, i));
    cm::Job timed{streamOf(job.stream()), *stage, job.seconds(), {}, {}, {}};
    if (job.after())
      timed.deps.assign(job.after()->begin(), job.after()->end());
    timed.label = jobLabel(job, *stage, modelLayers);
    dag.add(std::move(timed));
  }
  auto evaluation = cm::evaluate(dag);
  if (!evaluation)
    return evaluation.error().withContext(name);
  int timeline = trace.addTimeline(name);
  // Tracks in stream order, whichever job comes first.
  for (cm::Stream stream : {cm::Stream::Compute, cm::Stream::HostToDevice,
                            cm::Stream::DeviceToHost})
    trace.addTrack(timeline, std::string(cm::streamName(stream)));
  // The host's cores, where the plan gives them decode attention.
  if (std::any_of(dag.jobs().begin(), dag.jobs().end(), [](const cm::Job &job) {
        return job.stream == cm::Stream::Host;
      }))
    trace.addTrack(timeline, std::string(cm::streamName(cm::Stream::Host)));
  for (uint32_t i = 0; i < jobs.size(); ++i) {
    const plan::Job &job = *jobs.Get(i);
    const cm::Job &timed = dag.jobs()[i];
    TraceSpan span{timed.label,
                   std::string(cm::stageName(timed.stage)),
                   evaluation->start[i],
                   timed.seconds,
                   {{"job", std::to_string(i)},
                    {"layer", std::to_string(job.layer())},
                    {"module", std::to_string(job.module_())}}};
    if (job.micro_batch() >= 0)
      span.args.push_back({"micro batch", std::to_string(job.micro_batch())});
    if (job.sequences() > 0)
      span.args.push_back(
          {"sequences",
           fmt::format("{} from {}", job.sequences(), job.first_sequence())});
    if (job.buffer() >= 0)
      span.args.push_back(
          {"buffer", fmt::format("{} of pool {}", job.buffer(), job.pool())});
    if (job.bytes() > 0)
      span.args.push_back({"bytes", fmt::format("{:.0f}", job.bytes())});
    trace.addSpan(timeline, std::string(cm::streamName(timed.stream)),
                  std::move(span));
  }
  return Status::success();
}

} // namespace

Status addPlanTimelines(ChromeTrace &trace, const plan::Plan &plan) {
  const plan::Schedule *schedule = plan.schedule();
  if (!schedule)
    return makeError("the plan has no schedule (it was exported without the "
                     "planner): nothing to trace");
  int64_t layers = plan.model()->num_layers();
  MOE_RETURN_IF_ERROR(addTimeline(trace, *schedule->decode(), layers,
                                  "plan: decode step (predicted)"));
  return addTimeline(trace, *schedule->prefill(), layers,
                     "plan: prefill pass (predicted)");
}

} // namespace moe
