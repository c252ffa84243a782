// The engine against a backend whose next token is a known function of each
// sequence's history: what comes out must not depend on B or on how
// sequences share steps.

#include "runtime/engine/Engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <map>

namespace moe {
namespace {

constexpr int32_t kVocab = 50;
constexpr int32_t kEos = 7;
constexpr int32_t kContext = 64;
constexpr int32_t kPageTokens = 4;

/// Next token = f(history of the slot), as a peaked logit row.
int32_t nextToken(const std::vector<int32_t> &history) {
  int64_t hash = static_cast<int64_t>(history.size());
  for (int32_t token : history)
    hash = (hash * 31 + token) % 1000003;
  return static_cast<int32_t>(hash % kVocab);
}

class HistoryBackend : public Backend {
public:
  Status prepare(const LoadedPlan &, const WeightSet &, int32_t slots,
                 int32_t) override {
    histories.assign(static_cast<size_t>(slots), {});
    return Status::success();
  }
  void resetSlot(int32_t slot) override {
    histories[slot].clear();
    kvPages_.release(slot);
  }
  std::vector<StageTime> stageSeconds() const override { return {}; }
  /// KV in pages of `pageTokens` tokens, `poolTokens` in all (0: every
  /// slot's whole context) for all but the first `wholeSlots`, as a
  /// backend holds them.
  void holdKv(int32_t slots, int32_t maxContext, int32_t pageTokens,
              int64_t poolTokens, int32_t wholeSlots) {
    histories.assign(static_cast<size_t>(slots), {});
    kvPages_ = poolTokens > 0
                   ? *KvPages::create(slots, maxContext, pageTokens,
                                      poolTokens / pageTokens, wholeSlots)
                   : KvPages::wholeContext(slots, maxContext, pageTokens);
  }
  Status forward(const StepBatch &batch, std::vector<float> &logits) override {
    ++calls;
    maxRows = std::max(maxRows, batch.rows.size());
    std::vector<int32_t> lengths;
    for (const std::vector<int32_t> &history : histories)
      lengths.push_back(static_cast<int32_t>(history.size()));
    Result<std::vector<SlotRun>> runs =
        validateStepBatch(batch, lengths, kContext, kVocab);
    if (!runs.ok())
      return runs.error();
    MOE_RETURN_IF_ERROR(holdKvRows(batch, *runs, kvPages_));
    heldPages = std::max(heldPages, kvPages_.pages() - kvPages_.freePages());
    for (size_t row = 0; row < batch.rows.size(); ++row) {
      std::vector<int32_t> &history = histories[batch.rows[row].slot];
      if (batch.rows[row].position != static_cast<int32_t>(history.size()))
        return makeError("row {} at position {} but slot {} holds {}", row,
                         batch.rows[row].position, batch.rows[row].slot,
                         history.size());
      history.push_back(batch.tokenIds[row]);
    }
    logits.assign(batch.logitRows.size() * kVocab, 0.0f);
    for (size_t i = 0; i < batch.logitRows.size(); ++i) {
      int32_t slot = batch.rows[batch.logitRows[i]].slot;
      int32_t best = nextToken(histories[slot]);
      for (int32_t v = 0; v < kVocab; ++v)
        logits[i * kVocab + v] = -0.5f * float(std::abs(v - best));
    }
    return Status::success();
  }

