#include "runtime/host/NumaTopology.h"

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace moe::host {
namespace {

Result<int64_t> parseNumber(std::string_view text, std::string_view list) {
  int64_t value = 0;
  auto [end, error] =
      std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 0)
    return makeError("cpulist \"{}\": \"{}\" is not a CPU number", list, text);
  return value;
}

std::string readFile(const std::filesystem::path &path) {
  std::ifstream file(path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// "Node 0 MemTotal:       65536 kB" in the node's meminfo.
int64_t memTotalBytes(const std::string &meminfo) {
  std::istringstream lines(meminfo);
  std::string line;
  while (std::getline(lines, line)) {
    size_t at = line.find("MemTotal:");
    if (at == std::string::npos)
      continue;
    std::istringstream value(line.substr(at + 9));
    int64_t kib = 0;
    value >> kib;
    return kib * 1024;
  }
  return 0;
}

} // namespace

Result<std::vector<int64_t>> parseCpuList(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.remove_suffix(1);
  std::vector<int64_t> cpus;
  std::string_view rest = text;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view range = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? "" : rest.substr(comma + 1);
    size_t dash = range.find('-');
    auto first = parseNumber(range.substr(0, dash), text);
    MOE_RETURN_IF_ERROR(first);
    int64_t last = *first;
    if (dash != std::string_view::npos) {
      auto end = parseNumber(range.substr(dash + 1), text);
      MOE_RETURN_IF_ERROR(end);
      last = *end;
    }
    if (last < *first)
      return makeError("cpulist \"{}\": range {} runs backwards", text, range);
    for (int64_t cpu = *first; cpu <= last; ++cpu)
      cpus.push_back(cpu);
  }
  return cpus;
}

Result<std::vector<costmodel::NumaNode>>
readNumaNodes(const std::string &root) {
  std::vector<costmodel::NumaNode> nodes;
  std::error_code error;
  std::filesystem::directory_iterator entries(root, error);
  if (error)
    return nodes;
  for (const auto &entry : entries) {
    std::string name = entry.path().filename().string();
    if (name.rfind("node", 0) != 0 || name.size() == 4 ||
        !std::all_of(name.begin() + 4, name.end(),
                     [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    costmodel::NumaNode node;
    node.node = std::stoll(name.substr(4));
    auto cpus = parseCpuList(readFile(entry.path() / "cpulist"));
    if (!cpus.ok())
      return cpus.error().withContext((entry.path() / "cpulist").string());
    node.cpus = std::move(*cpus);
    node.memoryBytes = memTotalBytes(readFile(entry.path() / "meminfo"));
    nodes.push_back(std::move(node));
  }
  std::sort(nodes.begin(), nodes.end(),
            [](const costmodel::NumaNode &a, const costmodel::NumaNode &b) {
              return a.node < b.node;
            });
  return nodes;
}

} // namespace moe::host
