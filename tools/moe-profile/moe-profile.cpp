// moe-profile: measures one GPU and its host (PCIe and HBM copy rates, bf16
// GEMM times via cuBLASLt, decode-attention times, the host's cores: read
// bandwidth and host attention, runtime/host) and writes the hardware
// profile the planner's cost model reads (schema moe-hardware-profile/1).
// `moe-run --profile-hardware` does the same measurement for users; this
// tool adds the developer options (--device, --check-only for
// compute-sanitizer, --only to measure some sections again into a profile
// measured before, e.g. after a kernel changed).
//
//   moe-profile --out profile.json [--quick] [--device N] [--check-only]
//   moe-profile --only SECTION[,SECTION...] --into IN.json --out OUT.json
//
// Prints a table as it measures. On failure prints one line
// "moe-profile: <reason>" and exits 1.
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "runtime/backends/cuda/HardwareProfiler.h"
#include "runtime/costmodel/HardwareProfile.h"

int main(int argc, char **argv) {
  CLI::App app{"Measures the GPU and host for the moe planner's cost model "
               "and writes them as JSON (schema moe-hardware-profile/1)."};
  std::string outPath;
  bool quick = false;
  bool checksOnly = false;
  std::vector<std::string> sections;
  std::string intoPath;
  int device = 0;
  app.add_option("--out", outPath, "Output JSON file")->required();
  auto *only =
      app.add_option("--only", sections,
                     fmt::format("Measure only these sections ({}) and write "
                                 "the --into profile with them",
                                 fmt::join(moe::cuda::kProfileSections, ", ")))
          ->delimiter(',');
  auto *into = app.add_option("--into", intoPath,
                              "The profile --only's sections go into");
  only->needs(into);
  into->needs(only);
  app.add_flag("--quick", quick, "Measure a small subset (smoke test)");
  app.add_flag("--check-only", checksOnly,
               "Only check the GEMM layout and attention kernel (no JSON)");
  app.add_option("--device", device, "CUDA device index")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  moe::cuda::ProfileOptions options;
  options.quick = quick;
  options.checksOnly = checksOnly;
  options.device = device;
  options.log = [](std::string_view line) {
    fmt::print("{}\n", line);
    std::fflush(stdout);
  };
  if (!sections.empty()) {
    options.sections = sections;
    auto measured = moe::cuda::profileHardware(options);
    moe::Status written =
        measured ? moe::costmodel::writeProfileWithSections(
                       intoPath, outPath, moe::cuda::profileToJson(*measured),
                       sections)
                 : moe::Status(measured.error());
    if (!written) {
      fmt::print(stderr, "moe-profile: {}\n", written.error().message());
      return 1;
    }
    fmt::print("wrote {}\n", outPath);
    return 0;
  }
  if (checksOnly) {
    auto checked = moe::cuda::profileHardware(options);
    if (!checked) {
      fmt::print(stderr, "moe-profile: {}\n", checked.error().message());
      return 1;
    }
    fmt::print("checks passed\n");
    return 0;
  }
  moe::Status written = moe::cuda::measureProfileToFile(options, outPath);
  if (!written) {
    fmt::print(stderr, "moe-profile: {}\n", written.error().message());
    return 1;
  }
  fmt::print("wrote {}\n", outPath);
  return 0;
}
