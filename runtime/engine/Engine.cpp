#include "runtime/engine/Engine.h"

#include "runtime/support/Parallel.h"

#include <algorithm>

namespace moe {
namespace {
using Clock = std::chrono::steady_clock;
double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}
} // namespace

Engine::Engine(Backend &backend, int32_t vocabSize, EngineOptions options)
    : backend_(&backend), vocabSize_(vocabSize), options_(std::move(options)),
      slots_(static_cast<size_t>(options_.residentBatch)) {}

Status Engine::finish(int32_t slot, Completion ending,
                      const CompletionSink &sink) {
  Slot &s = slots_[slot];
  ending.index = s.request->index;
  ending.promptTokens = int64_t(s.request->promptIds.size());
  ending.outputIds = std::move(s.output);
  ending.logprobs = std::move(s.logprobs);
  s = Slot{};
  backend_->resetSlot(slot);
  return sink(std::move(ending));
}

Completion Engine::ending(Slot &s, int32_t token) const {
  Completion ending;
  auto holds = [token](const std::vector<int32_t> &ids) {
    return std::find(ids.begin(), ids.end(), token) != ids.end();
  };
  if (holds(options_.eosTokenIds)) {
    ending.finishReason = "eos";
  } else if (holds(s.request->stopTokenIds)) {
    ending.finishReason = "stop";
    ending.stop = token;
  } else if (s.stops) {
    Result<std::optional<StopStrings::Match>> match = s.stops->push(token);
    if (!match.ok()) {
      ending.finishReason = "error";
      ending.error = fmt::format("{}: looking for its stop strings: {}",
                                 s.request->origin, match.error().message());
    } else if (*match) {
      ending.finishReason = "stop";
      ending.stop = (*match)->stop;
      ending.textBytes = (*match)->textBytes;
    }
  }
  if (!ending.finishReason.empty())
    return ending;
  if (static_cast<int32_t>(s.output.size()) >= s.request->maxNewTokens)
    ending.finishReason = "length";
  else if (s.length + 1 >= options_.maxContext)
    ending.finishReason = "context";
  return ending;
}

// Why `request` cannot run here; empty when it can.
std::string Engine::refusal(const Request &request) const {
  if (!request.error.empty())
    return request.error;
  std::string why;
  int64_t length = int64_t(request.promptIds.size());
  if (length == 0 || length >= options_.maxContext)
    why = fmt::format("the prompt has {} tokens; this job takes 1 to {}",
                      length, options_.maxContext - 1);
  for (int32_t id : request.promptIds)
    if (why.empty() && (id < 0 || id >= vocabSize_))
      why = fmt::format("token id {} is outside the model's vocabulary of {}",
                        id, vocabSize_);
  if (why.empty() && !request.stopStrings.empty() && !options_.tokenizer)
    why = "stop strings need the checkpoint's tokenizer.json";
  if (why.empty() && request.topLogprobs > kMaxTopLogprobs)
    why = fmt::format("at most {} top log-probabilities a token",
                      kMaxTopLogprobs);
  if (why.empty() || request.origin.empty())
    return why;
  return request.origin + ": " + why;
}

int64_t Engine::nextPageTokens(int64_t cached) const {
  return std::min<int64_t>(cached + backend_->kvPages().pageTokens(),
                           options_.maxContext);
}

Status Engine::nextRequest(const RequestSource &source, Status &sourceError,
                           bool &exhausted, const CompletionSink &sink) {
  while (!waiting_ && !exhausted) {
    Result<std::optional<Request>> next = source();
    if (!next.ok()) {
      sourceError = next.error();
      exhausted = true;
    } else if (!*next) {
      exhausted = true;
    } else if (std::string why = refusal(**next); !why.empty()) {
      ++stats_.prompts;
      MOE_RETURN_IF_ERROR(sink(Completion{(*next)->index, {}, "error", why}));
    } else {
      waiting_ = std::move(**next);
    }
  }
  return Status::success();
}

