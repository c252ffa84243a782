#include "runtime/costmodel/CriticalPath.h"

#include <gtest/gtest.h>

namespace moe::costmodel {
namespace {

Job job(Stream stream, double seconds, std::vector<JobId> deps = {},
        Stage stage = Stage::Attention) {
  return Job{stream, stage, seconds, std::move(deps), ""};
}

Evaluation evaluated(const Dag &dag) {
  auto result = evaluate(dag);
  EXPECT_TRUE(result.ok()) << result.error().message();
  return result.ok() ? *result : Evaluation{};
}

TEST(CriticalPathTest, EmptyDagTakesNoTime) {
  Evaluation result = evaluated(Dag{});
  EXPECT_EQ(result.makespan, 0);
  EXPECT_TRUE(result.criticalPath.empty());
}

TEST(CriticalPathTest, OneStreamRunsItsJobsInOrder) {
  Dag dag;
  JobId a = dag.add(job(Stream::Compute, 1));
  JobId b = dag.add(job(Stream::Compute, 2));
  JobId c = dag.add(job(Stream::Compute, 3));
  Evaluation result = evaluated(dag);
  EXPECT_DOUBLE_EQ(result.makespan, 6);
  EXPECT_DOUBLE_EQ(result.start[c], 3);
  EXPECT_EQ(result.criticalPath, (std::vector<JobId>{a, b, c}));
}

TEST(CriticalPathTest, CopyBoundPipelineFollowsTheCopies) {
  // Each layer's weights take 2 s to copy and 1 s to use.
  Dag dag;
  std::vector<JobId> copies, computes;
  for (int layer = 0; layer < 3; ++layer) {
    copies.push_back(
        dag.add(job(Stream::HostToDevice, 2, {}, Stage::WeightCopy)));
    computes.push_back(dag.add(job(Stream::Compute, 1, {copies.back()})));
  }
  Evaluation result = evaluated(dag);
  EXPECT_DOUBLE_EQ(result.makespan, 7);
  EXPECT_DOUBLE_EQ(result.busy(Stream::HostToDevice), 6);
  EXPECT_DOUBLE_EQ(result.busy(Stream::Compute), 3);
  EXPECT_DOUBLE_EQ(result.busy(Stream::DeviceToHost), 0);
  EXPECT_DOUBLE_EQ(result.stage(Stage::WeightCopy), 6);
  EXPECT_DOUBLE_EQ(result.stage(Stage::Attention), 3);
  EXPECT_EQ(result.criticalPath,
            (std::vector<JobId>{copies[0], copies[1], copies[2], computes[2]}));
}

TEST(CriticalPathTest, ComputeBoundPipelineFollowsTheCompute) {
  Dag dag;
  std::vector<JobId> copies, computes;
  for (int layer = 0; layer < 3; ++layer) {
    copies.push_back(dag.add(job(Stream::HostToDevice, 1)));
    computes.push_back(dag.add(job(Stream::Compute, 3, {copies.back()})));
  }
  Evaluation result = evaluated(dag);
  EXPECT_DOUBLE_EQ(result.makespan, 10);
  EXPECT_EQ(
      result.criticalPath,
      (std::vector<JobId>{copies[0], computes[0], computes[1], computes[2]}));
}

TEST(CriticalPathTest, JoinWaitsForItsSlowestDependency) {
  Dag dag;
  JobId a = dag.add(job(Stream::Compute, 1));
  JobId b = dag.add(job(Stream::HostToDevice, 5, {a}));
  JobId c = dag.add(job(Stream::DeviceToHost, 2, {a}));
  JobId d = dag.add(job(Stream::Compute, 1, {b, c}));
  Evaluation result = evaluated(dag);
  EXPECT_DOUBLE_EQ(result.makespan, 7);
  EXPECT_DOUBLE_EQ(result.start[c], 1);
  EXPECT_DOUBLE_EQ(result.start[d], 6);
  EXPECT_EQ(result.criticalPath, (std::vector<JobId>{a, b, d}));
}

TEST(CriticalPathTest, StreamOrderIsAnEdge) {
  // The second copy has no dependency but queues behind the first.
  Dag dag;
  JobId gate = dag.add(job(Stream::Compute, 4));
  JobId first = dag.add(job(Stream::HostToDevice, 1, {gate}));
  JobId second = dag.add(job(Stream::HostToDevice, 1));
  Evaluation result = evaluated(dag);
  EXPECT_DOUBLE_EQ(result.start[second], 5);
  EXPECT_EQ(result.criticalPath, (std::vector<JobId>{gate, first, second}));
}

TEST(CriticalPathTest, RejectsForwardDependenciesAndBadDurations) {
  Dag forward;
  forward.add(Job{Stream::Compute, Stage::Router, 1, {0}, "router"});
  auto result = evaluate(forward);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().message(),
            "job 0 (router): dependency 0 is not an earlier job");

  Dag negative;
  negative.add(Job{Stream::Compute, Stage::Router, -1, {}, "router"});
  result = evaluate(negative);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().message(),
            "job 0 (router): duration -1 is not a finite non-negative number");
}

} // namespace
} // namespace moe::costmodel
