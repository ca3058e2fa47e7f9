// Bad inputs to the tokenizer: invalid text, broken tokenizer.json files, random bytes and ids.
// Each must give a clear error value (naming what is wrong), never a crash.
#include <fstream>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/decode_stream.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace dsv3::testing {
namespace {

using tokenizer::Tokenizer;

// A small valid byte-level BPE: the 256 byte tokens, a few merges, two added tokens.
nlohmann::json SmallTokenizerJson() {
  tokenizer::ByteLevelTable table;
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[table.StringOf(static_cast<uint8_t>(b))] = b;
  vocab["he"] = 256;
  vocab["ll"] = 257;
  vocab["hell"] = 258;
  vocab["hello"] = 259;
  vocab["Ġw"] = 260;
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 261}, {"content", "<|end|>"}, {"special", true}, {"normalized", false}},
            {{"id", 262}, {"content", "<tool>"}, {"special", false}, {"normalized", true}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"},
               {"pattern", {{"Regex", " ?\\p{L}+|\\s+(?!\\S)|\\s+"}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model",
           {{"type", "BPE"},
            {"vocab", vocab},
            {"merges", {"h e", "l l", nlohmann::json::array({"he", "ll"}), "hell o", "Ġ w"}}}}};
}

std::string ErrorOf(const nlohmann::json& j) {
  auto tok = Tokenizer::FromJson(j);
  EXPECT_FALSE(tok.ok()) << "expected an error for " << j.dump().substr(0, 200);
  return tok.ok() ? std::string() : tok.status().message();
}

#define EXPECT_HAS(haystack, needle) \
  EXPECT_NE((haystack).find(needle), std::string::npos) << "message: " << (haystack)

TEST(TokenizerBadInputTest, SmallTokenizerWorks) {
  auto tok = Tokenizer::FromJson(SmallTokenizerJson());
  ASSERT_TRUE(tok.ok()) << tok.status().message();
  auto ids = tok->Encode("hello world<|end|><tool>");
  ASSERT_TRUE(ids.ok()) << ids.status().message();
  // "hello" fully merged; " world" -> "Ġw" + bytes; then the two added tokens.
  const std::vector<int32_t> want = {259, 260, 'o', 'r', 'l', 'd', 261, 262};
  EXPECT_EQ(*ids, want);
  EXPECT_EQ(tok->Decode(*ids, false), "hello world<|end|><tool>");
  EXPECT_EQ(tok->Decode(*ids, true), "hello world<tool>");
}

TEST(TokenizerBadInputTest, InvalidUtf8TextIsAnError) {
  auto tok = Tokenizer::FromJson(SmallTokenizerJson());
  ASSERT_TRUE(tok.ok());
  for (const std::string& bad :
       {std::string("abc\x80"), std::string("\xC0\xAF"), std::string("\xED\xA0\x80"),
        std::string("ok \xF0\x9F\x98"), std::string("\xF5\x80\x80\x80"), std::string("\xFF")}) {
    auto ids = tok->Encode(bad);
    ASSERT_FALSE(ids.ok());
    EXPECT_HAS(ids.status().message(), "UTF-8");
  }
}

TEST(TokenizerBadInputTest, MissingModel) {
  auto j = SmallTokenizerJson();
  j.erase("model");
  EXPECT_HAS(ErrorOf(j), "model: missing");
  EXPECT_HAS(ErrorOf(nlohmann::json::array()), "JSON object");
}

TEST(TokenizerBadInputTest, UnknownModelType) {
  auto j = SmallTokenizerJson();
  j["model"]["type"] = "WordPiece";
  EXPECT_HAS(ErrorOf(j), "WordPiece");
}

TEST(TokenizerBadInputTest, UnknownPreTokenizerType) {
  auto j = SmallTokenizerJson();
  j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Whitespace"}};
  EXPECT_HAS(ErrorOf(j), "unknown pre-tokenizer type 'Whitespace'");
  j = SmallTokenizerJson();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  EXPECT_HAS(ErrorOf(j), "Metaspace");
}

TEST(TokenizerBadInputTest, MissingByteLevel) {
  auto j = SmallTokenizerJson();
  j["pre_tokenizer"]["pretokenizers"].erase(1);
  EXPECT_HAS(ErrorOf(j), "ByteLevel");
}

TEST(TokenizerBadInputTest, BadRegex) {
  auto j = SmallTokenizerJson();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}+";
  const std::string message = ErrorOf(j);
  EXPECT_HAS(message, "bad regex");
  EXPECT_HAS(message, "pretokenizers[0]");
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{NotAProperty}";
  EXPECT_HAS(ErrorOf(j), "bad regex");
}

TEST(TokenizerBadInputTest, UnsupportedSplitOptions) {
  auto j = SmallTokenizerJson();
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithNext";
  EXPECT_HAS(ErrorOf(j), "MergedWithNext");
  j = SmallTokenizerJson();
  j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true;
  EXPECT_HAS(ErrorOf(j), "invert");
}

