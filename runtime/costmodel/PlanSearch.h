// The batch-size search of module-based batching: enumerate candidate plans,
// keep those that fit both memory pools, score each by the critical path of
// one decode step (decode tokens/s = B / step time), price the whole job's
// steady state (decode steps and refill passes) for the best of each value
// of each variable, and explain the winner against its runner-ups.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runtime/costmodel/Refill.h"
#include "runtime/costmodel/StepDag.h"

namespace moe::costmodel {

struct SearchOptions {
  // Candidate values. An empty resident-batch list means a geometric grid
  // (factor √2) up to maxResidentBatch; an empty micro-batch list means powers
  // of two up to B (decode: from B/64, so a step has at most 64 micro-batches
  // per layer) plus B itself.
  std::vector<int64_t> residentBatches;
  int64_t maxResidentBatch = 65536;
  std::vector<int64_t> decodeMicroBatches;
  std::vector<int64_t> prefillMicroBatches;
  std::vector<int64_t> expertMicroBatches = {256, 1024, 4096, 16384};
  std::vector<int64_t> prefetchDepths = {1, 2, 3};
  std::vector<double> kvGpuFractions = {0, 0.25, 0.5, 0.75, 1};
  int64_t kvStagingBuffers = 2;
  // While B and residency are searched, GPU memory is kept for a prefill
  // chunk of about this many tokens (at least one prompt): GEMMs reach their
  // peak rate at a few thousand tokens, and a resident set that fills the
  // GPU would otherwise leave prefill one prompt at a time.
  int64_t prefillChunkTokens = 4096;
  size_t maxRunnerUps = 6;
  // The host's share of decode attention (ω, of the B sequences): absent,
  // the search balances it per candidate where the model and the profile
  // allow; given, it is fixed (0: never), and candidates whose host KV holds
  // fewer sequences are left out.
  std::optional<double> hostAttentionShare;
  // Candidates' host KV pools hold whole contexts (Plan::wholeContextPool).
  bool wholeContextPool = false;
  // The plan takes in new prompts as its sequences finish (a job's plan):
  // the winner is the one whose steady state, refill passes included, makes
  // the most new tokens a second. False (a tail's plan, which admits none):
  // the fastest decode step.
  bool refills = true;
};

// The prefill micro-batch (sequences) whose memory the search reserves.
int64_t reservedPrefillMicroBatch(const SearchOptions &options,
                                  int64_t residentBatch, int64_t promptTokens);

struct Candidate {
  Plan plan;
  MemoryUse memory;
  StepTraffic decodeTraffic;
  Roofline decodeRoofline;
  double decodeStepSeconds = 0;
  double decodeTokensPerSecond = 0;
  // The H2D stream's busy time in the step, and the host-KV loads' part.
  double decodeH2dSeconds = 0;
  double decodeKvLoadSeconds = 0;
  // The step's streamed weights: what a prefill pass streams besides its
  // prompts' work, from which moe-run derives its refill slots.
  double decodeWeightCopySeconds = 0;
  // The job's steady state (priceRefills): refill when `refillSlots` slots
  // are free, a pass of `refill.prompts` prompts costing
  // `refillPassSeconds`, and the new tokens a second that makes.
  int64_t refillSlots = 1;
  RefillCycle refill;
  double refillPassSeconds = 0;
  double jobTokensPerSecond = 0;
};

// Checks memory, then prices one decode step. An infeasible plan fails with
// checkMemory's message naming the pool and the shortfall.
Result<Candidate> evaluatePlan(const ModelCosts &model,
                               const HardwareProfile &profile,
                               const Plan &plan);

// Prices `candidate`'s steady state as moe-run refills it: the slots from
// refillSlots over its streamed weights, the pass of the prompts a cycle
// takes in as its prefill DAG, and the tokens a second of the cycle. A
// cycle that refills the whole batch takes `wholeBatchPassSeconds` where
// the caller has priced that pass already.
Status priceRefills(const ModelCosts &model, const HardwareProfile &profile,
                    Candidate &candidate,
                    std::optional<double> wholeBatchPassSeconds = {});

struct RunnerUp {
  Plan plan;
  // Absent when infeasible; the job's rate also where the runner-ups are
  // not ranked by it (a tail's plan).
  std::optional<double> decodeTokensPerSecond;
  std::optional<double> jobTokensPerSecond;
  std::string whyLost; // "slower by 12.5% (...)" or "infeasible: host ...".
};

struct PlanChoice {
  Candidate best;
  Evaluation decode; // The best plan's decode step, for per-stage reports.
  Evaluation prefill; // Its prefill of all B prompts, likewise.
  double prefillSeconds = 0;
  double prefillTokensPerSecond = 0;
  std::vector<RunnerUp> runnerUps; // Fastest first, infeasible ones last.
  size_t candidatesEvaluated = 0;
};

// Searches B, decode b_a, b_e, prefetch depth and KV placement, and for
// each plan with host KV the host's share of decode attention (ω) that
// balances the host's cores against the H2D link; for each it
// makes resident the longest prefix of the greedy residency order that fits
// (more residency never slows a step, so that prefix is the best resident
// set of the order). Candidates are ranked by their decode step. The
// winner's prefill micro-batch is then the fastest feasible one, at least
// the reserved one; with `options.refills` the fastest of each value of
// each variable get theirs too, are priced as whole jobs, and the fastest
// job wins. Fails when no candidate fits, naming pool and shortfall.
Result<PlanChoice> selectPlan(const ModelCosts &model,
                              const HardwareProfile &profile,
                              const GenerationLengths &lengths,
                              const SearchOptions &options = {});

} // namespace moe::costmodel
