#include "train/data_loader.h"

#include <numeric>

#include "io/files.h"
#include "tokenizer/tokenizer.h"
#include "train/rng.h"

namespace dsv3::train {

Result<BatchLoader> BatchLoader::Create(std::vector<int32_t> tokens, int64_t seq_len, uint64_t seed,
                                        bool shuffle) {
  if (seq_len < 2) return Err("sequence length must be at least 2, got {}", seq_len);
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < seq_len + 1)
    return Err("the corpus has {} tokens, fewer than one sequence of {}+1 tokens", n, seq_len);
  BatchLoader l;
  l.tokens_ = std::move(tokens);
  l.seq_len_ = seq_len;
  l.num_windows_ = (n - 1) / seq_len;
  l.seed_ = seed;
  l.shuffle_ = shuffle;
  l.Shuffle();
  return l;
}

void BatchLoader::Shuffle() {
  order_.resize(static_cast<size_t>(num_windows_));
  std::iota(order_.begin(), order_.end(), int64_t{0});
  if (!shuffle_) return;
  // Fisher-Yates with a generator seeded by (seed, epoch): no state beyond the epoch number.
  Rng rng(seed_ ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(state_.epoch + 1)));
  for (int64_t i = num_windows_ - 1; i > 0; --i)
    std::swap(order_[i], order_[rng.Below(static_cast<uint64_t>(i + 1))]);
}

void BatchLoader::set_state(const LoaderState& s) {
  state_ = s;
  Shuffle();
}

void BatchLoader::Window(int64_t index, int32_t* out) const {
  std::copy_n(&tokens_[index * seq_len_], seq_len_ + 1, out);
}

void BatchLoader::Next(int64_t B, std::vector<int32_t>* batch) {
  batch->resize(static_cast<size_t>(B * (seq_len_ + 1)));
  for (int64_t b = 0; b < B; ++b) {
    if (state_.cursor >= num_windows_) {
      ++state_.epoch;
      state_.cursor = 0;
      Shuffle();
    }
    Window(order_[state_.cursor++], batch->data() + b * (seq_len_ + 1));
  }
}

Result<std::vector<int32_t>> TokenizeFiles(const tokenizer::Tokenizer& tok,
                                           const std::vector<std::string>& paths, int32_t eos_id) {
  std::vector<int32_t> ids;
  for (const std::string& path : paths) {
    DSV3_ASSIGN_OR_RETURN(std::string text, io::ReadFile(path));
    const Status s = tok.EncodeAppend(text, &ids);
    if (!s.ok()) return s.WithContext(path);
    if (eos_id >= 0) ids.push_back(eos_id);
  }
  return ids;
}

}  // namespace dsv3::train