  std::vector<std::vector<int32_t>> histories;
  size_t calls = 0, maxRows = 0;
  int64_t heldPages = 0; // the most KV pages held at once
};

std::vector<Request> makeRequests(int count) {
  std::vector<Request> requests;
  for (int i = 0; i < count; ++i) {
    Request request;
    request.index = i;
    for (int t = 0; t < 3 + i % 5; ++t)
      request.promptIds.push_back(10 + (i * 7 + t) % 30);
    request.maxNewTokens = 4 + i % 6;
    requests.push_back(request);
  }
  return requests;
}

/// A second phase on its own HistoryBackend of `slots` slots, entered the
/// first time the engine asks with at most `atLive` live sequences.
struct TailPhase {
  int32_t atLive = 0, slots = 0;
  int64_t poolTokens = 0;      // its KV pool, as HistoryBackend::holdKv
  int32_t pageSlots = 0;       // slots its KV pages hold (0: `slots`)
  std::string enterFailure;    // enter fails with it
  bool keepsSwitching = false; // asks for the phase again after entering it
  HistoryBackend backend;
  // What the decision saw: every call, and the live sequences and decode
  // steps done (by the progress callback) when it switched.
  int asked = 0, askedAfter = 0;
  std::optional<std::vector<LiveSequence>> seen;
  int64_t stepsSeen = 0, stepAtSwitch = -1;
  int64_t unfinished = 0;     // requests not completed
  bool firstReleased = false; // the first backend held nothing at enter
};

struct RunResult {
  Status status;
  std::map<int64_t, Completion> completions;
  EngineStats stats;
  int64_t heldPages = 0;
};

RunResult runEngine(
    int32_t residentBatch, const std::vector<Request> &requests,
    SamplingParams sampling = {}, int failAt = -1,
    int64_t parallelSamplingLogits = EngineOptions{}.parallelSamplingLogits,
    int64_t kvPoolTokens = 0, int32_t wholeSlots = 0, TailPhase *tail = nullptr,
    int32_t refillSlots = 1) {
  HistoryBackend backend;
  EngineOptions options;
  options.residentBatch = residentBatch;
  options.refillSlots = refillSlots;
  options.maxContext = kContext;
  options.eosTokenIds = {kEos};
  options.sampling = sampling;
  options.parallelSamplingLogits = parallelSamplingLogits;
  backend.holdKv(residentBatch, kContext, kPageTokens, kvPoolTokens,
                 wholeSlots);
  if (tail) {
    options.phaseSwitch = PhaseSwitch{
        [tail](
            std::span<const LiveSequence> live) -> std::optional<PhaseChange> {
          ++tail->asked;
          // Every request admitted and none paused: the live are the rest.
          EXPECT_EQ(int64_t(live.size()), tail->unfinished);
          if (tail->seen) {
            ++tail->askedAfter;
            if (!tail->keepsSwitching)
              return std::nullopt;
            return PhaseChange{"tail", "again"};
          }
          if (int32_t(live.size()) > tail->atLive)
            return std::nullopt;
          tail->seen.emplace(live.begin(), live.end());
          tail->stepAtSwitch = tail->stepsSeen;
          return PhaseChange{"tail", fmt::format("{} live", live.size())};
        },
        [tail, &backend](const PhaseChange &change)
            -> Result<std::pair<Backend *, int32_t>> {
          EXPECT_EQ(change.phase, "tail");
          tail->firstReleased =
              backend.kvPages().freePages() == backend.kvPages().pages() &&
              std::all_of(backend.histories.begin(), backend.histories.end(),
                          [](const auto &history) { return history.empty(); });
          if (!tail->enterFailure.empty())
            return makeError("{}", tail->enterFailure);
          tail->backend.holdKv(tail->pageSlots ? tail->pageSlots : tail->slots,
                               kContext, kPageTokens, tail->poolTokens, 0);
          return std::pair<Backend *, int32_t>{&tail->backend, tail->slots};
        }};
  }
  Engine engine(backend, kVocab, options);
  size_t next = 0;
  RunResult result;
  if (tail)
    tail->unfinished = int64_t(requests.size());
  result.status = engine.run(
      [&]() -> Result<std::optional<Request>> {
        if (static_cast<int>(next) == failAt)
          return makeError("prompts.jsonl: read error after line {}", failAt);
        if (next == requests.size())
          return std::optional<Request>();
        return std::optional<Request>(requests[next++]);
      },
      [&](Completion completion) {
        int64_t index = completion.index;
        if (tail)
          --tail->unfinished;
        EXPECT_TRUE(
            result.completions.emplace(index, std::move(completion)).second);
        return Status::success();
      },
      [tail](const EngineStats &stats) {
        if (tail)
          tail->stepsSeen = stats.decodeSteps;
      });
  result.stats = engine.stats();
  result.heldPages = backend.heldPages;
  EXPECT_LE(backend.maxRows, 64u * static_cast<size_t>(residentBatch));
  return result;
}

/// What one sequence alone produces, by the backend's rule.
Completion expected(const Request &request) {
  std::vector<int32_t> history = request.promptIds;
  Completion completion{request.index, {}, "length"};
  while (true) {
    int32_t token = nextToken(history);
    completion.outputIds.push_back(token);
    if (token == kEos) {
      completion.finishReason = "eos";
      break;
    }
    if (static_cast<int32_t>(completion.outputIds.size()) >=
        request.maxNewTokens)
      break;
    history.push_back(token);
  }
  return completion;
}

TEST(Engine, EveryPromptIsAnsweredAsIfAlone) {
  std::vector<Request> requests = makeRequests(23);
  for (int32_t batch : {1, 3, 8, 64}) {
    RunResult result = runEngine(batch, requests);
    ASSERT_TRUE(result.status.ok()) << result.status.error().message();
    ASSERT_EQ(result.completions.size(), requests.size()) << "B=" << batch;
    int64_t answered = 0, contexts = 0;
    for (const Request &request : requests) {
      Completion want = expected(request);
      const Completion &got = result.completions.at(request.index);
      EXPECT_EQ(got.outputIds, want.outputIds) << "B=" << batch;
      EXPECT_EQ(got.finishReason, want.finishReason) << "B=" << batch;
      answered += static_cast<int64_t>(got.outputIds.size());
      // The decode row of output k (k ≥ 1) attends the prompt, the k
      // outputs before it and itself.
      for (size_t k = 1; k < got.outputIds.size(); ++k)
        contexts += int64_t(request.promptIds.size() + k);
    }
    EXPECT_EQ(result.stats.decodeContextTokens, contexts) << "B=" << batch;
    // Every sampled token is an answer's: the prefill's first token of each
    // prompt plus one per decode row.
    EXPECT_EQ(result.stats.newTokens, answered) << "B=" << batch;
    EXPECT_EQ(result.stats.newTokens,
              result.stats.prompts + result.stats.decodeTokens)
        << "B=" << batch;
  }
}

// Asked for, every new token comes with its log-probability under the
// backend's logits and the most likely alternatives; greedy answers stay
// what they are without them.
TEST(Engine, LogprobsComeWithEveryNewToken) {
  std::vector<Request> requests = makeRequests(9);
  for (size_t i = 0; i < requests.size(); i += 2)
    requests[i].topLogprobs = int32_t(i % 4);
  RunResult result = runEngine(3, requests);
  ASSERT_TRUE(result.status.ok()) << result.status.error().message();
  for (const Request &request : requests) {
    const Completion &got = result.completions.at(request.index);
    EXPECT_EQ(got.outputIds, expected(request).outputIds);
    if (request.topLogprobs < 0) {
      EXPECT_TRUE(got.logprobs.empty());
      continue;
    }
    ASSERT_EQ(got.logprobs.size(), got.outputIds.size());
    for (const TokenLogprobs &token : got.logprobs) {
      // The greedy pick is the mode of the backend's peaked row.
      EXPECT_LT(token.logprob, 0.0f);
      ASSERT_EQ(int32_t(token.top.size()), request.topLogprobs);
      if (!token.top.empty()) {
        EXPECT_EQ(token.top[0].second, token.logprob);
      }
    }
  }
  Request tooMany = requests[0];
  tooMany.topLogprobs = kMaxTopLogprobs + 1;
  RunResult refused = runEngine(1, {tooMany});
  ASSERT_TRUE(refused.status.ok());
  EXPECT_EQ(refused.completions.at(0).finishReason, "error");
  EXPECT_EQ(refused.completions.at(0).error,
            "at most 20 top log-probabilities a token");
}

// A pool of KV pages smaller than B whole contexts: sequences wait for
// pages and are paused and resumed, and every answer, greedy or sampled, is
// the one the whole-context pool gives.
TEST(Engine, SequencesPausedForKvPagesAnswerAsIfNeverPaused) {
  std::vector<Request> requests = makeRequests(30);
  for (size_t i = 0; i < requests.size(); ++i)
    requests[i].maxNewTokens = 20 + int32_t(i * 7 % 37);
  for (SamplingParams sampling :
       {SamplingParams{}, SamplingParams{1.0f, 10, 0.9f, 99}}) {
    RunResult whole = runEngine(8, requests, sampling);
    // Room for 96 tokens: two sequences of the 64-token context at most,
    // against eight slots growing to up to 63 tokens each; then the same
    // with the first three slots holding their whole contexts outside it.
    for (int32_t wholeSlots : {0, 3}) {
      RunResult paged = runEngine(8, requests, sampling, -1,
                                  EngineOptions{}.parallelSamplingLogits,
                                  /*kvPoolTokens=*/96, wholeSlots);
      ASSERT_TRUE(whole.status.ok()) << whole.status.error().message();
      ASSERT_TRUE(paged.status.ok()) << paged.status.error().message();
      ASSERT_EQ(paged.completions.size(), requests.size());
      for (const Request &request : requests) {
        const Completion &got = paged.completions.at(request.index);
        EXPECT_EQ(got.outputIds, whole.completions.at(request.index).outputIds)
            << request.index;
        EXPECT_EQ(got.finishReason,
                  whole.completions.at(request.index).finishReason);
        if (sampling.temperature == 0) {
          EXPECT_EQ(got.outputIds, expected(request).outputIds);
        }
      }
      EXPECT_EQ(whole.stats.pausedSequences, 0);
      EXPECT_GT(paged.stats.pausedSequences, 0);
      EXPECT_GT(paged.stats.recomputedTokens, 0);
      EXPECT_LE(paged.heldPages, 96 / kPageTokens);
      EXPECT_GE(paged.heldPages, paged.stats.peakKvPages);
      EXPECT_GT(paged.stats.peakKvPages, 0);
      EXPECT_EQ(paged.stats.decodeContextTokens,
                whole.stats.decodeContextTokens);
      EXPECT_EQ(paged.stats.prefillTokens,
                whole.stats.prefillTokens + paged.stats.recomputedTokens);
    }
  }
}

/// 30 requests that run long enough for a job's end to hold few of them;
/// every third asks for log-probabilities.
std::vector<Request> longRequests() {
  std::vector<Request> requests = makeRequests(30);
  for (size_t i = 0; i < requests.size(); ++i) {
    requests[i].maxNewTokens = 20 + int32_t(i * 7 % 37);
    if (i % 3 == 0)
      requests[i].topLogprobs = 2;
  }
  return requests;
}

void expectSameAnswers(const RunResult &got, const RunResult &want) {
  ASSERT_EQ(got.completions.size(), want.completions.size());
  for (const auto &[index, completion] : want.completions) {
    const Completion &other = got.completions.at(index);
    EXPECT_EQ(other.outputIds, completion.outputIds) << index;
    EXPECT_EQ(other.finishReason, completion.finishReason) << index;
    ASSERT_EQ(other.logprobs.size(), completion.logprobs.size()) << index;
    for (size_t k = 0; k < completion.logprobs.size(); ++k) {
      EXPECT_EQ(other.logprobs[k].logprob, completion.logprobs[k].logprob);
      EXPECT_EQ(other.logprobs[k].top, completion.logprobs[k].top);
    }
  }
}

// Near the job's end the engine moves its live sequences to another
// backend with fewer slots: each is paused, then resumed there with its
// context recomputed (those beyond its slots as slots free up), and every
// answer, greedy or sampled, is the one without the switch. The stats name
// the switch and the tokens it recomputed apart from those of KV pages.
TEST(Engine, PhaseSwitchToAnotherBackendChangesNoAnswer) {
  std::vector<Request> requests = longRequests();
  struct Case {
    int32_t atLive, slots;
    int64_t poolTokens;
  };
  for (SamplingParams sampling :
       {SamplingParams{}, SamplingParams{1.0f, 10, 0.9f, 99}}) {
    RunResult plain = runEngine(8, requests, sampling);
    ASSERT_TRUE(plain.status.ok()) << plain.status.error().message();
    // Into 3 slots at 3 live or fewer; into 2 at 5 or fewer (the rest wait
    // for a slot); into 3 at 5 or fewer whose KV pool of one whole context
    // pauses some for pages as well.
    for (Case c : {Case{3, 3, 0}, Case{5, 2, 0}, Case{5, 3, 64}}) {
      SCOPED_TRACE(fmt::format("at {} live into {} slots, pool {}", c.atLive,
                               c.slots, c.poolTokens));
      TailPhase tail{c.atLive, c.slots, c.poolTokens};
      RunResult switched =
          runEngine(8, requests, sampling, -1,
                    EngineOptions{}.parallelSamplingLogits, 0, 0, &tail);
      ASSERT_TRUE(switched.status.ok()) << switched.status.error().message();
      expectSameAnswers(switched, plain);
      ASSERT_TRUE(tail.seen);
      const std::vector<LiveSequence> &seen = *tail.seen;
      ASSERT_EQ(switched.stats.phaseSwitches.size(), 1u);
      const PhaseSwitchStats &at = switched.stats.phaseSwitches[0];
      EXPECT_EQ(at.phase, "tail");
      EXPECT_EQ(at.why, fmt::format("{} live", seen.size()));
      EXPECT_EQ(at.decodeStep, tail.stepAtSwitch);
      EXPECT_GT(at.decodeStep, 0);
      EXPECT_GE(at.enterSeconds, 0);
      EXPECT_LE(int32_t(seen.size()), c.atLive);
      if (c.slots == 2) {
        EXPECT_GT(int32_t(seen.size()), c.slots);
      }
      ASSERT_EQ(at.live.size(), seen.size());
      int64_t contexts = 0;
      for (size_t i = 0; i < seen.size(); ++i) {
        EXPECT_EQ(at.live[i].generated, seen[i].generated);
        EXPECT_EQ(at.live[i].maxNewTokens, seen[i].maxNewTokens);
        EXPECT_EQ(at.live[i].context, seen[i].context);
        // A request's: its prompt and every output but the newest cached.
        EXPECT_TRUE(std::any_of(
            requests.begin(), requests.end(), [&](const Request &r) {
              return r.maxNewTokens == seen[i].maxNewTokens &&
                     int32_t(r.promptIds.size()) + seen[i].generated - 1 ==
                         seen[i].context;
            }));
        contexts += seen[i].context;
      }
      EXPECT_EQ(at.recomputedTokens, contexts);
      EXPECT_TRUE(tail.firstReleased);
      EXPECT_GT(tail.askedAfter, 0) << "asked again after the switch";
      EXPECT_GT(tail.backend.calls, 0u);
      const EngineStats &s = switched.stats;
      if (c.poolTokens == 0) {
        EXPECT_EQ(s.pausedSequences, 0);
        EXPECT_EQ(s.recomputedTokens, contexts);
      } else {
        EXPECT_GT(s.pausedSequences, 0);
        EXPECT_GT(s.recomputedTokens, contexts);
        EXPECT_LE(tail.backend.heldPages, c.poolTokens / kPageTokens);
      }
      EXPECT_EQ(s.prefillTokens,
                plain.stats.prefillTokens + s.recomputedTokens);
      EXPECT_EQ(s.prompts, plain.stats.prompts);
      EXPECT_EQ(s.newTokens, plain.stats.newTokens);
      EXPECT_EQ(s.decodeTokens, plain.stats.decodeTokens);
      EXPECT_EQ(s.decodeContextTokens, plain.stats.decodeContextTokens);
      EXPECT_EQ(s.peakActiveSequences, plain.stats.peakActiveSequences);
    }
  }
}

// A phase that cannot be entered ends the job with its error, named by the
// phase, after the answers completed before it; so does a backend whose KV
// pages hold fewer slots than it says it runs.
TEST(Engine, PhaseThatCannotBeEnteredEndsTheJob) {
  std::vector<Request> requests = longRequests();
  RunResult plain = runEngine(8, requests);
  ASSERT_TRUE(plain.status.ok()) << plain.status.error().message();
  TailPhase failing{3, 3};
  failing.enterFailure = "out of GPU memory";
  RunResult failed =
      runEngine(8, requests, {}, -1, EngineOptions{}.parallelSamplingLogits, 0,
                0, &failing);
  ASSERT_FALSE(failed.status.ok());
  EXPECT_EQ(failed.status.error().message(),
            "entering phase 'tail': out of GPU memory");
  ASSERT_TRUE(failing.seen);
  EXPECT_TRUE(failed.stats.phaseSwitches.empty());
  // Every request but those live at the switch was answered, as without it.
  EXPECT_EQ(failed.completions.size(), requests.size() - failing.seen->size());
  for (const auto &[index, completion] : failed.completions)
    EXPECT_EQ(completion.outputIds, plain.completions.at(index).outputIds);

  TailPhase narrow{3, 3};
  narrow.pageSlots = 2;
  RunResult refused =
      runEngine(8, requests, {}, -1, EngineOptions{}.parallelSamplingLogits, 0,
                0, &narrow);
  ASSERT_FALSE(refused.status.ok());
  EXPECT_EQ(refused.status.error().message(),
            "entering phase 'tail': the backend holds KV pages for 2 slots, "
            "the job runs 3 (prepare it for the job's batch)");
  EXPECT_EQ(narrow.backend.calls, 0u);
}

// A decision that asks for a switch whenever it is asked still lets the job
// finish, with the same answers: the engine asks it once per decode step.
TEST(Engine, PhaseSwitchAskedForAtEveryStepCannotStallTheJob) {
  std::vector<Request> requests = longRequests();
  RunResult plain = runEngine(8, requests);
  ASSERT_TRUE(plain.status.ok()) << plain.status.error().message();
  TailPhase restless{3, 3};
  restless.keepsSwitching = true;
  RunResult switched =
      runEngine(8, requests, {}, -1, EngineOptions{}.parallelSamplingLogits, 0,
                0, &restless);
  ASSERT_TRUE(switched.status.ok()) << switched.status.error().message();
  expectSameAnswers(switched, plain);
  const std::vector<PhaseSwitchStats> &switches = switched.stats.phaseSwitches;
  ASSERT_GT(switches.size(), 2u);
  for (size_t i = 1; i < switches.size(); ++i)
    EXPECT_EQ(switches[i].decodeStep, switches[i - 1].decodeStep + 1);
}

// A decision that never asks for a phase leaves the job as it was.
TEST(Engine, PhaseSwitchNeverAskedForChangesNothing) {
  std::vector<Request> requests = longRequests();
  RunResult plain = runEngine(8, requests);
  TailPhase never{0, 3}; // it is only asked with live sequences
  RunResult asked =
      runEngine(8, requests, {}, -1, EngineOptions{}.parallelSamplingLogits, 0,
                0, &never);
  ASSERT_TRUE(plain.status.ok() && asked.status.ok());
  expectSameAnswers(asked, plain);
  EXPECT_GT(never.asked, 0);
  EXPECT_FALSE(never.seen);
  EXPECT_EQ(never.backend.calls, 0u);
  const EngineStats &s = asked.stats, &p = plain.stats;
  EXPECT_TRUE(s.phaseSwitches.empty());
  EXPECT_EQ(s.prompts, p.prompts);
  EXPECT_EQ(s.prefillTokens, p.prefillTokens);
  EXPECT_EQ(s.decodeTokens, p.decodeTokens);
  EXPECT_EQ(s.newTokens, p.newTokens);
  EXPECT_EQ(s.prefillSteps, p.prefillSteps);
  EXPECT_EQ(s.decodeSteps, p.decodeSteps);
  EXPECT_EQ(s.peakActiveSequences, p.peakActiveSequences);
  EXPECT_EQ(s.pausedSequences, p.pausedSequences);
  EXPECT_EQ(s.recomputedTokens, p.recomputedTokens);
  EXPECT_EQ(s.decodeContextTokens, p.decodeContextTokens);
  EXPECT_EQ(s.peakKvPages, p.peakKvPages);
}

TEST(Engine, ContinuousRefillKeepsSlotsBusy) {
  std::vector<Request> requests = makeRequests(40);
  RunResult result = runEngine(4, requests);
  ASSERT_TRUE(result.status.ok());
  EXPECT_EQ(result.stats.prompts, 40);
  EXPECT_EQ(result.stats.peakActiveSequences, 4);
  // Refill admits new prompts while others decode, so there are far fewer
  // decode steps than a batch-at-a-time run (10 batches x up to 9 steps).
  EXPECT_LT(result.stats.decodeSteps, 10 * 9);
}

// Refilling once enough slots are free takes the same prompts in fewer
// prefill passes; no answer changes, greedy or sampled.
TEST(Engine, RefillWaitsForEnoughFreeSlotsAndChangesNoAnswer) {
  std::vector<Request> requests = makeRequests(40);
  for (SamplingParams sampling :
       {SamplingParams{}, SamplingParams{1.0f, 10, 0.9f, 99}}) {
    auto refillingAt = [&](int32_t slots) {
      return runEngine(8, requests, sampling, -1,
                       EngineOptions{}.parallelSamplingLogits, 0, 0, nullptr,
                       slots);
    };
    RunResult eager = refillingAt(1);
    RunResult batched = refillingAt(4);
    ASSERT_TRUE(eager.status.ok() && batched.status.ok());
    ASSERT_EQ(batched.completions.size(), requests.size());
    for (const Request &request : requests) {
      const Completion &got = batched.completions.at(request.index);
      EXPECT_EQ(got.outputIds, eager.completions.at(request.index).outputIds);
      if (sampling.temperature == 0)
        EXPECT_EQ(got.outputIds, expected(request).outputIds);
    }
    EXPECT_LT(batched.stats.prefillSteps, eager.stats.prefillSteps);
    EXPECT_EQ(batched.stats.prompts, eager.stats.prompts);
    // More than B slots asked for: refills wait for the batch to drain.
    RunResult drained = refillingAt(100);
    ASSERT_TRUE(drained.status.ok());
    EXPECT_EQ(drained.stats.prefillSteps, 5);
  }
}

TEST(Engine, SamplingOnAllCoresGivesTheSameTokens) {
  std::vector<Request> requests = makeRequests(31);
  for (SamplingParams sampling :
       {SamplingParams{}, SamplingParams{1.0f, 10, 0.9f, 99}}) {
    RunResult serial = runEngine(16, requests, sampling);
    RunResult parallel = runEngine(16, requests, sampling, -1,
                                   /*parallelSamplingLogits=*/0);
    ASSERT_TRUE(serial.status.ok() && parallel.status.ok());
    ASSERT_EQ(parallel.completions.size(), requests.size());
    for (const auto &[index, completion] : serial.completions)
      EXPECT_EQ(parallel.completions.at(index).outputIds, completion.outputIds)
          << index;
  }
}

TEST(Engine, SamplingDependsOnTheRequestNotTheBatch) {
  SamplingParams sampling{/*temperature=*/1.0f, /*topK=*/10, /*topP=*/0.9f,
                          /*seed=*/1234};
  std::vector<Request> requests = makeRequests(17);
  RunResult one = runEngine(1, requests, sampling);
  RunResult many = runEngine(5, requests, sampling);
  ASSERT_TRUE(one.status.ok() && many.status.ok());
  for (const Request &request : requests)
    EXPECT_EQ(one.completions.at(request.index).outputIds,
              many.completions.at(request.index).outputIds);
}

TEST(Engine, UnreadableInputFinishesWhatIsRunningThenFails) {
  std::vector<Request> requests = makeRequests(10);
  RunResult result = runEngine(4, requests, {}, /*failAt=*/6);
  ASSERT_FALSE(result.status.ok());
  EXPECT_EQ(result.status.error().message(),
            "prompts.jsonl: read error after line 6");
  // All six prompts read before the failure were answered.
  EXPECT_EQ(result.completions.size(), 6u);
}

// A request that cannot run (a bad line, a prompt longer than the context,
// an id outside the vocabulary) completes at once with its error, named by
// where it came from; the others run as if it were not there.
TEST(Engine, RequestsThatCannotRunCompleteWithTheirErrorAndTheJobGoesOn) {
  std::vector<Request> requests = makeRequests(6);
  RunResult clean = runEngine(2, requests);
  ASSERT_TRUE(clean.status.ok());
  requests[1].error = "prompts.jsonl:2: not a JSON object";
  requests[2].promptIds.assign(64, 11);
  requests[2].origin = "prompts.jsonl:3";
  requests[4].promptIds.push_back(kVocab);
  RunResult result = runEngine(2, requests);
  ASSERT_TRUE(result.status.ok()) << result.status.error().message();
  ASSERT_EQ(result.completions.size(), requests.size());
  EXPECT_EQ(result.completions.at(1).error,
            "prompts.jsonl:2: not a JSON object");
  EXPECT_EQ(result.completions.at(2).error,
            "prompts.jsonl:3: the prompt has 64 tokens; this job takes 1 to "
            "63");
  EXPECT_EQ(result.completions.at(4).error,
            fmt::format("token id {} is outside the model's vocabulary of {}",
                        kVocab, kVocab));
  for (int64_t index : {1, 2, 4}) {
    EXPECT_EQ(result.completions.at(index).finishReason, "error");
    EXPECT_TRUE(result.completions.at(index).outputIds.empty());
  }
  for (int64_t index : {0, 3, 5})
    EXPECT_EQ(result.completions.at(index).outputIds,
              clean.completions.at(index).outputIds);
}

// A request's stop token ids end it as EOS does, named as its stop; stop
// strings without a tokenizer to decode the output are refused.
TEST(Engine, StopTokenIdsEndARequestAndStopStringsNeedATokenizer) {
  std::vector<Request> requests = makeRequests(6);
  for (Request &request : requests) {
    request.maxNewTokens = 40;
    std::vector<int32_t> alone = expected(request).outputIds;
    ASSERT_GE(alone.size(), 3u);
    request.stopTokenIds = {alone[2], 49};
  }
  requests[5].stopStrings = {"never"};
  RunResult result = runEngine(2, requests);
  ASSERT_TRUE(result.status.ok()) << result.status.error().message();
  for (size_t i = 0; i < 5; ++i) {
    // What the request gives alone, up to its first stop id or EOS.
    std::vector<int32_t> want = expected(requests[i]).outputIds;
    const std::vector<int32_t> &stops = requests[i].stopTokenIds;
    auto first = std::find_if(want.begin(), want.end(), [&](int32_t id) {
      return id == kEos ||
             std::find(stops.begin(), stops.end(), id) != stops.end();
    });
    ASSERT_NE(first, want.end());
    want.erase(first + 1, want.end());
    const Completion &got = result.completions.at(int64_t(i));
    EXPECT_EQ(got.outputIds, want) << "request " << i;
    if (want.back() == kEos) {
      EXPECT_EQ(got.finishReason, "eos");
    } else {
      EXPECT_EQ(got.finishReason, "stop");
      EXPECT_EQ(std::get<int32_t>(got.stop), want.back());
    }
  }
  const Completion &refused = result.completions.at(5);
  EXPECT_EQ(refused.finishReason, "error");
  EXPECT_NE(refused.error.find("stop strings need the checkpoint's "
                               "tokenizer.json"),
            std::string::npos)
      << refused.error;
}

// Logits holding NaN or Inf end that request with an error naming its
// token; the others complete, greedy (the backend's picks) or sampled (the
// engine's check).
TEST(Engine, LogitsThatAreNotFiniteFailTheirRequestOnly) {
  class PoisonedBackend : public HistoryBackend {
  public:
    Status forward(const StepBatch &batch,
                   std::vector<float> &logits) override {
      MOE_RETURN_IF_ERROR(HistoryBackend::forward(batch, logits));
      for (size_t i = 0; i < batch.logitRows.size(); ++i) {
        const std::vector<int32_t> &history =
            histories[batch.rows[batch.logitRows[i]].slot];
        if (history.front() == 13 && history.size() >= 5)
          logits[i * kVocab + 3] = std::numeric_limits<float>::quiet_NaN();
      }
      return Status::success();
    }
  };
  for (float temperature : {0.0f, 0.7f}) {
    std::vector<Request> requests = makeRequests(5);
    requests[2].promptIds = {13, 14};
    requests[2].origin = "prompts.jsonl:3";
    for (Request &request : requests)
      request.maxNewTokens = 8;
    PoisonedBackend backend;
    EngineOptions options;
    options.residentBatch = 2;
    options.maxContext = 64;
    options.sampling.temperature = temperature;
    backend.holdKv(2, kContext, kPageTokens, 0, 0);
    Engine engine(backend, kVocab, options);
    size_t next = 0;
    std::map<int64_t, Completion> done;
    Status status = engine.run(
        [&]() -> Result<std::optional<Request>> {
          if (next == requests.size())
            return std::optional<Request>();
          return std::optional<Request>(requests[next++]);
        },
        [&](Completion completion) {
          done.emplace(completion.index, std::move(completion));
          return Status::success();
        });
    ASSERT_TRUE(status.ok()) << status.error().message();
    ASSERT_EQ(done.size(), requests.size());
    for (const auto &[index, completion] : done) {
      if (index != 2) {
        EXPECT_NE(completion.finishReason, "error") << completion.error;
        continue;
      }
      EXPECT_EQ(completion.finishReason, "error");
      // The prompt's 2 tokens and 3 generated make the history poisoned.
      EXPECT_EQ(completion.error,
                "prompts.jsonl:3: the logits of its token 3 hold NaN or Inf "
                "(the weights or activations overflowed)");
    }
  }
}

// Asked to stop, the engine returns between steps without finishing the
// sequences in flight: what completed is all it gave.
TEST(Engine, StopsBetweenStepsWhenAsked) {
  std::vector<Request> requests = makeRequests(8);
  HistoryBackend backend;
  backend.holdKv(2, kContext, kPageTokens, 0, 0);
  EngineOptions options;
  options.residentBatch = 2;
  options.maxContext = 64;
  int steps = 0;
  options.stopRequested = [&] { return ++steps > 3; };
  Engine engine(backend, kVocab, options);
  size_t next = 0, completed = 0;
  Status status = engine.run(
      [&]() -> Result<std::optional<Request>> {
        if (next == requests.size())
          return std::optional<Request>();
        return std::optional<Request>(requests[next++]);
      },
      [&](Completion) {
        ++completed;
        return Status::success();
      });
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().message(), kInterrupted);
  EXPECT_LT(completed, requests.size());
  EXPECT_LE(next, 4u) << "no request admitted after the stop";
}

} // namespace
} // namespace moe

