#include "runtime/trace/ChromeTrace.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>

namespace moe {

std::string layerSpanName(int layer, std::string_view what) {
  return layer < 0 ? std::string(what)
                   : fmt::format("layer {} {}", layer, what);
}

int ChromeTrace::addTimeline(std::string name) {
  timelines_.push_back({std::move(name), {}, {}});
  return static_cast<int>(timelines_.size()) - 1;
}

int ChromeTrace::Timeline::trackIndex(const std::string &track) {
  auto found = std::find(tracks.begin(), tracks.end(), track);
  if (found == tracks.end())
    found = tracks.insert(tracks.end(), track);
  return int(found - tracks.begin());
}

void ChromeTrace::addTrack(int timeline, const std::string &track) {
  timelines_.at(size_t(timeline)).trackIndex(track);
}

void ChromeTrace::addSpan(int timeline, const std::string &track,
                          TraceSpan span) {
  Timeline &t = timelines_.at(size_t(timeline));
  t.spans.emplace_back(t.trackIndex(track), std::move(span));
}

std::string ChromeTrace::json() const {
  using nlohmann::json;
  json events = json::array();
  // Timestamps are microseconds; pid/tid number timelines and tracks from 1
  // (some viewers drop pid 0).
  for (size_t p = 0; p < timelines_.size(); ++p) {
    const Timeline &t = timelines_[p];
    int pid = int(p) + 1;
    events.push_back({{"ph", "M"},
                      {"name", "process_name"},
                      {"pid", pid},
                      {"args", {{"name", t.name}}}});
    events.push_back({{"ph", "M"},
                      {"name", "process_sort_index"},
                      {"pid", pid},
                      {"args", {{"sort_index", pid}}}});
    for (size_t k = 0; k < t.tracks.size(); ++k)
      events.push_back({{"ph", "M"},
                        {"name", "thread_name"},
                        {"pid", pid},
                        {"tid", int(k) + 1},
                        {"args", {{"name", t.tracks[k]}}}});
    for (const auto &[track, span] : t.spans) {
      json args = json::object();
      for (const auto &[key, value] : span.args)
        args[key] = value;
      events.push_back({{"ph", "X"},
                        {"name", span.name},
                        {"cat", span.category},
                        {"pid", pid},
                        {"tid", track + 1},
                        {"ts", span.startSeconds * 1e6},
                        {"dur", span.seconds * 1e6},
                        {"args", std::move(args)}});
    }
  }
  // One event a line: compact (a real model's plan has 10^5 jobs) and still
  // easy to grep.
  std::string text = "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n";
  for (size_t i = 0; i < events.size(); ++i)
    text += events[i].dump() + (i + 1 < events.size() ? ",\n" : "\n");
  return text + "]}";
}

Status ChromeTrace::write(const std::string &path) const {
  std::ofstream file(path);
  if (!file)
    return makeError("{}: cannot open the trace file for writing", path);
  file << json() << '\n';
  file.close();
  if (!file)
    return makeError("{}: error writing the trace", path);
  return Status::success();
}

} // namespace moe
