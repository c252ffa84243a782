// Compares the runtime's chat templates with the reference Jinja,
// @huggingface/jinja, on real templates from npm packages: every
// conversation must render to the same bytes, and a conversation the
// template refuses (raise_exception) must fail with the same message.
//
// The committed fixtures (fixtures/references.jsonl, the first cases of
// each template) run everywhere; the whole corpus runs where node and the
// packages of scripts/npm-jinja-references.sh are installed, and the test
// says it skipped otherwise.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <sys/wait.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/chat/ChatTemplate.h"

namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

constexpr size_t kShownMismatches = 5;

struct Tally {
  size_t cases = 0, identical = 0, refusedAlike = 0;
};

// Printable form of rendered text for failure messages.
std::string shown(std::string_view text) {
  std::string out = "\"";
  for (char c : text.substr(0, 400))
    out += c == '\n' ? std::string("\\n") : std::string(1, c);
  return out + (text.size() > 400 ? "\"..." : "\"");
}

// Checks every case of `lines` (the output of make-references.mjs) and
// returns the tally per template.
std::map<std::string, Tally> checkReferences(std::istream &lines) {
  std::map<std::string, std::optional<moe::chat::ChatTemplate>> templates;
  std::map<std::string, int64_t> nows;
  std::map<std::string, Tally> tallies;
  size_t mismatches = 0;
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty())
      continue;
    Json entry = Json::parse(line);
    std::string name = entry["template"];
    if (entry.contains("source")) {
      auto compiled = moe::chat::ChatTemplate::fromSource(
          entry["source"].get<std::string>(), name, entry["special_tokens"]);
      EXPECT_TRUE(compiled.ok())
          << name << ": " << (compiled.ok() ? "" : compiled.error().message());
      if (compiled.ok())
        templates.emplace(name, std::move(*compiled));
      nows[name] = entry["now"].get<int64_t>();
      continue;
    }
    auto found = templates.find(name);
    if (found == templates.end())
      continue; // its parse failure is reported above
    const Json &input = entry["conversation"];
    moe::chat::Conversation conversation;
    conversation.messages = input["messages"];
    conversation.tools = input["tools"];
    conversation.addGenerationPrompt = input["add_generation_prompt"];
    if (input.contains("chat_template_kwargs"))
      conversation.kwargs = input["chat_template_kwargs"];
    conversation.now = nows[name];
    moe::Result<std::string> rendered = found->second->render(conversation);
    Tally &tally = tallies[name];
    ++tally.cases;
    bool same;
    if (entry.contains("error")) {
      std::string want = entry["error"];
      same = !rendered.ok() && rendered.error().message().ends_with(want);
      tally.refusedAlike += same;
    } else {
      same = rendered.ok() && *rendered == entry["text"].get<std::string>();
      tally.identical += same;
    }
    if (!same && ++mismatches <= kShownMismatches)
      ADD_FAILURE() << name << ": conversation " << input.dump()
                    << "\n  reference: "
                    << (entry.contains("error")
                            ? "error " + entry["error"].get<std::string>()
                            : shown(entry["text"].get<std::string>()))
                    << "\n  runtime:   "
                    << (rendered.ok() ? shown(*rendered)
                                      : "error " + rendered.error().message());
  }
  EXPECT_EQ(mismatches, 0u) << "renderings differ from @huggingface/jinja";
  for (const auto &[name, tally] : tallies)
    std::cout << fmt::format("  {:<12} {} conversations: {} byte-identical, "
                             "{} refused with the reference's error\n",
                             name, tally.cases, tally.identical,
                             tally.refusedAlike);
  return tallies;
}

TEST(ChatTemplateReference, CommittedFixturesMatch) {
  std::ifstream fixtures(MOE_CHAT_FIXTURES "/references.jsonl");
  ASSERT_TRUE(fixtures) << "cannot read " MOE_CHAT_FIXTURES "/references.jsonl";
  std::map<std::string, Tally> tallies = checkReferences(fixtures);
  EXPECT_GE(tallies.size(), 14u);
  for (const auto &[name, tally] : tallies)
    EXPECT_GT(tally.cases, 0u) << name;
}

TEST(ChatTemplateReference, WholeCorpusMatchesHuggingFaceJinja) {
  fs::path referenceDir = MOE_CHAT_REFERENCE_DIR;
  if (!fs::exists(referenceDir / "node_modules" / "@huggingface" / "jinja"))
    GTEST_SKIP() << "@huggingface/jinja is not installed (run "
                    "scripts/npm-jinja-references.sh): only the committed "
                    "fixtures were compared";
  std::string command = std::string(MOE_NODE_EXECUTABLE) + " '" +
                        (referenceDir / "make-references.mjs").string() + "'";
  FILE *pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr) << "cannot run " << command;
  std::string output;
  char buffer[1 << 16];
  for (size_t read; (read = fread(buffer, 1, sizeof(buffer), pipe)) > 0;)
    output.append(buffer, read);
  int status = pclose(pipe);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
    GTEST_SKIP() << "node is not installed (Debian package nodejs): only the "
                    "committed fixtures were compared";
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << command << " failed";
  std::istringstream lines(output);
  std::map<std::string, Tally> tallies = checkReferences(lines);
  EXPECT_GE(tallies.size(), 14u);
  for (const auto &[name, tally] : tallies)
    EXPECT_GE(tally.cases, 500u) << name;
}

} // namespace
