#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <utility>

#include "tokenizer/unicode_ranges.h"
#include "tokenizer/utf8.h"

namespace dsv3::tokenizer {
namespace {

// Unicode White_Space (PropList.txt), what Oniguruma's \s means in the reference tokenizer.
constexpr std::string_view kWhiteSpaceSet =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// The ByteLevel pre-tokenizer's own split (use_regex: true), part of the ByteLevel definition
// rather than of any particular tokenizer.
constexpr std::string_view kByteLevelPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

pcre2_code* Code(const Regex& regex) {
  return static_cast<pcre2_code*>(regex.code());
}

std::string Pcre2ErrorText(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0)
    return "error " + std::to_string(code);
  return std::string(reinterpret_cast<const char*>(buffer));
}

size_t Utf8Length(uint8_t lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

}  // namespace

std::string RewriteForPcre2(std::string_view pattern, bool unicode16) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  size_t class_start = 0;  // index in pattern just after '[' or '[^'
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceSet) : "[" + std::string(kWhiteSpaceSet) + "]";
        ++i;
        continue;
      }
      if (e == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpaceSet) + "]";
        ++i;
        continue;
      }
      // \p{X} / \pX for a general category X: add what Unicode 15-16 assigned to X.
      if (unicode16 && (e == 'p' || (e == 'P' && !in_class))) {
        size_t name_end = i + 2;
        char category = 0;
        if (name_end + 2 < pattern.size() && pattern[name_end] == '{' &&
            pattern[name_end + 2] == '}') {
          category = pattern[name_end + 1];
          name_end += 3;
        } else if (name_end < pattern.size() && pattern[name_end] != '{') {
          category = pattern[name_end];
          name_end += 1;
        }
        const std::string_view extra = Unicode16AdditionsSince14(category);
        if (!extra.empty()) {
          const std::string base = "\\p{" + std::string(1, category) + "}";
          if (in_class) {
            out += base;
            out += extra;
          } else {
            out += e == 'P' ? "[^" : "[";
            out += base;
            out += extra;
            out += ']';
          }
          i = name_end - 1;
          continue;
        }
      }
      out += c;
      out += e;
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') {
        out += '^';
        ++i;
      }
      class_start = i + 1;
      continue;
    }
    // A ']' right after '[' or '[^' is a literal, not the end of the class.
    if (in_class && c == ']' && i != class_start) in_class = false;
    // POSIX classes like [:alpha:] inside a class contain their own ']'.
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t close = pattern.find(":]", i + 2);
      if (close != std::string_view::npos) {
        out.append(pattern.substr(i, close + 2 - i));
        i = close + 1;
        continue;
      }
    }
    out += c;
  }
  return out;
}

bool ContainsUnicode16Additions(std::string_view text) {
  const std::span<const CodePointRange> ranges = Unicode16AdditionRanges();
  const uint32_t lowest = ranges.front().first;
  // Lead bytes below 0xE1 encode code points below U+1000, under every added one (U+1C89 up).
  for (size_t pos = 0; pos < text.size(); ++pos) {
    // ASCII, the common case, 8 bytes at a time.
    while (pos + 8 <= text.size()) {
      uint64_t word;
      std::memcpy(&word, text.data() + pos, 8);
      if ((word & 0x8080808080808080ULL) != 0) break;
      pos += 8;
    }
    if (pos >= text.size()) break;
    if (static_cast<uint8_t>(text[pos]) < 0xE1) continue;
    size_t next = pos;
    const uint32_t cp = NextCodePoint(text, &next);
    if (cp >= lowest) {
      auto it = std::upper_bound(ranges.begin(), ranges.end(), cp,
                                 [](uint32_t c, const CodePointRange& r) { return c < r.first; });
      if (it != ranges.begin() && cp <= std::prev(it)->last) return true;
    }
    pos = next - 1;
  }
  return false;
}

