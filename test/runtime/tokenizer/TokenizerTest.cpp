// Unit tests of the tokenizer on small hand-written tokenizer.json files,
// with exact ids, plus the error paths of malformed files.
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "runtime/tokenizer/Pattern.h"
#include "runtime/tokenizer/Tokenizer.h"
#include "runtime/tokenizer/Utf8.h"

namespace {

using moe::StreamingDecoder;
using moe::Tokenizer;
using Ids = std::vector<int32_t>;
using Json = nlohmann::json;

std::string fixturePath(const std::string &name) {
  return std::string(MOE_TOKENIZER_FIXTURES) + "/" + name;
}

Json readFixture(const std::string &name) {
  std::ifstream file(fixturePath(name));
  return Json::parse(file);
}

Tokenizer load(const std::string &name) {
  moe::Result<Tokenizer> tokenizer = Tokenizer::fromFile(fixturePath(name));
  if (!tokenizer.ok())
    ADD_FAILURE() << tokenizer.error().message();
  return std::move(tokenizer).value();
}

Tokenizer fromJson(const Json &json) {
  moe::Result<Tokenizer> tokenizer =
      Tokenizer::fromJson(json.dump(), "inline.json");
  if (!tokenizer.ok())
    ADD_FAILURE() << tokenizer.error().message();
  return std::move(tokenizer).value();
}

Ids encode(const Tokenizer &tokenizer, std::string_view text,
           bool addSpecialTokens = false) {
  moe::Result<Ids> ids = tokenizer.encode(text, addSpecialTokens);
  if (!ids.ok()) {
    ADD_FAILURE() << ids.error().message();
    return {};
  }
  return *ids;
}

std::string decode(const Tokenizer &tokenizer, const Ids &ids,
                   bool skipSpecialTokens = false) {
  moe::Result<std::string> text = tokenizer.decode(ids, skipSpecialTokens);
  if (!text.ok()) {
    ADD_FAILURE() << text.error().message();
    return {};
  }
  return *text;
}

// Each chunk the streaming decoder returns, in order.
std::vector<std::string> streamChunks(const Tokenizer &tokenizer,
                                      const Ids &ids) {
  StreamingDecoder decoder(tokenizer);
  std::vector<std::string> chunks;
  for (int32_t id : ids) {
    moe::Result<std::string> chunk = decoder.push(id);
    EXPECT_TRUE(chunk.ok());
    chunks.push_back(chunk.ok() ? *chunk : "");
  }
  chunks.push_back(decoder.finish());
  return chunks;
}

const std::string kReplacement = "\xEF\xBF\xBD";

// --- byte-level BPE (the DeepSeek-V3 / Qwen3 / GPT-OSS layout) -------------

TEST(ByteLevelTokenizer, EncodesWordsWithRankedMerges) {
  Tokenizer tokenizer = load("byte_level.json");
  EXPECT_EQ(encode(tokenizer, "hello world"), (Ids{18, 23}));
  EXPECT_EQ(encode(tokenizer, "hello!"), (Ids{18, 8}));
  // "é" is two bytes, Ã and © in the byte-level alphabet, merged by rank 9.
  EXPECT_EQ(encode(tokenizer, "h\xC3\xA9llo"), (Ids{0, 24, 16, 3}));
  // Whitespace runs: "\s+(?!\S)" leaves the last space to the next word.
  EXPECT_EQ(encode(tokenizer, "hello   world"), (Ids{18, 27, 23}));
  EXPECT_EQ(encode(tokenizer, ""), Ids{});
}

TEST(ByteLevelTokenizer, PostProcessorAddsBos) {
  Tokenizer tokenizer = load("byte_level.json");
  EXPECT_EQ(encode(tokenizer, "hello", true), (Ids{28, 18}));
  EXPECT_EQ(encode(tokenizer, "", true), (Ids{28}));
}

TEST(ByteLevelTokenizer, SplitsAddedTokensBeforePreTokenizing) {
  Tokenizer tokenizer = load("byte_level.json");
  EXPECT_EQ(encode(tokenizer, "<|endoftext|>hello"), (Ids{29, 18}));
  EXPECT_EQ(encode(tokenizer, "hello<think>hello"), (Ids{18, 30, 18}));
  EXPECT_EQ(encode(tokenizer, "<think><think>"), (Ids{30, 30}));
  // A near miss is plain text; of its characters only e, d, o and e are in
  // the vocabulary, the others are dropped as HF does without <unk>.
  EXPECT_EQ(encode(tokenizer, "<|endoftext|"), (Ids{1, 6, 3, 1}));
}

TEST(ByteLevelTokenizer, SingleWordTokensMatchOnlyWholeWords) {
  Tokenizer tokenizer = load("byte_level.json");
  EXPECT_EQ(encode(tokenizer, "hello [W] hello"), (Ids{18, 7, 31, 7, 18}));
  EXPECT_EQ(encode(tokenizer, "hello[W]"), (Ids{18, 34, 35, 36}));
}

TEST(ByteLevelTokenizer, StripFlagsSwallowNeighbouringWhitespace) {
  Tokenizer tokenizer = load("byte_level.json");
  EXPECT_EQ(encode(tokenizer, "hello  <L>"), (Ids{18, 32}));
  EXPECT_EQ(encode(tokenizer, "<R>  hello"), (Ids{33, 18}));
  EXPECT_EQ(encode(tokenizer, "hello  <R>"), (Ids{18, 27, 33}));
}

TEST(ByteLevelTokenizer, IllFormedInputReadsAsReplacementCharacters) {
  Tokenizer tokenizer = load("byte_level.json");
  // U+FFFD is EF BF BD: ï ¿ ½ in the byte-level alphabet, merged to id 26.
  EXPECT_EQ(encode(tokenizer, "\xFF"), (Ids{26}));
  EXPECT_EQ(encode(tokenizer, "hello\xC3"), (Ids{18, 26}));
  EXPECT_EQ(encode(tokenizer, std::string("\xE0\x80hello")),
            (Ids{26, 26, 18}));
  EXPECT_EQ(encode(tokenizer, "\xFF" "hello"),
            encode(tokenizer, kReplacement + "hello"));
}

TEST(ByteLevelTokenizer, NormalizerRunsBeforePreTokenization) {
  Json json = readFixture("byte_level.json");
  // "e" + U+0301: without NFC the combining accent's bytes are not in the
  // vocabulary; with NFC the pair becomes "é".
  EXPECT_EQ(encode(fromJson(json), "he\xCC\x81"), (Ids{15}));
  json["normalizer"] = {{"type", "NFC"}};
  EXPECT_EQ(encode(fromJson(json), "he\xCC\x81"), (Ids{0, 24}));
}

TEST(ByteLevelTokenizer, MergesMayBeWrittenAsPairs) {
  Json json = readFixture("byte_level.json");
  Json pairs = Json::array();
  for (const Json &merge : json["model"]["merges"]) {
    std::string text = merge;
    size_t space = text.find(' ');
    pairs.push_back({text.substr(0, space), text.substr(space + 1)});
  }
  json["model"]["merges"] = pairs;
  Tokenizer tokenizer = fromJson(json);
  EXPECT_EQ(encode(tokenizer, "hello world h\xC3\xA9llo"),
            (Ids{18, 23, 7, 0, 24, 16, 3}));
}

TEST(ByteLevelTokenizer, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  Json json = readFixture("byte_level.json");
  json["model"]["vocab"]["dr"] = 40; // No merge builds "dr".
  Tokenizer withMerges = fromJson(json);
  EXPECT_EQ(encode(withMerges, "dr"), (Ids{6, 5}));
  json["model"]["ignore_merges"] = true;
  Tokenizer ignoringMerges = fromJson(json);
  EXPECT_EQ(encode(ignoringMerges, "dr"), (Ids{40}));
  EXPECT_EQ(encode(ignoringMerges, "hello"), (Ids{18}));
}

TEST(ByteLevelTokenizer, Decodes) {
  Tokenizer tokenizer = load("byte_level.json");
  EXPECT_EQ(decode(tokenizer, {18, 23}), "hello world");
  EXPECT_EQ(decode(tokenizer, {28, 18, 29, 30}), "<|bos|>hello<|endoftext|><think>");
  // Only special tokens are skipped; <think> is an ordinary added token.
  EXPECT_EQ(decode(tokenizer, {28, 18, 29, 30}, true), "hello<think>");
  EXPECT_EQ(decode(tokenizer, {0, 24, 16, 3}), "h\xC3\xA9llo");
  EXPECT_EQ(decode(tokenizer, {}), "");
}

TEST(ByteLevelTokenizer, DecodingRepairsIllFormedBytes) {
  Tokenizer tokenizer = load("byte_level.json");
  // Ã alone is the lead byte C3 without its continuation.
  EXPECT_EQ(decode(tokenizer, {9}), kReplacement);
  EXPECT_EQ(decode(tokenizer, {9, 18}), kReplacement + "hello");
  // © alone is a stray continuation byte.
  EXPECT_EQ(decode(tokenizer, {10, 10}), kReplacement + kReplacement);
}

TEST(ByteLevelTokenizer, RejectsUndefinedIds) {
  Tokenizer tokenizer = load("byte_level.json");
  moe::Result<std::string> text = tokenizer.decode(Ids{18, 37});
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.error().message(),
            "token id 37 is not defined by the tokenizer (vocabulary size 37)");
  EXPECT_FALSE(tokenizer.decode(Ids{-1}).ok());
  StreamingDecoder decoder(tokenizer);
  EXPECT_FALSE(decoder.push(1000).ok());
}

