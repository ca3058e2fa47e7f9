#include "tokenizer/bpe_trainer.h"

#include <algorithm>
#include <array>
#include <filesystem>
#include <queue>

#include "io/files.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/deepseek_v3_defaults.h"
#include "tokenizer/utf8.h"

namespace dsv3::tokenizer {
namespace {

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}
int32_t Left(uint64_t key) {
  return static_cast<int32_t>(key >> 32);
}
int32_t Right(uint64_t key) {
  return static_cast<int32_t>(key & 0xFFFFFFFFu);
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count = 0;
  int64_t last_step = -1;  // merge step that last visited this word (dedupes the index)
};

// Max-heap entry: most frequent pair first; among equals the smallest (left, right) ids, so
// that training is deterministic.
struct Candidate {
  int64_t count;
  uint64_t pair;
  bool operator<(const Candidate& o) const {
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

nlohmann::ordered_json AddedTokenJson(int32_t id, const SpecialTokenSpec& spec) {
  nlohmann::ordered_json j;
  j["id"] = id;
  j["content"] = spec.content;
  j["single_word"] = false;
  j["lstrip"] = false;
  j["rstrip"] = false;
  j["normalized"] = spec.normalized;
  j["special"] = spec.special;
  return j;
}

nlohmann::ordered_json ConfigToken(const std::string& content) {
  nlohmann::ordered_json j;
  j["__type"] = "AddedToken";
  j["content"] = content;
  j["lstrip"] = false;
  j["normalized"] = true;
  j["rstrip"] = false;
  j["single_word"] = false;
  return j;
}

}  // namespace

Result<BpeTrainer> BpeTrainer::Create() {
  BpeTrainer trainer;
  nlohmann::json pre_json;
  try {
    pre_json = nlohmann::json::parse(DeepSeekV3PreTokenizerJson());
  } catch (const nlohmann::json::exception& e) {
    return Err("internal: DeepSeek-V3 pre-tokenizer settings: {}", e.what());
  }
  DSV3_ASSIGN_OR_RETURN(trainer.pre_tokenizer_, PreTokenizer::FromJson(pre_json));
  std::vector<AddedToken> added;
  for (const auto& list : {DeepSeekV3LeadingTokens(), DeepSeekV3TrailingTokens()}) {
    for (const SpecialTokenSpec& spec : list) {
      added.push_back(
          {static_cast<int32_t>(added.size()), spec.content, spec.special, spec.normalized});
    }
  }
  trainer.added_matcher_ = AddedTokenMatcher(added);
  return trainer;
}

Status BpeTrainer::AddText(std::string_view text) {
  if (const auto bad = FindInvalidUtf8(text); bad.has_value()) {
    return Err("training text is not valid UTF-8 (byte {})", *bad);
  }
  std::vector<Segment> segments;
  added_matcher_.Split(text, 0, text.size(), &segments);
  MatchScratch scratch;
  std::vector<std::string_view> pieces;
  for (const Segment& s : segments) {
    if (s.added_id >= 0) continue;
    pieces.clear();
    DSV3_RETURN_IF_ERROR(
        pre_tokenizer_.Split(text.substr(s.begin, s.end - s.begin), &pieces, &scratch));
    for (std::string_view piece : pieces) ++piece_counts_[std::string(piece)];
  }
  return Status::Ok();
}

Result<TrainedTokenizer> BpeTrainer::Train(const BpeTrainerOptions& options) const {
  const std::vector<SpecialTokenSpec> leading = DeepSeekV3LeadingTokens();
  const std::vector<SpecialTokenSpec> trailing = DeepSeekV3TrailingTokens();
  const auto first_byte_id = static_cast<int32_t>(leading.size());
  const int32_t first_merge_id = first_byte_id + 256;
  if (options.vocab_size <= first_merge_id) {
    return Err("--vocab-size must be above {} (special tokens + 256 bytes)", first_merge_id);
  }
  if (options.min_frequency < 1) return Err("min_frequency must be at least 1");
  ByteLevelTable table;

  // Ids: leading specials, then the 256 bytes in the order of their byte-level characters (as
  // GPT-2 and DeepSeek-V3 number them), then merges in the order they were learnt.
  std::vector<std::string> token_bytes;  // raw bytes of each id (specials: their content)
  for (const auto& spec : leading) token_bytes.push_back(spec.content);
  std::array<int32_t, 256> byte_id{};
  {
    std::vector<std::pair<uint32_t, int>> order;
    for (int b = 0; b < 256; ++b) order.push_back({table.CharOf(static_cast<uint8_t>(b)), b});
    std::sort(order.begin(), order.end());
    for (const auto& [ch, b] : order) {
      byte_id[b] = static_cast<int32_t>(token_bytes.size());
      token_bytes.push_back(std::string(1, static_cast<char>(b)));
    }
  }
  std::unordered_map<std::string, int32_t> id_of_bytes;
  for (int32_t id = first_byte_id; id < first_merge_id; ++id) id_of_bytes[token_bytes[id]] = id;

  // Words in a fixed order, so that nothing depends on hash-map iteration.
  std::vector<const std::pair<const std::string, int64_t>*> sorted;
  sorted.reserve(piece_counts_.size());
  for (const auto& entry : piece_counts_) sorted.push_back(&entry);
  std::sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->first < y->first; });
  std::vector<Word> words;
  words.reserve(sorted.size());
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<uint32_t>> pair_words;
  for (const auto* entry : sorted) {
    Word w;
    w.count = entry->second;
    for (char c : entry->first) w.symbols.push_back(byte_id[static_cast<uint8_t>(c)]);
    const auto index = static_cast<uint32_t>(words.size());
    for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
      const uint64_t key = PairKey(w.symbols[i], w.symbols[i + 1]);
      pair_counts[key] += w.count;
      auto& where = pair_words[key];
      if (where.empty() || where.back() != index) where.push_back(index);
    }
    words.push_back(std::move(w));
  }
  std::priority_queue<Candidate> heap;
  {
    std::vector<Candidate> initial;
    for (const auto& [key, count] : pair_counts) initial.push_back({count, key});
    std::sort(initial.begin(), initial.end());  // a fixed heap build order
    for (const Candidate& c : initial) heap.push(c);
  }

  const int64_t wanted = options.vocab_size - first_merge_id;
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::unordered_map<uint64_t, int64_t> delta;
  while (static_cast<int64_t>(merges.size()) < wanted && !heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    auto it = pair_counts.find(top.pair);
    const int64_t actual = it == pair_counts.end() ? 0 : it->second;
    if (actual != top.count) {
      if (actual > 0) heap.push({actual, top.pair});
      continue;
    }
    if (actual < options.min_frequency) break;
    const int32_t a = Left(top.pair), b = Right(top.pair);
    std::string merged_bytes = token_bytes[a] + token_bytes[b];
    int32_t merged;
    if (auto found = id_of_bytes.find(merged_bytes); found != id_of_bytes.end()) {
      merged = found->second;  // another split already built this token
    } else {
      merged = static_cast<int32_t>(token_bytes.size());
      id_of_bytes.emplace(merged_bytes, merged);
      token_bytes.push_back(std::move(merged_bytes));
    }
    const auto step = static_cast<int64_t>(merges.size());
    merges.push_back({a, b});

    delta.clear();
    const std::vector<uint32_t> affected = std::move(pair_words[top.pair]);
    pair_words.erase(top.pair);
    std::vector<int32_t> updated;
    for (uint32_t index : affected) {
      Word& w = words[index];
      if (w.last_step == step) continue;
      w.last_step = step;
      updated.clear();
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == a && w.symbols[i + 1] == b) {
          updated.push_back(merged);
          ++i;
        } else {
          updated.push_back(w.symbols[i]);
        }
      }
      if (updated.size() == w.symbols.size()) continue;  // stale index entry
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i) {
        delta[PairKey(w.symbols[i], w.symbols[i + 1])] -= w.count;
      }
      for (size_t i = 0; i + 1 < updated.size(); ++i) {
        const uint64_t key = PairKey(updated[i], updated[i + 1]);
        delta[key] += w.count;
        if (updated[i] == merged || updated[i + 1] == merged) {
          auto& where = pair_words[key];
          if (where.empty() || where.back() != index) where.push_back(index);
        }
      }
      w.symbols.swap(updated);
    }
    // Apply in key order so that the heap sees the same pushes on every run.
    std::vector<std::pair<uint64_t, int64_t>> changes(delta.begin(), delta.end());
    std::sort(changes.begin(), changes.end());
    for (const auto& [key, change] : changes) {
      if (change == 0) continue;
      int64_t& count = pair_counts[key];
      count += change;
      if (count <= 0) {
        pair_counts.erase(key);
      } else if (change > 0) {
        heap.push({count, key});
      }
    }
    if (options.progress && (merges.size() % 64 == 0)) {
      options.progress(static_cast<int64_t>(merges.size()), wanted);
    }
  }
  if (options.progress) options.progress(static_cast<int64_t>(merges.size()), wanted);

  // tokenizer.json, in the layout Hugging Face writes.
  TrainedTokenizer out;
  out.merges = static_cast<int64_t>(merges.size());
  const auto bpe_size = static_cast<int32_t>(token_bytes.size());
  nlohmann::ordered_json& tj = out.tokenizer_json;
  tj["version"] = "1.0";
  tj["truncation"] = nullptr;
  tj["padding"] = nullptr;
  tj["added_tokens"] = nlohmann::ordered_json::array();
  for (size_t i = 0; i < leading.size(); ++i) {
    tj["added_tokens"].push_back(AddedTokenJson(static_cast<int32_t>(i), leading[i]));
  }
  for (size_t i = 0; i < trailing.size(); ++i) {
    tj["added_tokens"].push_back(AddedTokenJson(bpe_size + static_cast<int32_t>(i), trailing[i]));
  }
  tj["normalizer"] = {{"type", "Sequence"}, {"normalizers", nlohmann::ordered_json::array()}};
  tj["pre_tokenizer"] = nlohmann::ordered_json::parse(DeepSeekV3PreTokenizerJson());
  tj["post_processor"] = {{"type", "ByteLevel"},
                          {"add_prefix_space", true},
                          {"trim_offsets", false},
                          {"use_regex", true}};
  tj["decoder"] = {{"type", "ByteLevel"},
                   {"add_prefix_space", true},
                   {"trim_offsets", true},
                   {"use_regex", true}};
  nlohmann::ordered_json model;
  model["type"] = "BPE";
  model["dropout"] = nullptr;
  model["unk_token"] = nullptr;
  model["continuing_subword_prefix"] = nullptr;
  model["end_of_word_suffix"] = nullptr;
  model["fuse_unk"] = false;
  model["byte_fallback"] = false;
  nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
  for (int32_t id = 0; id < bpe_size; ++id) {
    vocab[id < first_byte_id ? token_bytes[id] : table.FromBytes(token_bytes[id])] = id;
  }
  model["vocab"] = std::move(vocab);
  nlohmann::ordered_json merge_list = nlohmann::ordered_json::array();
  for (const auto& [a, b] : merges) {
    merge_list.push_back(table.FromBytes(token_bytes[a]) + " " + table.FromBytes(token_bytes[b]));
  }
  model["merges"] = std::move(merge_list);
  tj["model"] = std::move(model);

  // tokenizer_config.json, as DeepSeek-V3 ships it.
  nlohmann::ordered_json& cj = out.tokenizer_config_json;
  cj["add_bos_token"] = false;
  cj["add_eos_token"] = false;
  cj["bos_token"] = ConfigToken(leading[0].content);
  cj["clean_up_tokenization_spaces"] = false;
  cj["eos_token"] = ConfigToken(leading[1].content);
  cj["legacy"] = true;
  cj["model_max_length"] = 131072;
  cj["pad_token"] = ConfigToken(leading[1].content);
  cj["sp_model_kwargs"] = nlohmann::ordered_json::object();
  cj["unk_token"] = nullptr;
  cj["tokenizer_class"] = "LlamaTokenizerFast";
  cj["chat_template"] = std::string(DeepSeekV3ChatTemplate());
  return out;
}

Status WriteTrainedTokenizer(const TrainedTokenizer& trained, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Err("{}: cannot create directory: {}", dir, ec.message());
  DSV3_RETURN_IF_ERROR(
      io::WriteFileAtomic(dir + "/tokenizer.json", trained.tokenizer_json.dump(2) + "\n"));
  return io::WriteFileAtomic(dir + "/tokenizer_config.json",
                             trained.tokenizer_config_json.dump(2) + "\n");
}

}  // namespace dsv3::tokenizer
