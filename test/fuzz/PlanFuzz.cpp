// Plan bytes, as a damaged or hostile .moeplan would hold them: the loader's
// verification, then the resolution both backends run, must reject them
// with an error, never read out of bounds.
#include "runtime/model/KvStagingSchedule.h"
#include "runtime/model/ResolvedModel.h"
#include "runtime/model/RingSchedule.h"
#include "runtime/plan/LoadedPlan.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  moe::Result<moe::LoadedPlan> plan =
      moe::LoadedPlan::fromBytes({data, data + size}, "fuzz.moeplan");
  if (!plan.ok())
    return 0;
  moe::Result<moe::model::ResolvedModel> model =
      moe::model::ResolvedModel::resolve(plan->plan());
  if (model.ok()) {
    (void)moe::model::resolveRingSchedule(plan->plan(), *model);
    (void)moe::model::resolveKvStagingSchedule(plan->plan(), *model);
  }
  return 0;
}
