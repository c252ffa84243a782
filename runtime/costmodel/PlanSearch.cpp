#include "runtime/costmodel/PlanSearch.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <tuple>

namespace moe::costmodel {
namespace {

// Weight memory as a function of the residency prefix length k, so the
// search finds the longest prefix that fits without re-accounting the model
// for every k. Must agree with accountMemory.
struct ResidencyLadder {
  std::vector<int64_t> residentBytes; // Index k: prefix of k units.
  std::vector<int64_t> hostWeightBytes;
  std::vector<int64_t> maxLayerCopied; // Largest ring slot a layer needs.
};

ResidencyLadder buildLadder(const ModelCosts &model) {
  std::vector<std::vector<int64_t>> units;
  std::vector<int64_t> layerCopied(model.layers.size(), 0);
  int64_t hostWeights = 0;
  for (size_t l = 0; l < model.layers.size(); ++l) {
    units.emplace_back(model.layers[l].modules.size(), 0);
    for (const ModuleCosts &module : model.layers[l].modules) {
      hostWeights += module.weightBytes;
      if (module.kind != ModuleKind::Embedding)
        layerCopied[l] += module.weightBytes;
    }
  }
  std::multiset<int64_t> copiedByLayer(layerCopied.begin(), layerCopied.end());

  ResidencyLadder ladder;
  int64_t resident = 0;
  auto record = [&] {
    ladder.residentBytes.push_back(resident);
    ladder.hostWeightBytes.push_back(hostWeights);
    ladder.maxLayerCopied.push_back(*copiedByLayer.rbegin());
  };
  record();
  for (const ResidencyStep &step : residencyOrder(model)) {
    const ModuleCosts &module = model.layers[step.layer].modules[step.module];
    int64_t &count = units[step.layer][step.module];
    int64_t delta = residentWeightBytes(module, count + 1) -
                    residentWeightBytes(module, count);
    ++count;
    resident += delta;
    hostWeights -= delta;
    if (module.kind != ModuleKind::Embedding) {
      copiedByLayer.erase(copiedByLayer.find(layerCopied[step.layer]));
      layerCopied[step.layer] -= delta;
      copiedByLayer.insert(layerCopied[step.layer]);
    }
    record();
  }
  return ladder;
}

// Pool use of a plan for each residency prefix length k.
class PrefixMemory {
public:
  PrefixMemory(const ModelCosts &model, const ResidencyLadder &ladder,
               const Plan &plan)
      : ladder_(ladder), depth_(plan.prefetchDepth) {
    Plan streamed = plan;
    streamed.resident = {};
    MemoryUse use = accountMemory(model, streamed);
    gpuBesideWeights_ =
        use.gpuBytes() - use.residentWeightBytes - use.weightRingBytes;
    hostBesideWeights_ = use.hostBytes() - use.hostWeightBytes;
  }