TEST(ByteLevelTokenizer, StreamingHoldsBackIncompleteCharacters) {
  Tokenizer tokenizer = load("byte_level.json");
  EXPECT_EQ(streamChunks(tokenizer, {18, 9, 10, 23}),
            (std::vector<std::string>{"hello", "", "\xC3\xA9", " world", ""}));
  // An unfinished character at the end becomes U+FFFD on finish().
  EXPECT_EQ(streamChunks(tokenizer, {18, 9}),
            (std::vector<std::string>{"hello", "", kReplacement}));
  // A stray continuation byte cannot become valid: it is not held back.
  EXPECT_EQ(streamChunks(tokenizer, {10, 18}),
            (std::vector<std::string>{kReplacement, "hello", ""}));
}

TEST(ByteLevelTokenizer, StreamingSkipsSpecialTokensOnRequest) {
  Tokenizer tokenizer = load("byte_level.json");
  StreamingDecoder decoder(tokenizer, /*skipSpecialTokens=*/true);
  std::string text;
  for (int32_t id : {28, 18, 29, 23})
    text += decoder.push(id).value();
  EXPECT_EQ(text + decoder.finish(), "hello world");
}

TEST(ByteLevelTokenizer, LooksUpTokens) {
  Tokenizer tokenizer = load("byte_level.json");
  EXPECT_EQ(tokenizer.vocabularySize(), 37u);
  EXPECT_EQ(tokenizer.tokenToId("<|endoftext|>"), 29);
  EXPECT_EQ(tokenizer.tokenToId("Ġworld"), 23);
  EXPECT_EQ(tokenizer.tokenToId("nope"), std::nullopt);
  EXPECT_TRUE(tokenizer.isSpecialToken(29));
  EXPECT_FALSE(tokenizer.isSpecialToken(30));
  EXPECT_FALSE(tokenizer.isSpecialToken(1000));
}

