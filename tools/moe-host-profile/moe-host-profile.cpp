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
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "runtime/costmodel/HardwareProfile.h"
#include "runtime/host/HostProfiler.h"

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
    moe::Status written =
        moe::costmodel::writeProfileWithHost(inPath, outPath, *host);
    if (!written) {
      fmt::print(stderr, "moe-host-profile: {}\n", written.error().message());
      return 1;
    }
    fmt::print("wrote {}\n", outPath);
  }
  return 0;
}
