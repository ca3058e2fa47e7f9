// The pre-tokenizer of a byte-level BPE tokenizer.json (spec/tokenizer.md §3): Split steps whose
// regexes come from the file, applied in order, each to every piece the previous step produced,
// then ByteLevel. Pieces are byte ranges of the input; the ByteLevel character mapping itself is
// skipped because BPE runs on bytes.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/status.h"

namespace dsv3::tokenizer {

// A compiled PCRE2 pattern (UTF + UCP, JIT when available). Immutable once built, so one instance
// is shared by all threads; each matching thread brings its own MatchScratch.
class Regex {
 public:
  // literal == true matches the pattern text as a plain string.
  static Result<Regex> Compile(const std::string& pattern, bool literal);
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  const std::string& pattern() const { return pattern_; }
  void* code() const { return code_; }
  bool jit() const { return jit_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*, kept opaque to keep pcre2.h out of our headers
  bool jit_ = false;
};

// Per-call matching state (pcre2 match data). Not shareable between threads.
class MatchScratch {
 public:
  MatchScratch();
  MatchScratch(MatchScratch&&) noexcept;
  MatchScratch& operator=(MatchScratch&&) noexcept;
  ~MatchScratch();
  void* match_data() const { return match_data_; }

  std::vector<std::string_view> pieces_a;
  std::vector<std::string_view> pieces_b;

 private:
  void* match_data_ = nullptr;
};

// Adapts a tokenizer.json regex to PCRE2 so that it matches as the reference's Oniguruma does:
// \s and \S (outside classes; \s inside them too) become the exact Unicode White_Space set
// (PCRE2's UCP \s also matches U+180E, through \h), and each general category \p{L}, \p{M},
// \p{N}, \p{P}, \p{S} (and \P{..} outside classes) gains the code points Unicode 15-16 assigned
// to it, which Debian 12's PCRE2 (Unicode 14 tables) would call unassigned.
// With unicode16 == false only \s/\S are rewritten: such a regex matches exactly like the full
// rewrite on text without code points new in Unicode 15-16, and runs about twice as fast (PCRE2's
// JIT tests the added ranges one by one).
std::string RewriteForPcre2(std::string_view pattern, bool unicode16 = true);

// Whether valid UTF-8 text holds a code point that Unicode 15-16 added to L, M, N, P or S.
bool ContainsUnicode16Additions(std::string_view text);

class PreTokenizer {
 public:
  // j is the "pre_tokenizer" value of tokenizer.json. A byte-level BPE needs a ByteLevel step
  // (alone or last in a Sequence).
  static Result<PreTokenizer> FromJson(const nlohmann::json& j);

  // Appends the pieces of valid UTF-8 text to pieces. Errors only if the regex engine fails
  // (e.g. a resource limit), never on the text itself.
  Status Split(std::string_view text, std::vector<std::string_view>* pieces,
               MatchScratch* scratch) const;

 private:
  enum class Behavior { kIsolated, kRemoved };
  struct Step {
    Regex regex;       // for text without Unicode 15-16 additions
    Regex unicode16;   // same with widened \p{..} classes
    bool same = true;  // the two patterns are identical (no \p{..} to widen)
    Behavior behavior;
  };
  Status AddStep(const nlohmann::json& j, const std::string& where, bool* saw_byte_level);
  Status ApplyStep(const Step& step, bool unicode16, const std::vector<std::string_view>& in,
                   std::vector<std::string_view>* out, MatchScratch* scratch) const;
  Status AddRegexStep(const std::string& pattern, bool literal, Behavior behavior,
                      const std::string& where);

  std::vector<Step> steps_;
};

}  // namespace dsv3::tokenizer