// --- sentencepiece-style BPE (the Mistral / Mixtral / Llama 2 layout) -------

TEST(SentencepieceTokenizer, EncodesWithMetaspaceNormalization) {
  Tokenizer tokenizer = load("sentencepiece.json");
  EXPECT_EQ(encode(tokenizer, "hello world"), (Ids{15, 22}));
  EXPECT_EQ(encode(tokenizer, "hello world", true), (Ids{1, 15, 22}));
  // "▁▁hello": "▁ he" outranks "▁ ▁".
  EXPECT_EQ(encode(tokenizer, " hello"), (Ids{6, 15}));
  EXPECT_EQ(encode(tokenizer, "<s>hello</s>"), (Ids{1, 15, 2}));
}

TEST(SentencepieceTokenizer, FallsBackToBytesThenToTheUnknownToken) {
  Tokenizer tokenizer = load("sentencepiece.json");
  EXPECT_EQ(encode(tokenizer, "\xE4\xB8\xAD"), (Ids{6, 3, 4, 5})); // 中
  // No byte tokens for 😀: consecutive unknown characters fuse into one.
  EXPECT_EQ(encode(tokenizer, "\xF0\x9F\x98\x80\xF0\x9F\x98\x80"),
            (Ids{6, 0}));
  EXPECT_EQ(encode(tokenizer, "a b"), (Ids{6, 0, 6, 0}));
}

