// The tokenizer against the Hugging Face tokenizer (Rust core) on the real DeepSeek-V3
// tokenizer.json: ids, decodes and streaming decodes identical on the fixtures.
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tokenizer/decode_stream.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "tokenizer_test_util.h"

namespace dsv3::testing {
namespace {

// Fixture cases whose ids we do not match, and why: none. Debian 12's PCRE2 (10.42) has Unicode
// 14.0 tables while the reference's Oniguruma has Unicode 16, which used to split 15 of the
// uniprobe cases differently (characters added in Unicode 15-16 were "unassigned" to PCRE2).
// RewriteForPcre2 now adds those code points to each \p{..} class (src/tokenizer/
// unicode_ranges.cpp, generated from Unicode data), so every case matches. A future exception
// goes here with its reason; it must be a uniprobe/uni17probe case.
const std::set<std::string>& UnicodeVersionCases() {
  static const std::set<std::string> cases = {};
  return cases;
}

TEST(TokenizerTest, IdsMatchReferenceOnFixtures) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  int checked = 0, failed = 0;
  std::vector<std::string> mismatched;
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/expected.jsonl")) {
    const std::string id = c["id"];
    auto ids = tok->Encode(c["text"].get<std::string>());
    ASSERT_TRUE(ids.ok()) << id << ": " << ids.status().message();
    const bool same = *ids == Ids(c["ids"]);
    if (UnicodeVersionCases().count(id) != 0) {
      EXPECT_TRUE(c["cat"] == "uniprobe" || c["cat"] == "uni17probe") << id;
      continue;
    }
    ++checked;
    if (!same) {
      ++failed;
      mismatched.push_back(id);
      ADD_FAILURE() << id << " (" << c["cat"] << "): " << c["text"].dump() << "\n  got "
                    << nlohmann::json(*ids).dump() << "\n want " << c["ids"].dump();
    }
  }
  EXPECT_GT(checked, 400);
  EXPECT_EQ(failed, 0) << nlohmann::json(mismatched).dump();
}

TEST(TokenizerTest, IdsMatchReferenceOnExtraCases) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  int checked = 0;
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/extra_expected.jsonl")) {
    auto ids = tok->Encode(c["text"].get<std::string>());
    ASSERT_TRUE(ids.ok()) << ids.status().message();
    EXPECT_EQ(*ids, Ids(c["ids"])) << c["text"].dump();
    ++checked;
  }
  EXPECT_GT(checked, 10);
}

TEST(TokenizerTest, DecodeMatchesReferenceOnFixtureIds) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/expected.jsonl")) {
    const std::vector<int32_t> ids = Ids(c["ids"]);
    EXPECT_EQ(tok->Decode(ids, false), c["decoded"].get<std::string>()) << c["id"];
    EXPECT_EQ(tok->Decode(ids, true), c["decoded_skip_special"].get<std::string>()) << c["id"];
  }
}

std::string StreamDecode(const tokenizer::Tokenizer& tok, const std::vector<int32_t>& ids,
                         bool skip_special) {
  tokenizer::DecodeStream stream(tok, skip_special);
  std::string text;
  for (int32_t id : ids) {
    const std::string chunk = stream.Next(id);
    // A chunk is always complete UTF-8 on its own.
    EXPECT_FALSE(tokenizer::FindInvalidUtf8(chunk).has_value());
    text += chunk;
  }
  return text + stream.Finish();
}

TEST(TokenizerTest, DecodeCases) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  int checked = 0;
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/decode_cases.jsonl")) {
    const std::vector<int32_t> ids = Ids(c["ids"]);
    const std::string name = c["name"];
    EXPECT_EQ(tok->Decode(ids, false), c["text"].get<std::string>()) << name;
    EXPECT_EQ(tok->Decode(ids, true), c["text_skip_special"].get<std::string>()) << name;
    EXPECT_EQ(StreamDecode(*tok, ids, false), c["text"].get<std::string>()) << name;
    EXPECT_EQ(StreamDecode(*tok, ids, true), c["text_skip_special"].get<std::string>()) << name;
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

TEST(TokenizerTest, StreamingEqualsOneShotOnFixtureTexts) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/expected.jsonl")) {
    const std::vector<int32_t> ids = Ids(c["ids"]);
    for (bool skip : {false, true}) {
      EXPECT_EQ(StreamDecode(*tok, ids, skip), tok->Decode(ids, skip)) << c["id"];
    }
  }
}

TEST(TokenizerTest, RoundTripsAndNoBos) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  const std::string text = "Hello <｜end▁of▁sentence｜>";
  auto ids = tok->Encode(text);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{19923, 223, 1}));
  EXPECT_EQ(tok->Decode(*ids, false), text);
  EXPECT_EQ(tok->Decode(*ids, true), "Hello ");
  auto empty = tok->Encode("");
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(TokenizerTest, LongWordUsesHeapPathAndMatchesShortPath) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  // A 5000-letter word goes through the heap merge; its decode must round-trip and its ids must
  // equal the concatenation rule of BPE (checked against the reference in extra_expected.jsonl
  // for shorter cases).
  std::string word;
  for (int i = 0; i < 5000; ++i) word += static_cast<char>('a' + (i * 7) % 26);
  auto ids = tok->Encode(word);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(tok->Decode(*ids, false), word);
}

TEST(TokenizerTest, ConcurrentEncodesAgree) {
  DSV3_REQUIRE_DEEPSEEK_TOKENIZER(tok);
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> want;
  for (const auto& c : ReadJsonl(TokenizerDataDir() + "/expected.jsonl")) {
    if (UnicodeVersionCases().count(c["id"]) != 0) continue;
    texts.push_back(c["text"]);
    want.push_back(Ids(c["ids"]));
  }
  std::vector<int> failures(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (size_t i = t; i < texts.size() + t; ++i) {
          const size_t k = i % texts.size();
          auto ids = tok->Encode(texts[k]);
          if (!ids.ok() || *ids != want[k]) ++failures[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace dsv3::testing

namespace dsv3::testing {
namespace {

TEST(TokenizerTest, RewriteForPcre2) {
  using tokenizer::RewriteForPcre2;
  const std::string ws = RewriteForPcre2("\\s");
  EXPECT_EQ(ws.front(), '[');
  EXPECT_NE(ws.find("\\x{3000}"), std::string::npos);
  EXPECT_EQ(ws.find("180E"), std::string::npos);  // Mongolian vowel separator is not White_Space
  EXPECT_EQ(RewriteForPcre2("\\S").substr(0, 2), "[^");
  EXPECT_EQ(RewriteForPcre2("a\\\\s"), "a\\\\s");  // an escaped backslash, then 's'
  EXPECT_EQ(RewriteForPcre2("[\\]\\s]").substr(0, 4), "[\\]\\");
  const std::string letters = RewriteForPcre2("[^\\p{L}]");
  EXPECT_NE(letters.find("\\x{1E4D0}"), std::string::npos);  // Nag Mundari, Unicode 15
  EXPECT_EQ(letters.substr(0, 7), "[^\\p{L}");
  EXPECT_EQ(RewriteForPcre2("\\p{Lu}"), "\\p{Lu}");  // only the major categories are widened
  auto regex = tokenizer::Regex::Compile(RewriteForPcre2("\\p{L}+"), false);
  ASSERT_TRUE(regex.ok());
}

}  // namespace
}  // namespace dsv3::testing
