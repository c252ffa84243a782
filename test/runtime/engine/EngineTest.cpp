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
    int64_t kvPoolTokens = 0, int32_t wholeSlots = 0) {
  HistoryBackend backend;
  EngineOptions options;
  options.residentBatch = residentBatch;
  options.maxContext = kContext;
  options.eosTokenIds = {kEos};
  options.sampling = sampling;
  options.parallelSamplingLogits = parallelSamplingLogits;
  backend.holdKv(residentBatch, kContext, kPageTokens, kvPoolTokens,
                 wholeSlots);
  Engine engine(backend, kVocab, options);
  size_t next = 0;
  RunResult result;
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
        EXPECT_TRUE(
            result.completions.emplace(index, std::move(completion)).second);
        return Status::success();
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
        if (sampling.temperature == 0)
          EXPECT_EQ(got.outputIds, expected(request).outputIds);
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

// Asked to stop, the engine returns between steps without finishing the
// sequences in flight: what completed is all it gave.
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
