// Module-based batching, the engine's side: B sequences stay resident in
// slots; new prompts are prefilled together (the backend runs them layer by
// layer, each layer's weights once for all of them); then every decode step
// runs one token of every resident sequence. A finished sequence (EOS, its
// token budget, or the context limit) leaves and the next prompt takes its
// slot (continuous refill), once EngineOptions::refillSlots slots are free:
// a prefill pass that streams weights costs as much for one prompt as for
// many.
//
// Where the backend's KV pool holds less than every slot's whole context
// (KvPages), sequences take pages as they grow. A sequence is admitted when
// its prompt and its next page fit beside the next page of every sequence
// already resident; when a decode step would need more pages than are free,
// the sequences admitted last are paused (their KV given back) until pages
// free up, then resumed before any new prompt, their context recomputed by
// a prefill. Their samplers keep their state, so no answer changes.
//
// Once every request has been admitted, a job may switch phase between
// steps (EngineOptions::phaseSwitch): its live sequences are paused the same
// way, the next phase's backend (other slots, other weights resident) takes
// over, and they resume on it.
#pragma once

#include "runtime/engine/Backend.h"
#include "runtime/engine/Sampler.h"
#include "runtime/tokenizer/StopStrings.h"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace moe {

struct Request {
  int64_t index = 0; // position in the input, 0-based
  std::vector<int32_t> promptIds;
  int32_t maxNewTokens = 0;
  // Generation also stops at any of these ids (beside the job's EOS ids) and
  // once its text holds any of these strings (EngineOptions::tokenizer).
  std::vector<int32_t> stopTokenIds;
  std::vector<std::string> stopStrings;
  // Its own sampling, instead of the job's (EngineOptions::sampling); with
  // `seeded`, its seed alone starts its random stream (the same request and
  // seed sample the same answer), else the seed and the request's index.
  std::optional<SamplingParams> sampling;
  bool seeded = false;
  // 0 to kMaxTopLogprobs: the answer carries each new token's
  // log-probability (logprobsOf) and that many alternatives; -1: none.
  int32_t topLogprobs = -1;
  // Why the request cannot run (a malformed line, an unsupported field);
  // empty when it can. It completes at once with this error.
  std::string error;
  // Where it came from ("prompts.jsonl:12"), naming it in errors.
  std::string origin;
};

struct Completion {
  int64_t index = 0;
  std::vector<int32_t> outputIds;
  // "eos", "stop", "length", "context" or "error".
  std::string finishReason;
  std::string error; // set when finishReason is "error"
  // What a "stop" stopped at: one of the request's stop strings or stop
  // token ids. The answer's text leaves it out: it is the text of outputIds
  // cut at textBytes (a string), or of all but the last id (a token).
  std::variant<std::monostate, std::string, int32_t> stop;
  size_t textBytes = 0;
  int64_t promptTokens = 0;
  // One per output id when the request asked for them.
  std::vector<TokenLogprobs> logprobs;
};

// A live sequence as a phase decision sees it.
struct LiveSequence {
  int32_t generated = 0;    // tokens it has produced so far
  int32_t maxNewTokens = 0; // its budget
  int32_t context = 0;      // tokens in its cache
};

// A change of phase a decision asks for, and why (for the stats).
struct PhaseChange {
  std::string phase; // the phase entered, e.g. "tail"
  std::string why;
};

// What the engine asks between steps once every request has been admitted,
// so a job's end can run on a plan made for few long sequences.
struct PhaseSwitch {
  // Asked before a decode step when the source is exhausted and no request
  // waits or is paused, with the live sequences in slot order: the phase to
  // enter, or none.
  std::function<std::optional<PhaseChange>(std::span<const LiveSequence>)>
      decide;
  // Releases the current backend's memory, then prepares the next phase's
  // backend; returns it (owned by the caller, valid until the next call or
  // the end of the job) and its number of slots.
  std::function<Result<std::pair<Backend *, int32_t>>(const PhaseChange &)>
      enter;
};

struct EngineOptions {
  int32_t residentBatch = 1; // B: slots (until a phase switch)
  int32_t maxContext = 0;    // prompt + generated tokens per slot
  std::vector<int32_t> eosTokenIds;
  // Decodes outputs for requests with stop strings (none: they are refused).
  const Tokenizer *tokenizer = nullptr;
  SamplingParams sampling; // of requests that do not bring their own
  // A step with at least this many logits samples its rows on all cores
  // (each row's sampler is its own, so the tokens are the same).
  int64_t parallelSamplingLogits = int64_t{1} << 22;
  // Asked between steps: when it says stop, run returns kInterrupted with
  // the sequences in flight unfinished (a resumed job redoes them).
  std::function<bool()> stopRequested;
  // Lets the job change backend for its end; none: it never does.
  std::optional<PhaseSwitch> phaseSwitch;
  // New prompts are taken in once this many slots are free (or none is
  // busy): each prefill pass of a streamed plan streams its weights again
  // (costmodel::refillSlots). 1: as soon as a slot frees.
  int32_t refillSlots = 1;
};