Status Engine::refill(const RequestSource &source, Status &sourceError,
                      bool &exhausted, const CompletionSink &sink) {
  StepBatch batch;
  stepSlots_.clear();
  const KvPages &pages = backend_->kvPages();
  // Pages left once every resident sequence has its next page: a pool that
  // holds every slot's whole context always has those for a free slot.
  int64_t spare = pages.freePages();
  for (int32_t slot = 0; slot < int32_t(slots_.size()); ++slot)
    if (slots_[slot].request)
      spare -= pages.pagesToGrow(slot, nextPageTokens(slots_[slot].length));
  auto fits = [&](int32_t slot, int64_t cached) {
    int64_t taken = pages.pagesToGrow(slot, nextPageTokens(cached));
    if (taken > spare)
      return false;
    spare -= taken;
    return true;
  };
  for (int32_t slot = 0; slot < int32_t(slots_.size()); ++slot) {
    if (slots_[slot].request)
      continue;
    if (!paused_.empty()) {
      // Its cache again: the prompt and every output but the newest, which
      // the next decode step feeds.
      Slot &resumed = paused_.front();
      if (!fits(slot, resumed.length))
        break;
      const Request &request = *resumed.request;
      for (int32_t position = 0; position < resumed.length; ++position) {
        size_t prompt = request.promptIds.size();
        batch.tokenIds.push_back(
            position < int32_t(prompt)
                ? request.promptIds[size_t(position)]
                : resumed.output[size_t(position) - prompt]);
        batch.rows.push_back({slot, position});
      }
      stats_.recomputedTokens += resumed.length;
      if (resumed.switched)
        stats_.phaseSwitches.back().recomputedTokens += resumed.length;
      resumed.switched = false;
      slots_[slot] = std::move(resumed);
      paused_.erase(paused_.begin());
      continue;
    }
    MOE_RETURN_IF_ERROR(nextRequest(source, sourceError, exhausted, sink));
    if (!waiting_ || !fits(slot, int64_t(waiting_->promptIds.size())))
      break;
    Request request = std::move(*waiting_);
    waiting_.reset();
    int32_t promptLength = static_cast<int32_t>(request.promptIds.size());
    for (int32_t position = 0; position < promptLength; ++position) {
      batch.tokenIds.push_back(request.promptIds[position]);
      batch.rows.push_back({slot, position});
    }
    batch.logitRows.push_back(static_cast<int32_t>(batch.rows.size()) - 1);
    stepSlots_.push_back(slot);
    Slot &s = slots_[slot];
    s.sampler.emplace(request.sampling.value_or(options_.sampling),
                      request.seeded ? 0
                                     : static_cast<uint64_t>(request.index));
    if (!request.stopStrings.empty())
      s.stops.emplace(*options_.tokenizer, request.stopStrings);
    s.length = promptLength;
    s.admission = admissions_++;
    s.request = std::move(request);
    ++stats_.prompts;
  }
  bool resident = std::any_of(slots_.begin(), slots_.end(),
                              [](const Slot &s) { return s.request; });
  if (!resident && (waiting_ || !paused_.empty()))
    return makeError("a KV pool of {} pages of {} tokens admits no sequence "
                     "although no sequence holds any",
                     pages.pages(), pages.pageTokens());
  if (batch.rows.empty())
    return Status::success();
  auto start = Clock::now();
  MOE_RETURN_IF_ERROR(forward(batch));
  stats_.prefillSeconds += secondsSince(start);
  stats_.prefillTokens += static_cast<int64_t>(batch.rows.size());
  ++stats_.prefillSteps;
  return Status::success();
}

Status Engine::forward(const StepBatch &batch) {
  sampledStep_ =
      std::any_of(stepSlots_.begin(), stepSlots_.end(), [&](int32_t slot) {
        const Slot &s = slots_[slot];
        return !s.sampler->greedy() || s.request->topLogprobs >= 0;
      });
  if (!sampledStep_)
    return backend_->forwardGreedy(batch, stepTokens_);
  return backend_->forward(batch, logits_);
}

