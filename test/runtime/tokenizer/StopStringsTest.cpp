// Stop strings found on the streamed text of a sequence's ids (the byte-level
// fixture: 18 "hello", 23 " world", 9 and 10 the two bytes of "é", 29 the
// special <|endoftext|>).

#include "runtime/tokenizer/StopStrings.h"

#include <gtest/gtest.h>

namespace moe {
namespace {

Tokenizer fixture() {
  auto tokenizer = Tokenizer::fromFile(std::string(MOE_TOKENIZER_FIXTURES) +
                                       "/byte_level.json");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.error().message();
  return std::move(*tokenizer);
}

// The match after each id (nullopt when none).
std::vector<std::optional<StopStrings::Match>>
pushAll(StopStrings &stops, const std::vector<int32_t> &ids) {
  std::vector<std::optional<StopStrings::Match>> matches;
  for (int32_t id : ids) {
    auto match = stops.push(id);
    EXPECT_TRUE(match.ok()) << match.error().message();
    matches.push_back(match.ok() ? *match : std::nullopt);
  }
  return matches;
}

TEST(StopStrings, FoundAcrossTokenBoundaries) {
  Tokenizer tokenizer = fixture();
  StopStrings stops(tokenizer, {"lo wo"});
  auto matches = pushAll(stops, {18, 23});
  EXPECT_FALSE(matches[0]);
  ASSERT_TRUE(matches[1]);
  EXPECT_EQ(matches[1]->stop, "lo wo");
  EXPECT_EQ(matches[1]->textBytes, 3u); // "hel"
}

TEST(StopStrings, AMultiByteCharacterCompletesWithItsLastByte) {
  Tokenizer tokenizer = fixture();
  StopStrings stops(tokenizer, {"o\xC3\xA9"});
  auto matches = pushAll(stops, {18, 9, 10});
  EXPECT_FALSE(matches[0]);
  EXPECT_FALSE(matches[1]); // "é" is half there: the decoder holds it back
  ASSERT_TRUE(matches[2]);
  EXPECT_EQ(matches[2]->textBytes, 4u); // "hell"
}

TEST(StopStrings, TheEarliestOfSeveralThenTheLongestWins) {
  Tokenizer tokenizer = fixture();
  {
    StopStrings stops(tokenizer, {"ld", " wor", "nowhere"});
    auto matches = pushAll(stops, {18, 23});
    ASSERT_TRUE(matches[1]);
    EXPECT_EQ(matches[1]->stop, " wor");
    EXPECT_EQ(matches[1]->textBytes, 5u);
  }
  {
    StopStrings stops(tokenizer, {" w", " world", " wo"});
    auto matches = pushAll(stops, {18, 23});
    ASSERT_TRUE(matches[1]);
    EXPECT_EQ(matches[1]->stop, " world");
  }
  {
    // One that completes a token earlier stops the sequence first.
    StopStrings stops(tokenizer, {" world", "ll"});
    auto matches = pushAll(stops, {18, 23});
    ASSERT_TRUE(matches[0]);
    EXPECT_EQ(matches[0]->stop, "ll");
    EXPECT_EQ(matches[0]->textBytes, 2u);
  }
}

TEST(StopStrings, SpecialTokensAreNotText) {
  Tokenizer tokenizer = fixture();
  StopStrings stops(tokenizer, {"o w", "endoftext"});
  auto matches = pushAll(stops, {18, 29, 23});
  EXPECT_FALSE(matches[1]);
  ASSERT_TRUE(matches[2]);
  EXPECT_EQ(matches[2]->stop, "o w");
  EXPECT_EQ(matches[2]->textBytes, 4u);
}

TEST(StopStrings, NothingFoundAndUndefinedIds) {
  Tokenizer tokenizer = fixture();
  StopStrings stops(tokenizer, {"worlds"});
  for (const auto &match : pushAll(stops, {18, 23, 8}))
    EXPECT_FALSE(match);
  EXPECT_FALSE(stops.push(1000).ok());
}

} // namespace
} // namespace moe