namespace moe {
namespace {

// The backends a job ran on one after another: what they moved and the
// time per stage add up, the memory held is the most either held.
TEST(BackendTotals, FlowsAddUpAndHeldMemoryIsTheMost) {
  struct Fixed : HistoryBackend {
    BackendCounters moved;
    std::vector<StageTime> stages;
    BackendCounters counters() const override { return moved; }
    std::vector<StageTime> stageSeconds() const override { return stages; }
  };
  Fixed first, second;
  first.moved.weightBytesToDevice = 10;
  first.moved.graphCaptureSeconds = 0.5;
  first.moved.pinnedHostBytes = 100;
  first.stages = {{"decode", "attention", 1.0}};
  second.moved.weightBytesToDevice = 5;
  second.moved.graphKernelLaunches = 7;
  second.moved.pinnedHostBytes = 40;
  second.stages = {{"decode", "attention", 2.0}, {"prefill", "norm", 0.25}};
  BackendTotals totals = BackendTotals{}.with(first).with(second);
  EXPECT_EQ(totals.counters.weightBytesToDevice, 15);
  EXPECT_EQ(totals.counters.graphKernelLaunches, 7);
  EXPECT_DOUBLE_EQ(totals.counters.graphCaptureSeconds, 0.5);
  EXPECT_EQ(totals.counters.pinnedHostBytes, 100);
  ASSERT_EQ(totals.stages.size(), 2u);
  EXPECT_DOUBLE_EQ(totals.stages[0].seconds, 3.0);
  EXPECT_EQ(totals.stages[1].stage, "norm");
}

} // namespace
} // namespace moe
