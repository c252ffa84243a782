// moe-host-profile: measures the host's cores for the hardware profile's
// host_cpu section (vector ISA, NUMA nodes, DRAM read bandwidth by thread
// count, the host decode attention kernels' times, each beside the read
// bandwidth: its benchmark) without a GPU, and prints the table as it
// measures. Given a profile, writes it again with this host_cpu section
// (checked by loading it), e.g. to add the host to a profile measured
// before hosts were:
//
//   moe-host-profile [--quick] [--profile IN.json --out OUT.json]
//
// On failure prints one line "moe-host-profile: <reason>" and exits 1.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/costmodel/HardwareProfile.h"
#include "runtime/host/HostProfiler.h"

namespace {

moe::Status writeWithHost(const std::string &inPath, const std::string &outPath,
                          const moe::costmodel::HostCpuProfile &host) {
  std::ifstream in(inPath, std::ios::binary);
  if (!in)
    return moe::makeError("cannot open {}", inPath);
  std::ostringstream text;
  text << in.rdbuf();
  auto profile = nlohmann::ordered_json::parse(text.str(), nullptr, false);
  if (profile.is_discarded() || !profile.is_object())
    return moe::makeError("{}: not a JSON object", inPath);
  profile["host_cpu"] =
      nlohmann::ordered_json::parse(moe::costmodel::hostCpuProfileJson(host));
  std::string json = profile.dump(2) + "\n";
  auto loaded = moe::costmodel::HardwareProfile::fromJson(json);
  if (!loaded)
    return loaded.error().withContext(inPath);
  std::ofstream out(outPath, std::ios::binary | std::ios::trunc);
  out << json;
  out.close();
  if (!out)
    return moe::makeError("cannot write {}", outPath);
  return moe::Status::success();
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"Measures the host's cores for the moe planner's cost model "
               "(the hardware profile's host_cpu section)."};
  std::string inPath, outPath;
  bool quick = false;
  app.add_flag("--quick", quick, "Small buffers and few points");
  auto *in = app.add_option("--profile", inPath,
                            "Hardware profile to write again with this host");
  auto *out = app.add_option("--out", outPath, "Where to write it");
  in->needs(out);
  out->needs(in);
  CLI11_PARSE(app, argc, argv);

  moe::host::HostProfileOptions options;
  options.quick = quick;
  options.log = [](std::string_view line) {
    fmt::print("{}\n", line);
    std::fflush(stdout);
  };
  auto host = moe::host::profileHost(options);
  if (!host) {
    fmt::print(stderr, "moe-host-profile: {}\n", host.error().message());
    return 1;
  }
  if (!inPath.empty()) {
    moe::Status written = writeWithHost(inPath, outPath, *host);
    if (!written) {
      fmt::print(stderr, "moe-host-profile: {}\n", written.error().message());
      return 1;
    }
    fmt::print("wrote {}\n", outPath);
  }
  return 0;
}