/// What Engine::run returns when stopRequested said stop.
inline constexpr std::string_view kInterrupted = "interrupted";

/// One change of phase: the live sequences were paused and resumed on the
/// next phase's backend, their contexts prefilled again.
struct PhaseSwitchStats {
  int64_t decodeStep = 0; // decode steps before it
  std::string phase, why;
  std::vector<LiveSequence> live;
  double enterSeconds = 0; // PhaseSwitch::enter
  int64_t recomputedTokens = 0;
};

struct EngineStats {
  int64_t prompts = 0;
  int64_t prefillTokens = 0, decodeTokens = 0;
  int64_t newTokens = 0; // sampled: one per prefilled prompt and decode row
  int64_t prefillSteps = 0, decodeSteps = 0;
  double prefillSeconds = 0, decodeSeconds = 0, samplingSeconds = 0;
  int32_t peakActiveSequences = 0;
  // Sequences paused for KV pages, and the tokens the resumption of those
  // and of phaseSwitches' sequences prefilled again (part of prefillTokens).
  int64_t pausedSequences = 0, recomputedTokens = 0;
  std::vector<PhaseSwitchStats> phaseSwitches;
  // Σ over decode rows of the context each attended (its cached tokens and
  // itself): over decodeTokens, the mean context the planner prices.
  int64_t decodeContextTokens = 0;
  // The most KV pages the backend held after a decode step.
  int64_t peakKvPages = 0;
};

/// Where requests come from: returns the next one (which may carry its own
/// error: it completes at once with it), nothing at the end, or an error
/// the job cannot go on after (the input cannot be read). After such an
/// error the engine finishes the sequences it holds and then returns it, so
/// no answer is lost.
using RequestSource = std::function<Result<std::optional<Request>>()>;
/// Receives each finished sequence, in completion order.
using CompletionSink = std::function<Status(Completion)>;
/// Called after every step with the completions so far.
using ProgressCallback = std::function<void(const EngineStats &)>;

class Engine {
public:
  Engine(Backend &backend, int32_t vocabSize, EngineOptions options);

  Status run(const RequestSource &source, const CompletionSink &sink,
             const ProgressCallback &progress = {});
  const EngineStats &stats() const { return stats_; }

private:
  struct Slot {
    std::optional<Request> request;
    std::vector<int32_t> output;
    std::vector<TokenLogprobs> logprobs;
    std::optional<Sampler> sampler;
    std::optional<StopStrings> stops;
    int32_t length = 0;    // tokens in the cache
    int64_t admission = 0; // order of admission: the latest is paused first
    // Paused by the latest phase switch, which its recompute is counted to.
    bool switched = false;
  };

  /// Fails unless there are slots and the backend holds KV pages for each.
  Status checkSlots() const;

  /// Resumes paused sequences and admits requests into free slots while
  /// the KV pages allow, and prefills them; a request that cannot run
  /// completes at once with its error. Sets `exhausted` when the source is
  /// empty or failed.
  Status refill(const RequestSource &source, Status &sourceError,
                bool &exhausted, const CompletionSink &sink);
  /// The next request to admit (waiting_, else the source's next that can
  /// run), or none.
  Status nextRequest(const RequestSource &source, Status &sourceError,
                     bool &exhausted, const CompletionSink &sink);
  /// Pauses the latest admitted sequences until the free KV pages hold
  /// every resident sequence's next token.
  void pauseForPages();
  /// Moves the slot's sequence into paused_, its KV given back.
  void pause(int32_t slot);
  /// Asks options_.phaseSwitch whether to change phase; if so, pauses every
  /// live sequence and takes the next phase's backend. Sets `switched`.
  Status maybeSwitchPhase(bool &switched);
  /// Tokens `cached` tokens grow to in the next page's worth of steps.
  int64_t nextPageTokens(int64_t cached) const;
  std::string refusal(const Request &request) const;
  Status decodeStep();
  /// The forward pass of a step: a step of greedy sequences that want no
  /// log-probabilities only takes the backend's picks (stepTokens_), any
  /// other the logits (logits_), which each sequence's sampler then reads
  /// (sampledStep_).
  Status forward(const StepBatch &batch);
  /// Gives each of the step's slots its next token; finishes slots.
  Status advance(const std::vector<int32_t> &slots, const CompletionSink &sink);
  /// Ends the slot's sequence as `ending` says (its reason, error, stop);
  /// the request's index and output go in here.
  Status finish(int32_t slot, Completion ending, const CompletionSink &sink);
  /// How the slot's newest token ends its sequence; no reason if it does not.
  Completion ending(Slot &s, int32_t token) const;

  Backend *backend_;
  int32_t vocabSize_;
  EngineOptions options_;
  std::vector<Slot> slots_;
  // Paused sequences in order of admission, and a request taken from the
  // source that waits for KV pages.
  std::vector<Slot> paused_;
  std::optional<Request> waiting_;
  int64_t admissions_ = 0;
  EngineStats stats_;
  std::vector<float> logits_;
  std::vector<int32_t> stepTokens_;
  std::vector<int32_t> stepSlots_;
  bool sampledStep_ = false;
};

} // namespace moe