TEST(SentencepieceTokenizer, Decodes) {
  Tokenizer tokenizer = load("sentencepiece.json");
  EXPECT_EQ(decode(tokenizer, {15, 22}), "hello world");
  EXPECT_EQ(decode(tokenizer, {1, 15}), "<s> hello");
  EXPECT_EQ(decode(tokenizer, {1, 15}, true), "hello");
  EXPECT_EQ(decode(tokenizer, {6, 3, 4, 5}), "\xE4\xB8\xAD");
  EXPECT_EQ(decode(tokenizer, {3, 4, 15}), kReplacement + " hello");
}

TEST(SentencepieceTokenizer, StreamsWordsAndByteFallbackCharacters) {
  Tokenizer tokenizer = load("sentencepiece.json");
  EXPECT_EQ(streamChunks(tokenizer, {15, 22}),
            (std::vector<std::string>{"hello", " world", ""}));
  EXPECT_EQ(streamChunks(tokenizer, {6, 3, 4, 5, 22}),
            (std::vector<std::string>{"", "", "", "\xE4\xB8\xAD", " world", ""}));
}

// --- components exercised through small inline files ------------------------

Json splitTokenizer(const std::string &behavior, bool invert) {
  return {
      {"pre_tokenizer",
       {{"type", "Split"},
        {"pattern", {{"String", "-"}}},
        {"behavior", behavior},
        {"invert", invert}}},
      {"model",
       {{"type", "BPE"},
        {"vocab",
         {{"a", 0}, {"b", 1}, {"-", 2}, {"a-", 3}, {"a-b", 4}, {"-b", 5},
          {"--", 6}}},
        {"merges", {"a -", "a- b", "- b", "- -"}}}}};
}

TEST(SplitPreTokenizer, FollowsEachBehavior) {
  EXPECT_EQ(encode(fromJson(splitTokenizer("Isolated", false)), "a-b"),
            (Ids{0, 2, 1}));
  EXPECT_EQ(encode(fromJson(splitTokenizer("Removed", false)), "a-b"),
            (Ids{0, 1}));
  EXPECT_EQ(encode(fromJson(splitTokenizer("MergedWithPrevious", false)), "a-b"),
            (Ids{3, 1}));
  EXPECT_EQ(encode(fromJson(splitTokenizer("MergedWithNext", false)), "a-b"),
            (Ids{0, 5}));
  EXPECT_EQ(encode(fromJson(splitTokenizer("Contiguous", false)), "a--b"),
            (Ids{0, 6, 1}));
  EXPECT_EQ(encode(fromJson(splitTokenizer("Removed", true)), "a-b"),
            (Ids{2}));
  Json unsplit = splitTokenizer("Isolated", false);
  unsplit.erase("pre_tokenizer");
  EXPECT_EQ(encode(fromJson(unsplit), "a-b"), (Ids{4}));
}