Status Engine::advance(const std::vector<int32_t> &slots,
                       const CompletionSink &sink) {
  auto start = Clock::now();
  std::vector<int32_t> &tokens = stepTokens_;
  if (sampledStep_) {
    tokens.resize(slots.size());
    auto sampleRow = [&](size_t row) {
      std::span<const float> logits(logits_.data() + row * vocabSize_,
                                    static_cast<size_t>(vocabSize_));
      Slot &s = slots_[slots[row]];
      if (!allFinite(logits.data(), logits.size())) {
        tokens[row] = kNotFinite;
        return;
      }
      tokens[row] = s.sampler->sample(logits);
      if (s.request->topLogprobs >= 0)
        s.logprobs.push_back(
            logprobsOf(logits, tokens[row], s.request->topLogprobs));
    };
    if (int64_t(slots.size()) * vocabSize_ >= options_.parallelSamplingLogits)
      runOnAllCores(slots.size(), sampleRow);
    else
      for (size_t row = 0; row < slots.size(); ++row)
        sampleRow(row);
  }
  if (tokens.size() != slots.size())
    return makeError("the backend picked {} tokens for {} sequences",
                     tokens.size(), slots.size());
  for (size_t row = 0; row < slots.size(); ++row) {
    int32_t slot = slots[row];
    Slot &s = slots_[slot];
    int32_t token = tokens[row];
    if (token == kNotFinite) {
      Completion failed;
      failed.finishReason = "error";
      failed.error = fmt::format(
          "{}: the logits of its token {} hold NaN or Inf (the weights or "
          "activations overflowed)",
          s.request->origin, s.output.size());
      MOE_RETURN_IF_ERROR(finish(slot, std::move(failed), sink));
      continue;
    }
    s.output.push_back(token);
    ++stats_.newTokens;
    if (Completion end = ending(s, token); !end.finishReason.empty())
      MOE_RETURN_IF_ERROR(finish(slot, std::move(end), sink));
  }
  stats_.samplingSeconds += secondsSince(start);
  return Status::success();
}

void Engine::pauseForPages() {
  const KvPages &pages = backend_->kvPages();
  while (true) {
    int64_t needed = 0;
    int32_t latest = -1;
    for (int32_t slot = 0; slot < int32_t(slots_.size()); ++slot) {
      const Slot &s = slots_[slot];
      if (!s.request || !pages.paged(slot))
        continue;
      needed += pages.pagesToGrow(slot, s.length + 1);
      if (latest < 0 || s.admission > slots_[latest].admission)
        latest = slot;
    }
    // A sequence alone always fits: the pool holds one whole context.
    if (needed <= pages.freePages() || latest < 0)
      return;
    pause(latest);
    ++stats_.pausedSequences;
  }
}

void Engine::pause(int32_t slot) {
  Slot &s = slots_[slot];
  auto at = std::upper_bound(
      paused_.begin(), paused_.end(), s.admission,
      [](int64_t admission, const Slot &p) { return admission < p.admission; });
  paused_.insert(at, std::move(s));
  s = Slot{};
  backend_->resetSlot(slot);
}

Status Engine::maybeSwitchPhase(bool &switched) {
  switched = false;
  std::vector<LiveSequence> live;
  for (const Slot &s : slots_)
    if (s.request)
      live.push_back(
          {int32_t(s.output.size()), s.request->maxNewTokens, s.length});
  std::optional<PhaseChange> change = options_.phaseSwitch->decide(live);
  if (!change)
    return Status::success();
  auto failed = [&](const Error &error) {
    return error.withContext(fmt::format("entering phase '{}'", change->phase));
  };
  // Paused as for pages, so the refill resumes them on the next backend
  // before anything else, their samplers' state intact.
  for (int32_t slot = 0; slot < int32_t(slots_.size()); ++slot) {
    if (!slots_[slot].request)
      continue;
    slots_[slot].switched = true;
    pause(slot);
  }
  auto start = Clock::now();
  Result<std::pair<Backend *, int32_t>> next =
      options_.phaseSwitch->enter(*change);
  if (!next.ok())
    return failed(next.error());
  double enterSeconds = secondsSince(start);
  backend_ = next->first;
  slots_.assign(size_t(std::max(next->second, 0)), Slot{});
  if (Status fits = checkSlots(); !fits.ok())
    return failed(fits.error());
  stats_.phaseSwitches.push_back({stats_.decodeSteps, change->phase,
                                  change->why, std::move(live), enterSeconds});
  switched = true;
  return Status::success();
}

