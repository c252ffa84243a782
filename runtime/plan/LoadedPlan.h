// A plan read from disk (or memory) and verified before anything uses it:
// FlatBuffers structure, file identifier, schema version, then every index
// and value reference the runtime will follow.
#pragma once

#include "runtime/costmodel/Lengths.h"
#include "runtime/schemas/plan_generated.h"
#include "runtime/support/Result.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe {

/// The largest dimension of a param or an op the runtime accepts: it
/// multiplies up to four into a size, which this keeps within int64. Real
/// models stay far below it (vocabularies of 2^18).
inline constexpr int64_t kMaxDimension = int64_t(1) << 20;

class LoadedPlan {
public:
  /// Reads and verifies `path`. Errors name the file and what is wrong.
  static Result<LoadedPlan> fromFile(const std::string &path);
  /// Verifies a plan held in memory; `name` labels it in errors.
  static Result<LoadedPlan> fromBytes(std::vector<uint8_t> bytes,
                                      const std::string &name);

  const plan::Plan &plan() const {
    return *plan::GetSizePrefixedPlan(bytes_.data());
  }
  const plan::Model &model() const { return *plan().model(); }
  const std::vector<uint8_t> &bytes() const { return bytes_; }
  /// The plans of plan().phases(), in order, each verified as a plan of
  /// the same model with as many slots as its phase says.
  const std::vector<LoadedPlan> &phasePlans() const { return phasePlans_; }
  /// The lengths the plan's batching was planned for (verified); none
  /// where it has no batching.
  std::optional<costmodel::GenerationLengths> plannedLengths() const;

private:
  explicit LoadedPlan(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}

  std::vector<uint8_t> bytes_;
  std::vector<LoadedPlan> phasePlans_;
};

} // namespace moe