TEST(TokenizerBadInputTest, MergeNamingUnknownToken) {
  auto j = SmallTokenizerJson();
  j["model"]["merges"].push_back("he zz");
  EXPECT_HAS(ErrorOf(j), "token 'zz' is not in the vocab");
  j = SmallTokenizerJson();
  j["model"]["merges"].push_back("h w");  // both known, "hw" is not
  EXPECT_HAS(ErrorOf(j), "merged token 'hw'");
  j = SmallTokenizerJson();
  j["model"]["merges"].push_back("hello");
  EXPECT_HAS(ErrorOf(j), "merges[5]");
  j = SmallTokenizerJson();
  j["model"]["merges"].push_back(42);
  EXPECT_HAS(ErrorOf(j), "merges[5]");
}

TEST(TokenizerBadInputTest, DuplicateIds) {
  auto j = SmallTokenizerJson();
  j["model"]["vocab"]["dup"] = 257;
  EXPECT_HAS(ErrorOf(j), "id 257 is used by both");
  j = SmallTokenizerJson();
  j["added_tokens"][1]["id"] = 261;
  EXPECT_HAS(ErrorOf(j), "id 261 is used by another added token");
  j = SmallTokenizerJson();
  j["model"]["vocab"]["neg"] = -4;
  EXPECT_HAS(ErrorOf(j), "non-negative");
}

TEST(TokenizerBadInputTest, AddedTokenIdClashesWithVocab) {
  auto j = SmallTokenizerJson();
  j["added_tokens"][0]["id"] = 258;  // "hell"
  EXPECT_HAS(ErrorOf(j), "already the vocab token 'hell'");
}

TEST(TokenizerBadInputTest, MalformedFields) {
  auto j = SmallTokenizerJson();
  j["model"]["vocab"] = nlohmann::json::array();
  EXPECT_HAS(ErrorOf(j), "model.vocab");
  j = SmallTokenizerJson();
  j["added_tokens"][0]["content"] = 5;
  EXPECT_HAS(ErrorOf(j), "added_tokens[0]");
  j = SmallTokenizerJson();
  j["added_tokens"][0]["lstrip"] = true;
  EXPECT_HAS(ErrorOf(j), "lstrip");
  j = SmallTokenizerJson();
  j["normalizer"] = {{"type", "NFC"}};
  EXPECT_HAS(ErrorOf(j), "normalizer");
  j = SmallTokenizerJson();
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_HAS(ErrorOf(j), "decoder");
  j = SmallTokenizerJson();
  j["added_tokens"][0]["special"] = "yes";  // nlohmann throws on get<bool>: caught at the boundary
  EXPECT_FALSE(Tokenizer::FromJson(j).ok());
}

TEST(TokenizerBadInputTest, UnreadableFiles) {
  TempDir dir;
  auto missing = Tokenizer::Load(dir / "nope.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_HAS(missing.status().message(), "nope.json");
  {
    std::ofstream out(dir / "broken.json");
    out << "{\"model\": {\"vocab\": ";
  }
  auto broken = Tokenizer::Load(dir / "broken.json");
  ASSERT_FALSE(broken.ok());
  EXPECT_HAS(broken.status().message(), "broken.json");
}

TEST(TokenizerBadInputTest, HugeRunsEncode) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  // Megabyte-long single pieces: a word, a whitespace run before a word, digits, punctuation.
  for (const std::string& text :
       {std::string(1 << 20, 'a'), std::string(1 << 20, ' ') + "x", std::string(1 << 20, '7'),
        std::string(1 << 20, '!') + "\n", std::string(1 << 18, '\t') + "\n\n"}) {
    auto ids = tok->Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status().message();
    EXPECT_EQ(tok->Decode(*ids, false), text);
  }
}

TEST(TokenizerBadInputTest, RandomBytesAndIdsNeverCrash) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  std::mt19937 rng(1234);
  for (int round = 0; round < 2000; ++round) {
    std::string text(rng() % 64, '\0');
    for (char& c : text) c = static_cast<char>(rng() % 256);
    auto ids = tok->Encode(text);
    if (ids.ok()) {
      EXPECT_EQ(tok->Decode(*ids, false), text);  // only valid UTF-8 gets here
    }
    std::vector<int32_t> random_ids(rng() % 16);
    for (int32_t& id : random_ids) id = static_cast<int32_t>(rng() % 140000) - 2000;
    const std::string once = tok->Decode(random_ids, false);
    tokenizer::DecodeStream stream(*tok, false);
    std::string streamed;
    for (int32_t id : random_ids) streamed += stream.Next(id);
    streamed += stream.Finish();
    EXPECT_EQ(streamed, once);
  }
}

}  // namespace
}  // namespace dsv3::testing