Status Engine::checkSlots() const {
  if (slots_.empty())
    return makeError("the job runs no slots");
  if (backend_->kvPages().slots() < int32_t(slots_.size()))
    return makeError("the backend holds KV pages for {} slots, the job runs "
                     "{} (prepare it for the job's batch)",
                     backend_->kvPages().slots(), slots_.size());
  return Status::success();
}

Status Engine::decodeStep() {
  pauseForPages();
  StepBatch batch;
  stepSlots_.clear();
  for (int32_t slot = 0; slot < int32_t(slots_.size()); ++slot) {
    Slot &s = slots_[slot];
    if (!s.request)
      continue;
    batch.tokenIds.push_back(s.output.back());
    batch.rows.push_back({slot, s.length});
    stats_.decodeContextTokens += s.length + 1;
    batch.logitRows.push_back(static_cast<int32_t>(batch.rows.size()) - 1);
    stepSlots_.push_back(slot);
    ++s.length;
  }
  if (batch.rows.empty())
    return Status::success();
  stats_.peakActiveSequences = std::max(
      stats_.peakActiveSequences, static_cast<int32_t>(batch.rows.size()));
  auto start = Clock::now();
  MOE_RETURN_IF_ERROR(forward(batch));
  stats_.decodeSeconds += secondsSince(start);
  const KvPages &pages = backend_->kvPages();
  stats_.peakKvPages =
      std::max(stats_.peakKvPages, pages.pages() - pages.freePages());
  stats_.decodeTokens += static_cast<int64_t>(batch.rows.size());
  ++stats_.decodeSteps;
  return Status::success();
}

Status Engine::run(const RequestSource &source, const CompletionSink &sink,
                   const ProgressCallback &progress) {
  Status sourceError;
  bool exhausted = false;
  auto active = [&] {
    return std::any_of(slots_.begin(), slots_.end(),
                       [](const Slot &s) { return s.request.has_value(); });
  };
  MOE_RETURN_IF_ERROR(checkSlots());
  while (true) {
    if (options_.stopRequested && options_.stopRequested())
      return makeError("{}", kInterrupted);
    int32_t free =
        int32_t(std::count_if(slots_.begin(), slots_.end(), [](const Slot &s) {
          return !s.request.has_value();
        }));
    bool refillPays =
        free >= std::min(options_.refillSlots, int32_t(slots_.size())) ||
        !active();
    if ((!exhausted || waiting_ || !paused_.empty()) && refillPays) {
      MOE_RETURN_IF_ERROR(refill(source, sourceError, exhausted, sink));
      // The prefill gives each new sequence its first token.
      std::vector<int32_t> admitted = stepSlots_;
      if (!admitted.empty())
        MOE_RETURN_IF_ERROR(advance(admitted, sink));
    }
    if (!active()) {
      if (exhausted && !waiting_ && paused_.empty())
        break;
      continue; // every admitted sequence finished at once: refill again
    }
    // At most one switch between decode steps: a decision that keeps asking
    // for one cannot stall the job.
    bool steppedSinceSwitch =
        stats_.phaseSwitches.empty() ||
        stats_.phaseSwitches.back().decodeStep < stats_.decodeSteps;
    if (options_.phaseSwitch && exhausted && !waiting_ && paused_.empty() &&
        steppedSinceSwitch) {
      bool switched = false;
      MOE_RETURN_IF_ERROR(maybeSwitchPhase(switched));
      if (switched)
        continue; // the refill resumes the paused sequences
    }
    MOE_RETURN_IF_ERROR(decodeStep());
    std::vector<int32_t> stepped = stepSlots_;
    MOE_RETURN_IF_ERROR(advance(stepped, sink));
    if (progress)
      progress(stats_);
  }
  if (progress)
    progress(stats_);
  return sourceError;
}

} // namespace moe