Result<Regex> Regex::Compile(const std::string& pattern, bool literal) {
  Regex regex;
  regex.pattern_ = pattern;
  const uint32_t options = literal ? (PCRE2_UTF | PCRE2_LITERAL) : (PCRE2_UTF | PCRE2_UCP);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    return Err("bad regex '{}': {} at offset {}", pattern, Pcre2ErrorText(error_code),
               static_cast<size_t>(error_offset));
  }
  regex.code_ = code;
  // JIT is an optimisation only: without it (e.g. a platform PCRE2 built without JIT support)
  // the interpreter gives the same matches.
  regex.jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return regex;
}

Regex::Regex(Regex&& other) noexcept
    : pattern_(std::move(other.pattern_)),
      code_(std::exchange(other.code_, nullptr)),
      jit_(other.jit_) {}

Regex& Regex::operator=(Regex&& other) noexcept {
  if (this != &other) {
    if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
    pattern_ = std::move(other.pattern_);
    code_ = std::exchange(other.code_, nullptr);
    jit_ = other.jit_;
  }
  return *this;
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

MatchScratch::MatchScratch() {
  // One ovector pair is enough: only the whole match is used. pcre2_match then returns 0 for
  // patterns with groups ("ovector too small"), which still reports the whole match.
  match_data_ = pcre2_match_data_create(1, nullptr);
}

MatchScratch::MatchScratch(MatchScratch&& other) noexcept
    : pieces_a(std::move(other.pieces_a)),
      pieces_b(std::move(other.pieces_b)),
      match_data_(std::exchange(other.match_data_, nullptr)) {}

MatchScratch& MatchScratch::operator=(MatchScratch&& other) noexcept {
  if (this != &other) {
    if (match_data_ != nullptr) pcre2_match_data_free(static_cast<pcre2_match_data*>(match_data_));
    match_data_ = std::exchange(other.match_data_, nullptr);
    pieces_a = std::move(other.pieces_a);
    pieces_b = std::move(other.pieces_b);
  }
  return *this;
}

MatchScratch::~MatchScratch() {
  if (match_data_ != nullptr) pcre2_match_data_free(static_cast<pcre2_match_data*>(match_data_));
}

Result<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& j) {
  PreTokenizer pre;
  bool saw_byte_level = false;
  if (j.is_null()) return Err("pre_tokenizer: missing (a byte-level BPE needs ByteLevel)");
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return Err("pre_tokenizer: expected an object with a \"type\"");
  }
  if (j["type"] == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) {
      return Err("pre_tokenizer: Sequence without a \"pretokenizers\" array");
    }
    const auto& list = j["pretokenizers"];
    for (size_t i = 0; i < list.size(); ++i) {
      if (saw_byte_level) {
        return Err("pre_tokenizer.pretokenizers[{}]: steps after ByteLevel are not supported", i);
      }
      DSV3_RETURN_IF_ERROR(
          pre.AddStep(list[i], fmt::format("pre_tokenizer.pretokenizers[{}]", i), &saw_byte_level));
    }
  } else {
    DSV3_RETURN_IF_ERROR(pre.AddStep(j, "pre_tokenizer", &saw_byte_level));
  }
  if (!saw_byte_level) {
    return Err("pre_tokenizer: no ByteLevel step; only byte-level BPE tokenizers are supported");
  }
  return pre;
}

Status PreTokenizer::AddStep(const nlohmann::json& j, const std::string& where,
                             bool* saw_byte_level) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return Err("{}: expected an object with a \"type\"", where);
  }
  const std::string type = j["type"];
  if (type == "Split") {
    if (!j.contains("pattern") || !j["pattern"].is_object()) {
      return Err("{}: Split without a \"pattern\" object", where);
    }
    const auto& pattern = j["pattern"];
    bool literal = false;
    std::string text;
    if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      text = pattern["Regex"].get<std::string>();
    } else if (pattern.contains("String") && pattern["String"].is_string()) {
      text = pattern["String"].get<std::string>();
      literal = true;
    } else {
      return Err("{}: pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}", where);
    }
    const std::string behavior = j.value("behavior", std::string("Isolated"));
    Behavior b;
    if (behavior == "Isolated") {
      b = Behavior::kIsolated;
    } else if (behavior == "Removed") {
      b = Behavior::kRemoved;
    } else {
      return Err("{}: unsupported Split behavior '{}' (supported: Isolated, Removed)", where,
                 behavior);
    }
    if (j.value("invert", false)) return Err("{}: Split with invert: true is not supported", where);
    return AddRegexStep(text, literal, b, where);
  }
  if (type == "ByteLevel") {
    if (j.value("add_prefix_space", false)) {
      return Err("{}: ByteLevel with add_prefix_space: true is not supported", where);
    }
    if (j.value("use_regex", true)) {
      DSV3_RETURN_IF_ERROR(
          AddRegexStep(std::string(kByteLevelPattern), false, Behavior::kIsolated, where));
    }
    *saw_byte_level = true;
    return Status::Ok();
  }
  return Err("{}: unknown pre-tokenizer type '{}' (supported: Sequence, Split, ByteLevel)", where,
             type);
}