TEST(MetaspacePreTokenizer, PrependsOnlyAtTheStartWithSchemeFirst) {
  Json json = {
      {"added_tokens",
       {{{"id", 5}, {"content", "<s>"}, {"special", true}}}},
      {"pre_tokenizer",
       {{"type", "Metaspace"},
        {"replacement", "\u2581"},
        {"prepend_scheme", "first"},
        {"split", true}}},
      {"decoder",
       {{"type", "Metaspace"},
        {"replacement", "\u2581"},
        {"prepend_scheme", "first"},
        {"split", true}}},
      {"model",
       {{"type", "BPE"},
        {"vocab",
         {{"\u2581", 0}, {"a", 1}, {"b", 2}, {"\u2581a", 3}, {"\u2581b", 4}}},
        {"merges", {"\u2581 a", "\u2581 b"}}}}};
  Tokenizer tokenizer = fromJson(json);
  EXPECT_EQ(encode(tokenizer, "a b"), (Ids{3, 4}));
  EXPECT_EQ(encode(tokenizer, "a b<s>a"), (Ids{3, 4, 5, 1}));
  EXPECT_EQ(encode(tokenizer, "<s>a"), (Ids{5, 1}));
  EXPECT_EQ(decode(tokenizer, {3, 4}), "a b");
  // Only the first token's "▁" is dropped, also when streaming.
  EXPECT_EQ(decode(tokenizer, {0, 3, 0, 4}), " a  b");
  EXPECT_EQ(streamChunks(tokenizer, {0, 3, 0, 4}),
            (std::vector<std::string>{"", " a", " ", " b", ""}));
}

TEST(Pattern, TranslatesOnigurumaConstructs) {
  using moe::tokenizer::translateOnigurumaPattern;
  EXPECT_EQ(translateOnigurumaPattern("(?i:'s|x)").value(), "(?:'[sS]|[xX])");
  EXPECT_EQ(translateOnigurumaPattern("(?i:[a-c_])").value(), "(?:[a-cA-C_])");
  EXPECT_EQ(translateOnigurumaPattern("\\s+(?!\\S)").value(),
            "\\p{White_Space}+(?!\\P{White_Space})");
  EXPECT_EQ(translateOnigurumaPattern("[^\\s\\p{L}]").value(),
            "[^\\p{White_Space}\\p{L}]");
  EXPECT_EQ(translateOnigurumaPattern("\\u00e9").value(), "\\x{00e9}");
  EXPECT_FALSE(translateOnigurumaPattern("[a[b]]").ok());
  EXPECT_FALSE(translateOnigurumaPattern("[abc").ok());
}

TEST(Pattern, WhitespaceIncludesNextLineLikeOniguruma) {
  moe::Result<moe::tokenizer::Pattern> pattern =
      moe::tokenizer::Pattern::fromOniguruma("\\s", "test");
  ASSERT_TRUE(pattern.ok()) << pattern.error().message();
  EXPECT_TRUE(pattern->contains("\xC2\x85").value());     // U+0085
  EXPECT_TRUE(pattern->contains("\xE3\x80\x80").value()); // U+3000
  EXPECT_FALSE(pattern->contains("\xE2\x80\x8B").value()); // U+200B
}

