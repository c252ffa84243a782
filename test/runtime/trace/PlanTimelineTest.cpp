// The plan's schedule as Chrome trace timelines: every job where the cost
// model's critical path starts it, on its stream's track.

#include "runtime/trace/PlanTimeline.h"
#include "runtime/schemas/PlanVersion.h"
#include "test/runtime/ScratchDirectory.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <map>

namespace moe {
namespace {

using nlohmann::json;

// A plan whose decode step is: copy layer 1's weights (2 s on h2d), then
// its attention (1 s, after the copy), then a norm (0.5 s, after the
// attention by stream order) while the KV store of the attention runs on
// d2h (0.25 s). Its prefill pass has the one compute job `prefillStage`.
std::vector<uint8_t> planBytes(const char *prefillStage) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<flatbuffers::Offset<plan::Job>> decode;
  auto job = [&](plan::JobKind kind, plan::StreamKind stream,
                 const char *stage, std::vector<uint32_t> after, int layer,
                 double seconds) {
    auto stageName = stage ? b.CreateString(stage) : 0;
    auto deps = b.CreateVector(after);
    plan::JobBuilder j(b);
    j.add_kind(kind);
    j.add_stream(stream);
    if (stage)
      j.add_stage(stageName);
    j.add_after(deps);
    j.add_layer(layer);
    j.add_seconds(seconds);
    j.add_bytes(kind == plan::JobKind::compute ? 0 : 4096);
    return j.Finish();
  };
  decode.push_back(job(plan::JobKind::copy_weights, plan::StreamKind::h2d,
                       nullptr, {}, 1, 2.0));
  decode.push_back(job(plan::JobKind::compute, plan::StreamKind::compute,
                       "attention", {0}, 1, 1.0));
  decode.push_back(job(plan::JobKind::compute, plan::StreamKind::compute,
                       "norm", {}, 1, 0.5));
  decode.push_back(job(plan::JobKind::kv_store, plan::StreamKind::d2h,
                       nullptr, {1}, 1, 0.25));
  auto decodeStep =
      plan::CreateStepSchedule(b, 3.5, b.CreateVector(decode));
  std::vector<flatbuffers::Offset<plan::Job>> prefill{
      job(plan::JobKind::compute, plan::StreamKind::compute, prefillStage, {},
          2, 1.0)};
  auto prefillStep =
      plan::CreateStepSchedule(b, 1.0, b.CreateVector(prefill));
  auto schedule = plan::CreateSchedule(
      b, b.CreateVector(std::vector<flatbuffers::Offset<plan::BufferPool>>{}),
      decodeStep, prefillStep);
  auto model = plan::CreateModel(
      b, b.CreateString("mixtral"), 0, 32, 8, 1, 4096, -1, 0,
      b.CreateVector(std::vector<flatbuffers::Offset<plan::Param>>{}),
      b.CreateVector(std::vector<flatbuffers::Offset<plan::Op>>{}), 1, 0);
  b.FinishSizePrefixed(
      plan::CreatePlan(b, plan::kSchemaVersion, model, 0, 0, schedule),
      plan::PlanIdentifier());
  return {b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize()};
}

struct Span {
  std::string name, category, track, timeline;
  double start, duration;
};

// Spans by name, with their timeline's and track's names resolved.
std::map<std::string, Span> spansOf(const ChromeTrace &trace) {
  json events = json::parse(trace.json())["traceEvents"];
  std::map<int, std::string> timelines;
  std::map<std::pair<int, int>, std::string> tracks;
  for (const json &e : events) {
    if (e["name"] == "process_name")
      timelines[e["pid"]] = e["args"]["name"];
    if (e["name"] == "thread_name")
      tracks[{e["pid"], e["tid"]}] = e["args"]["name"];
  }
  std::map<std::string, Span> spans;
  for (const json &e : events)
    if (e["ph"] == "X")
      spans[e["name"]] = {e["name"],
                          e["cat"],
                          tracks[{e["pid"], e["tid"]}],
                          timelines[e["pid"]],
                          e["ts"].get<double>() / 1e6,
                          e["dur"].get<double>() / 1e6};
  return spans;
}

TEST(PlanTimeline, JobsStartWhereTheCriticalPathStartsThem) {
  std::vector<uint8_t> bytes = planBytes("norm");
  ChromeTrace trace;
  ASSERT_TRUE(
      addPlanTimelines(trace, *plan::GetSizePrefixedPlan(bytes.data())).ok());
  std::map<std::string, Span> spans = spansOf(trace);
  ASSERT_EQ(spans.size(), 5u);
  const Span &copy = spans.at("layer 0 weight copy");
  EXPECT_EQ(copy.timeline, "plan: decode step (predicted)");
  EXPECT_EQ(copy.track, "h2d");
  EXPECT_EQ(copy.start, 0);
  EXPECT_EQ(copy.duration, 2);
  const Span &attention = spans.at("layer 0 attention");
  EXPECT_EQ(attention.track, "compute");
  EXPECT_EQ(attention.category, "attention");
  EXPECT_EQ(attention.start, 2); // after the copy it waits for
  EXPECT_EQ(spans.at("layer 0 norm").start, 3); // after attention, in order
  const Span &store = spans.at("layer 0 KV store");
  EXPECT_EQ(store.track, "d2h");
  EXPECT_EQ(store.start, 3);
  const Span &prefill = spans.at("head norm");
  EXPECT_EQ(prefill.timeline, "plan: prefill pass (predicted)");
  EXPECT_EQ(prefill.start, 0);
}

TEST(PlanTimeline, RejectsAStageThePlannerDoesNotPrice) {
  std::vector<uint8_t> bytes = planBytes("teleportation");
  ChromeTrace trace;
  Status status =
      addPlanTimelines(trace, *plan::GetSizePrefixedPlan(bytes.data()));
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(),
            "plan: prefill pass (predicted) job 0: compute stage "
            "'teleportation' is not one the planner prices");
}

TEST(ChromeTrace, WritesOrSaysWhyNot) {
  ChromeTrace trace;
  int timeline = trace.addTimeline("run");
  trace.addSpan(timeline, "compute", {"op", "norm", 0.5, 0.25, {}});
  testing::ScratchDirectory scratch;
  std::string path = scratch.file("trace.json");
  ASSERT_TRUE(trace.write(path).ok());
  Status failed = trace.write("/nonexistent-dir/trace.json");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().message(),
            "/nonexistent-dir/trace.json: cannot open the trace file for "
            "writing");
}

} // namespace
} // namespace moe