  int64_t prefixes() const { return int64_t(ladder_.residentBytes.size()); }
  int64_t gpuBytes(int64_t k) const {
    return gpuBesideWeights_ + ladder_.residentBytes[k] +
           depth_ * ladder_.maxLayerCopied[k];
  }
  int64_t hostBytes(int64_t k) const {
    return hostBesideWeights_ + ladder_.hostWeightBytes[k];
  }

private:
  const ResidencyLadder &ladder_;
  int64_t depth_;
  int64_t gpuBesideWeights_ = 0;
  int64_t hostBesideWeights_ = 0;
};

// The longest residency prefix with which the plan fits both pools.
std::optional<int64_t> longestFittingPrefix(const PrefixMemory &memory,
                                            const HardwareProfile &profile) {
  for (int64_t k = memory.prefixes() - 1; k >= 0; --k) {
    // Host use only grows as k shrinks.
    if (memory.hostBytes(k) > profile.hostBudgetBytes())
      return std::nullopt;
    if (memory.gpuBytes(k) <= profile.gpuBudgetBytes())
      return k;
  }
  return std::nullopt;
}

// For a plan that fits with no prefix: the prefix that misses by the least
// in total, so its diagnostic names the pool that really is too small.
int64_t nearestMiss(const PrefixMemory &memory,
                    const HardwareProfile &profile) {
  int64_t nearest = 0;
  int64_t smallestShortfall = std::numeric_limits<int64_t>::max();
  for (int64_t k = 0; k < memory.prefixes(); ++k) {
    int64_t shortfall =
        std::max<int64_t>(0, memory.gpuBytes(k) - profile.gpuBudgetBytes()) +
        std::max<int64_t>(0, memory.hostBytes(k) - profile.hostBudgetBytes());
    if (shortfall < smallestShortfall) {
      smallestShortfall = shortfall;
      nearest = k;
    }
  }
  return nearest;
}

std::vector<int64_t> geometricBatches(int64_t maxBatch) {
  std::vector<int64_t> batches;
  for (int step = 0;; ++step) {
    auto batch = int64_t(std::llround(std::pow(2.0, step / 2.0)));
    if (batch > maxBatch)
      break;
    if (batches.empty() || batches.back() != batch)
      batches.push_back(batch);
  }
  return batches;
}

std::vector<int64_t> microBatchGrid(const std::vector<int64_t> &chosen,
                                    int64_t batch, int64_t smallest) {
  std::vector<int64_t> grid;
  if (!chosen.empty()) {
    // A micro-batch larger than B is all of B.
    for (int64_t size : chosen)
      grid.push_back(std::min(size, batch));
  } else {
    for (int64_t size = 1; size < batch; size *= 2)
      if (size >= smallest)
        grid.push_back(size);
    grid.push_back(batch);
  }
  std::sort(grid.begin(), grid.end());
  grid.erase(std::unique(grid.begin(), grid.end()), grid.end());
  return grid;
}

std::string describe(const Plan &plan) {
  return fmt::format(
      "B={} b_a={} b_e={} depth={} KV on GPU {:.0f}% host attention {:.0f}%",
      plan.residentBatch, plan.attentionMicroBatchDecode, plan.expertMicroBatch,
      plan.prefetchDepth, 100 * plan.kvGpuFraction,
      100 * plan.cpuAttentionShare);
}

// The host's share of the host-KV sequences that balances the two paths
// of a decode step: the H2D link busy for `linkSeconds` at ω = 0, of which
// the KV loads take `loadSeconds`, against the host attending its share of
// the same KV; as a share of all B sequences. 0 where the host cannot help.
double balancedHostShare(const ModelCosts &model,
                         const HardwareProfile &profile,
                         const Candidate &candidate) {
  const Plan &plan = candidate.plan;
  double kvBytes = candidate.decodeTraffic.kvBytesToGpu;
  double linkSeconds = candidate.decodeH2dSeconds;
  double loadSeconds = candidate.decodeKvLoadSeconds;
  if (plan.hostKvSequences() == 0 || kvBytes <= 0 || loadSeconds <= 0)
    return 0;
  int64_t headsPerKvHead = 1;
  for (const LayerCosts &layer : model.layers)
    for (const ModuleCosts &module : layer.modules)
      if (module.attentionHeads && module.attentionHeads->kvHeads > 0)
        headsPerKvHead =
            module.attentionHeads->heads / module.attentionHeads->kvHeads;
  std::optional<double> hostSeconds = profile.hostAttentionSeconds(
      kvBytes, model.kvDtype, headsPerKvHead, /*whileCopying=*/true);
  if (!hostSeconds || *hostSeconds <= 0)
    return 0;
  // linkSeconds − ω·loadSeconds = ω·hostSeconds.
  double hostKvShare =
      std::min(1.0, linkSeconds / (loadSeconds + *hostSeconds));
  int64_t sequences =
      std::llround(hostKvShare * double(plan.hostKvSequences()));
  return double(sequences) / double(plan.residentBatch);
}

// Names a variable and one of its values; the search keeps the best
// candidate per key, so runner-ups show what each alternative value costs.
using VariableKey = std::pair<std::string, double>;

constexpr double kTieTolerance = 1e-3;

} // namespace

int64_t reservedPrefillMicroBatch(const SearchOptions &options,
                                  int64_t residentBatch, int64_t promptTokens) {
  return std::clamp<int64_t>(options.prefillChunkTokens / promptTokens, 1,
                             residentBatch);
}

Result<Candidate> evaluatePlan(const ModelCosts &model,
                               const HardwareProfile &profile,
                               const Plan &plan) {
  MOE_RETURN_IF_ERROR(validateModelCosts(model));
  MOE_RETURN_IF_ERROR(validatePlan(model, plan));
  Candidate candidate;
  candidate.plan = plan;
  candidate.memory = accountMemory(model, plan);
  MOE_RETURN_IF_ERROR(checkMemory(candidate.memory, profile));
  auto step = buildDecodeStepDag(model, plan, profile);
  MOE_RETURN_IF_ERROR(step);
  auto evaluation = evaluate(step->dag);
  MOE_RETURN_IF_ERROR(evaluation);
  candidate.decodeTraffic = step->traffic;
  candidate.decodeRoofline = rooflineOf(step->traffic, profile);
  candidate.decodeStepSeconds = evaluation->makespan;
  candidate.decodeH2dSeconds = evaluation->busy(Stream::HostToDevice);
  candidate.decodeKvLoadSeconds = evaluation->stage(Stage::KvLoad);
  candidate.decodeWeightCopySeconds = evaluation->stage(Stage::WeightCopy);
  candidate.decodeTokensPerSecond =
      evaluation->makespan > 0
          ? double(plan.residentBatch) / evaluation->makespan
          : 0;
  return candidate;
}

Status priceRefills(const ModelCosts &model, const HardwareProfile &profile,
                    Candidate &candidate,
                    std::optional<double> wholeBatchPassSeconds) {
  const Plan &plan = candidate.plan;
  const LengthDistribution &generated = plan.lengths.generated;
  candidate.refillSlots = refillSlots(plan.residentBatch, generated.mean(),
                                      candidate.decodeStepSeconds,
                                      candidate.decodeWeightCopySeconds);
  candidate.refill =
      refillCycle(plan.residentBatch, generated, candidate.refillSlots);
  if (wholeBatchPassSeconds && candidate.refill.prompts == plan.residentBatch) {
    candidate.refillPassSeconds = *wholeBatchPassSeconds;
  } else {
    MOE_ASSIGN_OR_RETURN(
        StepDag pass,
        buildPrefillDag(model, plan, profile, candidate.refill.prompts));
    MOE_ASSIGN_OR_RETURN(Evaluation evaluation, evaluate(pass.dag));
    candidate.refillPassSeconds = evaluation.makespan;
  }
  candidate.jobTokensPerSecond =
      refilledTokensPerSecond(candidate.refill, candidate.decodeStepSeconds,
                              candidate.refillPassSeconds);
  return Status::success();
}

namespace {

// A candidate with its prefill chosen, and that prefill of its B prompts.
struct Finalist {
  Candidate candidate;
  Evaluation prefill;
  double prefillSeconds = 0;
};

// The prefill attention micro-batch and expert micro-batch b_e of
// `candidate`: the fastest prefill that still fits, the rest of the plan
// fixed and b_e among those that price the decode step as the candidate
// does (decode rarely gives an expert b_e rows, prefill does); of equally
// fast ones the largest micro-batch (fewer, fuller attention launches in the
// backend's chunks), then the largest b_e (fewer expert GEMMs).
Result<Finalist> withFastestPrefill(const ModelCosts &model,
                                    const HardwareProfile &profile,
                                    const SearchOptions &options,
                                    const Candidate &candidate) {
  const Plan &found = candidate.plan;
  std::vector<int64_t> expertBatches = {found.expertMicroBatch};
  for (int64_t expertBatch : options.expertMicroBatches) {
    if (expertBatch == found.expertMicroBatch)
      continue;
    Plan plan = found;
    plan.expertMicroBatch = expertBatch;
    auto other = evaluatePlan(model, profile, plan);
    if (other.ok() &&
        other->decodeTokensPerSecond >= candidate.decodeTokensPerSecond)
      expertBatches.push_back(expertBatch);
  }
  std::vector<int64_t> microBatches =
      microBatchGrid(options.prefillMicroBatches, found.residentBatch, 1);
  microBatches.push_back(found.attentionMicroBatchPrefill);
  Finalist finalist{candidate, {}, 0};
  Plan &chosen = finalist.candidate.plan;
  for (int64_t expertBatch : expertBatches)
    for (int64_t microBatch : microBatches) {
      // The backend's KV staging buffers hold the larger of the two
      // attention micro-batches; accountMemory counts the decode one.
      if (found.hostKvSequences() > 0 &&
          microBatch > found.attentionMicroBatchDecode)
        continue;
      Plan plan = found;
      plan.attentionMicroBatchPrefill = microBatch;
      plan.expertMicroBatch = expertBatch;
      MemoryUse memory = accountMemory(model, plan);
      if (!checkMemory(memory, profile).ok())
        continue;
      MOE_ASSIGN_OR_RETURN(StepDag prefill,
                           buildPrefillDag(model, plan, profile));
      MOE_ASSIGN_OR_RETURN(Evaluation evaluation, evaluate(prefill.dag));
      bool faster = finalist.prefillSeconds == 0 ||
                    evaluation.makespan < finalist.prefillSeconds;
      bool asFast = evaluation.makespan == finalist.prefillSeconds;
      if (faster ||
          (asFast && microBatch > chosen.attentionMicroBatchPrefill) ||
          (asFast && microBatch == chosen.attentionMicroBatchPrefill &&
           expertBatch > chosen.expertMicroBatch)) {
        finalist.prefillSeconds = evaluation.makespan;
        finalist.prefill = std::move(evaluation);
        chosen.attentionMicroBatchPrefill = microBatch;
        chosen.expertMicroBatch = expertBatch;
        finalist.candidate.memory = memory;
      }
    }
  return finalist;
}

} // namespace

Result<PlanChoice> selectPlan(const ModelCosts &model,
                              const HardwareProfile &profile,
                              const GenerationLengths &lengths,
                              const SearchOptions &options) {
  MOE_RETURN_IF_ERROR(validateModelCosts(model));
  if (lengths.prompts.shortest() <= 0 || lengths.generated.shortest() < 0)
    return makeError("plan search: prompt lengths must be positive and "
                     "generation lengths non-negative");
  std::vector<int64_t> batches = options.residentBatches;
  if (batches.empty())
    batches = geometricBatches(options.maxResidentBatch);
  std::sort(batches.begin(), batches.end());
  batches.erase(std::unique(batches.begin(), batches.end()), batches.end());
  auto positive = [](const std::vector<int64_t> &values) {
    return std::all_of(values.begin(), values.end(),
                       [](int64_t value) { return value > 0; });
  };
  if (batches.empty() || options.expertMicroBatches.empty() ||
      options.prefetchDepths.empty() || options.kvGpuFractions.empty() ||
      !positive(batches) || !positive(options.decodeMicroBatches) ||
      !positive(options.prefillMicroBatches) ||
      !positive(options.expertMicroBatches) ||
      !positive(options.prefetchDepths))
    return makeError("plan search: candidate lists must hold positive values "
                     "and only the micro-batch lists may be empty");

  // The CUDA backend keeps recurrent states (lightning attention) on the
  // GPU and refuses a plan that keeps some sequences in host memory: such a
  // model's plans keep all KV on the GPU.
  bool statesOnGpu = std::any_of(
      model.layers.begin(), model.layers.end(), [](const LayerCosts &layer) {
        return std::any_of(layer.modules.begin(), layer.modules.end(),
                           [](const ModuleCosts &module) {
                             return module.stateBytesPerSequence > 0;
                           });
      });
  bool hostMeasured =
      profile.hostAttentionSeconds(1, model.kvDtype, 1, true).has_value();
  std::optional<double> fixedShare = options.hostAttentionShare;
  if (fixedShare && *fixedShare > 0 && !(hostCanAttend(model) && hostMeasured))
    return makeError("plan search: a host attention share needs softmax "
                     "attention in every layer and the profile's host_cpu "
                     "attention measurements for {} KV",
                     model::kvDtypeName(model.kvDtype));
  bool balanceHost = !fixedShare && hostCanAttend(model) && hostMeasured;
  ResidencyLadder ladder = buildLadder(model);
  std::optional<Candidate> best;
  std::map<VariableKey, Candidate> bestPerValue;
  // Per setting of the other variables, the first B that did not fit.
  std::map<std::tuple<double, int64_t, int64_t>, std::pair<Plan, std::string>>
      firstMisfit;
  std::optional<std::string> smallestMisfit;
  size_t evaluated = 0;
  // `plan` (its resident set fitted) priced at its host share, and where
  // the host's cores can attend also at the share balancing them against
  // the link (memory is the same).
  auto variantsOf = [&](Plan plan) -> Result<std::vector<Candidate>> {
    std::vector<Candidate> variants;
    MOE_ASSIGN_OR_RETURN(Candidate candidate,
                         evaluatePlan(model, profile, plan));
    ++evaluated;
    variants.push_back(std::move(candidate));
    if (balanceHost) {
      plan.cpuAttentionShare = balancedHostShare(model, profile, variants[0]);
      if (plan.cpuAttentionShare > 0) {
        MOE_ASSIGN_OR_RETURN(Candidate shared,
                             evaluatePlan(model, profile, plan));
        ++evaluated;
        variants.push_back(std::move(shared));
      }
    }
    return variants;
  };

  for (double fraction : options.kvGpuFractions) {
    if (statesOnGpu && fraction < 1)
      continue;
    for (int64_t depth : options.prefetchDepths)
      for (int64_t expertBatch : options.expertMicroBatches)
        for (int64_t batch : batches) {
          bool anyFits = false;
          std::optional<std::pair<Plan, std::string>> misfit;
          for (int64_t microBatch : microBatchGrid(options.decodeMicroBatches,
                                                   batch, (batch + 63) / 64)) {
            Plan plan;
            plan.residentBatch = batch;
            plan.attentionMicroBatchPrefill = reservedPrefillMicroBatch(
                options, batch, lengths.promptTokens());
            plan.attentionMicroBatchDecode = microBatch;
            plan.expertMicroBatch = expertBatch;
            plan.prefetchDepth = depth;
            plan.kvStagingBuffers = options.kvStagingBuffers;
            plan.kvGpuFraction = fraction;
            plan.lengths = lengths;
            plan.wholeContextPool = options.wholeContextPool;
            MOE_RETURN_IF_ERROR(validatePlan(model, plan));
            PrefixMemory memory(model, ladder, plan);
            std::optional<int64_t> prefix =
                longestFittingPrefix(memory, profile);
            if (!prefix) {
              if (!misfit) {
                plan.resident =
                    residentPrefix(model, nearestMiss(memory, profile));
                Status fits = checkMemory(accountMemory(model, plan), profile);
                misfit.emplace(plan, fits.ok() ? "no resident set fits"
                                               : fits.error().message());
              }
              continue;
            }
            plan.resident = residentPrefix(model, *prefix);
            if (fixedShare) {
              plan.cpuAttentionShare = *fixedShare;
              if (plan.cpuAttentionSequences() > plan.hostKvSequences())
                continue;
            }
            MOE_ASSIGN_OR_RETURN(std::vector<Candidate> variants,
                                 variantsOf(plan));
            anyFits = true;
            for (Candidate &variant : variants) {
              double rate = variant.decodeTokensPerSecond;
              for (VariableKey key :
                   {VariableKey{"B", double(batch)},
                    VariableKey{"kv", fraction},
                    VariableKey{"depth", double(depth)},
                    VariableKey{"b_e", double(expertBatch)},
                    VariableKey{"host attention",
                                variant.plan.cpuAttentionShare > 0}}) {
                auto [it, inserted] = bestPerValue.try_emplace(key, variant);
                if (!inserted && rate > it->second.decodeTokensPerSecond)
                  it->second = variant;
              }
              if (!best || rate > best->decodeTokensPerSecond)
                best = std::move(variant);
            }
          }
          // Memory only grows with B, so larger B cannot fit either.
          if (!anyFits) {
            if (!smallestMisfit)
              smallestMisfit = fmt::format("({}): {}", describe(misfit->first),
                                           misfit->second);
            firstMisfit.try_emplace({fraction, depth, expertBatch},
                                    std::move(*misfit));
            break;
          }
        }
  }

  std::string statesNote =
      statesOnGpu ? "; the model's lightning attention states stay on the "
                    "GPU, and with them all of its sequences' KV"
                  : "";
  if (!best && !smallestMisfit)
    return makeError("no plan: no candidate keeps all KV on the GPU (KV "
                     "share 1){}",
                     statesNote);
  if (!best)
    return makeError("no plan fits the memory budgets; smallest candidate "
                     "{}{}",
                     *smallestMisfit, statesNote);

  // Between the best B and the next grid value, which did not fit or ran
  // slower: the largest B that fits with the best's other variables, where
  // it is faster (where the link binds, a step's time hardly grows with B,
  // so the grid's √2 steps leave up to 40% of the rate in memory unused).
  // Memory grows with B, so the largest that fits is found by bisection.
  std::optional<Candidate> larger;
  if (options.residentBatches.empty()) {
    auto above = std::upper_bound(batches.begin(), batches.end(),
                                  best->plan.residentBatch);
    int64_t fits = best->plan.residentBatch;
    int64_t misses = above == batches.end()
                         ? options.maxResidentBatch + 1
                         : std::min(*above, options.maxResidentBatch + 1);
    while (misses - fits > std::max<int64_t>(1, fits / 64)) {
      Plan plan = best->plan;
      plan.residentBatch = fits + (misses - fits) / 2;
      plan.attentionMicroBatchPrefill = reservedPrefillMicroBatch(
          options, plan.residentBatch, lengths.promptTokens());
      plan.cpuAttentionShare = fixedShare.value_or(0);
      PrefixMemory memory(model, ladder, plan);
      std::optional<int64_t> prefix = longestFittingPrefix(memory, profile);
      if (!prefix || (fixedShare &&
                      plan.cpuAttentionSequences() > plan.hostKvSequences())) {
        misses = plan.residentBatch;
        continue;
      }
      plan.resident = residentPrefix(model, *prefix);
      MOE_ASSIGN_OR_RETURN(std::vector<Candidate> variants, variantsOf(plan));
      fits = plan.residentBatch;
      larger.reset();
      for (Candidate &variant : variants)
        if (!larger ||
            variant.decodeTokensPerSecond > larger->decodeTokensPerSecond)
          larger = std::move(variant);
    }
    if (larger && larger->decodeTokensPerSecond > best->decodeTokensPerSecond)
      std::swap(best, larger);
  }

  // The whole job: the finalists (the fastest decode of each value of each
  // variable, and the other of the bisection's pair), each with its fastest
  // prefill, priced with their refill passes; the fastest job wins. Without
  // generated tokens there are no decode steps to weigh passes against.
  auto samePlan = [](const Plan &a, const Plan &b) {
    return a.residentBatch == b.residentBatch &&
           a.attentionMicroBatchDecode == b.attentionMicroBatchDecode &&
           a.expertMicroBatch == b.expertMicroBatch &&
           a.prefetchDepth == b.prefetchDepth &&
           a.kvGpuFraction == b.kvGpuFraction &&
           a.cpuAttentionShare == b.cpuAttentionShare;
  };
  const bool rankByJob = options.refills && lengths.generated.mean() > 0;
  auto objective = [&](const Candidate &candidate) {
    return rankByJob ? candidate.jobTokensPerSecond
                     : candidate.decodeTokensPerSecond;
  };
  // Keyed by the plan as the search found it: choosing the prefill may
  // change its b_e.
  std::vector<std::pair<Plan, Finalist>> finalists;
  auto finalize = [&](Candidate &candidate) -> Status {
    for (const auto &[plan, finalist] : finalists)
      if (samePlan(plan, candidate.plan)) {
        candidate = finalist.candidate;
        return Status::success();
      }
    Plan found = candidate.plan;
    MOE_ASSIGN_OR_RETURN(
        Finalist finalist,
        withFastestPrefill(model, profile, options, candidate));
    // Its prefill of all B prompts is the pass that refills a whole batch.
    if (options.refills)
      MOE_RETURN_IF_ERROR(priceRefills(model, profile, finalist.candidate,
                                       finalist.prefillSeconds));
    candidate = finalist.candidate;
    finalists.emplace_back(found, std::move(finalist));
    return Status::success();
  };
  MOE_RETURN_IF_ERROR(finalize(*best));
  Plan winnerAsFound = finalists.front().first;
  Finalist chosen = finalists.front().second;
  if (rankByJob) {
    if (larger)
      MOE_RETURN_IF_ERROR(finalize(*larger));
    for (auto &entry : bestPerValue)
      MOE_RETURN_IF_ERROR(finalize(entry.second));
    for (const auto &[plan, finalist] : finalists)
      if (objective(finalist.candidate) > objective(chosen.candidate)) {
        winnerAsFound = plan;
        chosen = finalist;
      }
  }

  PlanChoice choice;
  choice.best = chosen.candidate;
  choice.candidatesEvaluated = evaluated;
  auto decodeStep = buildDecodeStepDag(model, choice.best.plan, profile);
  MOE_RETURN_IF_ERROR(decodeStep);
  auto decode = evaluate(decodeStep->dag);
  MOE_RETURN_IF_ERROR(decode);
  choice.decode = std::move(*decode);
  choice.prefill = std::move(chosen.prefill);
  choice.prefillSeconds = chosen.prefillSeconds;
  if (choice.prefillSeconds > 0)
    choice.prefillTokensPerSecond =
        double(choice.best.plan.residentBatch * lengths.promptTokens()) /
        choice.prefillSeconds;
  // Runner-ups: the best plan for each other value of each variable.
  std::vector<Candidate> alternatives;
  for (const auto &entry : bestPerValue) {
    const Candidate &candidate = entry.second; // lambdas capture no bindings
    if (samePlan(candidate.plan, choice.best.plan) ||
        samePlan(candidate.plan, winnerAsFound))
      continue;
    bool seen = std::any_of(alternatives.begin(), alternatives.end(),
                            [&](const Candidate &other) {
                              return samePlan(other.plan, candidate.plan);
                            });
    if (!seen)
      alternatives.push_back(candidate);
  }
  std::stable_sort(alternatives.begin(), alternatives.end(),
                   [&](const Candidate &a, const Candidate &b) {
                     return objective(a) > objective(b);
                   });
  // The first B that does not fit, with the winner's other settings, shows
  // what bounds B; it keeps a place among the runner-ups.
  auto misfit = firstMisfit.find({winnerAsFound.kvGpuFraction,
                                  winnerAsFound.prefetchDepth,
                                  winnerAsFound.expertMicroBatch});
  size_t feasibleSlots = options.maxRunnerUps;
  if (misfit != firstMisfit.end() && feasibleSlots > 0)
    --feasibleSlots;
  double bestRate = objective(choice.best);
  // Within 0.1% an alternative is an equal choice, not a loser.
  auto loses = [&](const Candidate &candidate) {
    return objective(candidate) <= (1 - kTieTolerance) * bestRate;
  };
  auto runnerUp = [&](const Candidate &candidate) {
    double rate = objective(candidate);
    double slower = 100 * (bestRate - rate) / bestRate;
    std::optional<double> job;
    if (rankByJob)
      job = rate;
    return RunnerUp{
        candidate.plan, candidate.decodeTokensPerSecond, job,
        rankByJob
            ? fmt::format("slower by {:.1f}% ({:.1f} vs {:.1f} new tok/s of "
                          "the job; decode {:.1f} tok/s)",
                          slower, rate, bestRate,
                          candidate.decodeTokensPerSecond)
            : fmt::format("slower by {:.1f}% ({:.1f} vs {:.1f} decode tok/s)",
                          slower, rate, bestRate)};
  };
  // The best plan with the other host setting (the host's cores attending
  // or not) keeps a place too: it shows what the host's share is worth.
  auto otherHost = bestPerValue.find(
      {"host attention", choice.best.plan.cpuAttentionShare > 0 ? 0.0 : 1.0});
  bool keepOtherHost = otherHost != bestPerValue.end() &&
                       loses(otherHost->second) && feasibleSlots > 0;
  if (keepOtherHost)
    --feasibleSlots;
  for (const Candidate &candidate : alternatives) {
    if (choice.runnerUps.size() >= feasibleSlots)
      break;
    if (loses(candidate) &&
        !(keepOtherHost && samePlan(candidate.plan, otherHost->second.plan)))
      choice.runnerUps.push_back(runnerUp(candidate));
  }
  if (keepOtherHost) {
    RunnerUp other = runnerUp(otherHost->second);
    auto rate = [&](const RunnerUp &r) {
      return rankByJob ? *r.jobTokensPerSecond : *r.decodeTokensPerSecond;
    };
    auto at =
        std::find_if(choice.runnerUps.begin(), choice.runnerUps.end(),
                     [&](const RunnerUp &r) { return rate(r) < rate(other); });
    choice.runnerUps.insert(at, std::move(other));
  }
  if (misfit != firstMisfit.end() && options.maxRunnerUps > 0)
    choice.runnerUps.push_back({misfit->second.first, std::nullopt,
                                std::nullopt,
                                "infeasible: " + misfit->second.second});
  return choice;
}

} // namespace moe::costmodel