TEST(Utf8, ReplacesMaximalIllFormedSubparts) {
  auto lossy = [](std::string_view bytes) {
    std::string out;
    moe::tokenizer::appendUtf8Lossy(out, bytes);
    return out;
  };
  const std::string r = kReplacement;
  EXPECT_EQ(lossy("a\x80z"), "a" + r + "z");
  EXPECT_EQ(lossy("\xE0\x80"), r + r); // E0 needs A0-BF next.
  EXPECT_EQ(lossy("\xF0\x90\x80" "A"), r + "A");
  EXPECT_EQ(lossy("\xED\xA0\x80"), r + r + r); // A surrogate.
  EXPECT_EQ(lossy("\xF4\x90\x80\x80"), r + r + r + r);
  EXPECT_EQ(lossy("\xE4\xB8"), r);
  EXPECT_EQ(lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
}

TEST(Utf8, FindsIncompleteTails) {
  using moe::tokenizer::incompleteUtf8TailLength;
  EXPECT_EQ(incompleteUtf8TailLength("abc"), 0u);
  EXPECT_EQ(incompleteUtf8TailLength("a\xE4"), 1u);
  EXPECT_EQ(incompleteUtf8TailLength("a\xE4\xB8"), 2u);
  EXPECT_EQ(incompleteUtf8TailLength("\xE4\xB8\xAD"), 0u);
  EXPECT_EQ(incompleteUtf8TailLength("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(incompleteUtf8TailLength("\xE0\x80"), 0u); // Already invalid.
  EXPECT_EQ(incompleteUtf8TailLength("\x80\x80"), 0u);
  EXPECT_EQ(incompleteUtf8TailLength("\xE4\xF0\x9F"), 2u);
}

// --- malformed files: one precise error each --------------------------------

struct MalformedCase {
  const char *file;
  const char *error; // What follows "<path>: ".
};

void PrintTo(const MalformedCase &malformed, std::ostream *out) {
  *out << malformed.file;
}

class MalformedTokenizerTest : public ::testing::TestWithParam<MalformedCase> {};

TEST_P(MalformedTokenizerTest, GivesOneClearError) {
  std::string path = fixturePath(std::string("malformed/") + GetParam().file);
  moe::Result<Tokenizer> tokenizer = Tokenizer::fromFile(path);
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.error().message(), path + ": " + GetParam().error);
}

const MalformedCase kMalformedCases[] = {
    {"bad_json.json",
     "invalid JSON: parse error at line 1, column 57: syntax error while "
     "parsing value - unexpected end of input; expected '[', '{', or a "
     "literal"},
    {"not_an_object.json", "expected a JSON object, found array"},
    {"missing_model.json", "missing \"model\""},
    {"unknown_model_type.json", "model: unsupported type \"WordPiece\""},
    {"unknown_normalizer.json", "normalizer: unsupported type \"Lowercase\""},
    {"unknown_pre_tokenizer.json",
     "pre_tokenizer.pretokenizers[1]: unsupported type \"Whitespace\""},
    {"unknown_decoder.json",
     "decoder.decoders[1]: unsupported type \"WordPiece\""},
    {"unknown_post_processor.json",
     "post_processor: unsupported type \"BertProcessing\""},
    {"merge_not_in_vocab.json",
     "model.merges[1]: \"c\" is not in the vocabulary"},
    {"merge_result_not_in_vocab.json",
     "model.merges[0]: \"ab\" is not in the vocabulary"},
    {"bad_merge.json",
     "model.merges[0]: expected two tokens separated by one space, found "
     "\"a b c\""},
    {"invalid_regex.json",
     "pre_tokenizer.pattern.Regex: invalid regex \"(\\p{L}+\": missing "
     "closing parenthesis"},
    {"bad_added_token.json", "added_tokens[0].id: token id -4 is out of range"},
    {"byte_level_not_last.json",
     "pre_tokenizer.pretokenizers[1]: nothing may follow a ByteLevel "
     "pre-tokenizer"},
    {"undefined_template_token.json",
     "post_processor.single[0]: special token \"<bos>\" is not defined in "
     "special_tokens"},
    {"bad_vocab_id.json",
     "model.vocab[\"a\"]: expected a token id, found string"},
};

INSTANTIATE_TEST_SUITE_P(
    Files, MalformedTokenizerTest, ::testing::ValuesIn(kMalformedCases),
    [](const ::testing::TestParamInfo<MalformedCase> &info) {
      std::string name = info.param.file;
      return name.substr(0, name.find('.'));
    });

TEST(MalformedTokenizer, MissingFile) {
  moe::Result<Tokenizer> tokenizer =
      Tokenizer::fromFile(fixturePath("no_such_file.json"));
  ASSERT_FALSE(tokenizer.ok());
  EXPECT_EQ(tokenizer.error().message(),
            fixturePath("no_such_file.json") + ": cannot open the file");
}

} // namespace
