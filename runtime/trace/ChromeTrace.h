// Timelines in Chrome's trace event format (JSON), the format Perfetto
// (ui.perfetto.dev) and chrome://tracing open: one process per timeline (the
// plan's predicted decode step, a backend's measured one), one track per
// stream, one span per job or op, so a schedule and what ran can be read
// side by side.
#pragma once

#include "runtime/support/Result.h"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe {

struct TraceSpan {
  std::string name;     // "layer 3 attention 2/16"
  std::string category; // the stage: "attention", "weight copy", ...
  double startSeconds = 0, seconds = 0;
  std::vector<std::pair<std::string, std::string>> args; // shown on select
};

/// "layer 3 attention", or `what` alone for work of no layer (layer < 0):
/// how every timeline names the work of a model layer (0-based).
std::string layerSpanName(int layer, std::string_view what);

class ChromeTrace {
public:
  /// Adds a timeline; returns its index for addTrack and addSpan.
  int addTimeline(std::string name);
  /// Tracks appear in the order they are named first, by either call.
  void addTrack(int timeline, const std::string &track);
  void addSpan(int timeline, const std::string &track, TraceSpan span);

  /// Writes the trace as JSON to `path`; errors name the file.
  Status write(const std::string &path) const;
  std::string json() const;

private:
  struct Timeline {
    std::string name;
    std::vector<std::string> tracks;
    std::vector<std::pair<int, TraceSpan>> spans; // (track, span)
    int trackIndex(const std::string &track);
  };
  std::vector<Timeline> timelines_;
};

} // namespace moe