Status PreTokenizer::AddRegexStep(const std::string& pattern, bool literal, Behavior behavior,
                                  const std::string& where) {
  const std::string plain = literal ? pattern : RewriteForPcre2(pattern, /*unicode16=*/false);
  const std::string widened = literal ? pattern : RewriteForPcre2(pattern, /*unicode16=*/true);
  auto regex = Regex::Compile(plain, literal);
  if (!regex.ok()) return regex.status().WithContext(where);
  auto unicode16 = Regex::Compile(widened, literal);
  if (!unicode16.ok()) return unicode16.status().WithContext(where);
  steps_.push_back(
      {std::move(regex).value(), std::move(unicode16).value(), plain == widened, behavior});
  return Status::Ok();
}

Status PreTokenizer::ApplyStep(const Step& step, bool unicode16,
                               const std::vector<std::string_view>& in,
                               std::vector<std::string_view>* out, MatchScratch* scratch) const {
  const Regex& regex = unicode16 && !step.same ? step.unicode16 : step.regex;
  pcre2_code* code = Code(regex);
  auto* match_data = static_cast<pcre2_match_data*>(scratch->match_data());
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data);
  const bool keep_matches = step.behavior == Behavior::kIsolated;
  for (std::string_view piece : in) {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
    size_t start = 0;
    size_t gap_start = 0;
    while (start < piece.size()) {
      // The text was validated as UTF-8 by the caller, so PCRE2 need not check it again.
      const int rc = regex.jit() ? pcre2_jit_match(code, subject, piece.size(), start,
                                                   PCRE2_NO_UTF_CHECK, match_data, nullptr)
                                 : pcre2_match(code, subject, piece.size(), start,
                                               PCRE2_NO_UTF_CHECK, match_data, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        return Err("regex '{}' failed: {}", regex.pattern(), Pcre2ErrorText(rc));
      }
      const size_t match_begin = ovector[0];
      const size_t match_end = ovector[1];
      if (match_end == match_begin) {  // empty matches split nothing
        if (match_end >= piece.size()) break;
        start = match_end + Utf8Length(static_cast<uint8_t>(piece[match_end]));
        continue;
      }
      if (match_begin > gap_start) out->push_back(piece.substr(gap_start, match_begin - gap_start));
      if (keep_matches) out->push_back(piece.substr(match_begin, match_end - match_begin));
      gap_start = match_end;
      start = match_end;
    }
    if (gap_start < piece.size()) out->push_back(piece.substr(gap_start));
  }
  return Status::Ok();
}

Status PreTokenizer::Split(std::string_view text, std::vector<std::string_view>* pieces,
                           MatchScratch* scratch) const {
  if (text.empty()) return Status::Ok();
  if (steps_.empty()) {
    pieces->push_back(text);
    return Status::Ok();
  }
  const bool unicode16 = ContainsUnicode16Additions(text);
  std::vector<std::string_view>& current = scratch->pieces_a;
  std::vector<std::string_view>& next = scratch->pieces_b;
  current.clear();
  current.push_back(text);
  for (size_t s = 0; s < steps_.size(); ++s) {
    const bool last = s + 1 == steps_.size();
    std::vector<std::string_view>* out = last ? pieces : &next;
    if (!last) next.clear();
    DSV3_RETURN_IF_ERROR(ApplyStep(steps_[s], unicode16, current, out, scratch));
    if (!last) std::swap(current, next);
  }
  return Status::Ok();
}

}  // namespace dsv3::tokenizer
