// A committed golden plan with its model resolved, and edits of it, for the
// tests of what the runtime resolves from a plan's schedule.
#pragma once

#include "runtime/model/ResolvedModel.h"
#include "test/runtime/golden/GoldenFixture.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>

namespace moe::model {

struct ResolvedGoldenPlan {
  LoadedPlan plan;
  ResolvedModel model;
};

inline ResolvedGoldenPlan loadResolved(const std::string &model,
                                       const std::string &planName) {
  Result<LoadedPlan> plan = loadGoldenPlan(model, planName);
  EXPECT_TRUE(plan.ok()) << plan.error().message();
  Result<ResolvedModel> resolved = ResolvedModel::resolve(plan->model());
  EXPECT_TRUE(resolved.ok()) << resolved.error().message();
  return {std::move(*plan), std::move(*resolved)};
}

inline LoadedPlan edited(const LoadedPlan &plan,
                         const std::function<void(plan::PlanT &)> &edit) {
  Result<LoadedPlan> changed = editPlan(plan, edit);
  EXPECT_TRUE(changed.ok()) << changed.error().message();
  return std::move(*changed);
}

} // namespace moe::model
