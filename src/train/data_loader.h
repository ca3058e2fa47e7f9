// Training data: a token stream cut into windows of seq_len+1 tokens (inputs and shifted
// targets), visited in a shuffled order that is a pure function of (seed, epoch), so the loader's
// whole state is (epoch, cursor) and resume continues the exact same sequence of batches.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"

namespace dsv3::tokenizer {
class Tokenizer;
}

namespace dsv3::train {

struct LoaderState {
  int64_t epoch = 0;
  int64_t cursor = 0;  // windows of the current epoch already handed out
};

class BatchLoader {
 public:
  // Windows start every seq_len tokens; the last window must fit entirely. Errors when the
  // stream is too short for one window.
  static Result<BatchLoader> Create(std::vector<int32_t> tokens, int64_t seq_len, uint64_t seed,
                                    bool shuffle = true);

  // batch: [B, seq_len+1] (overwritten). Wraps into a new, differently shuffled epoch.
  void Next(int64_t B, std::vector<int32_t>* batch);
  // Every window in order, once (validation): windows [first, first+count).
  void Window(int64_t index, int32_t* out) const;

  int64_t num_windows() const { return num_windows_; }
  int64_t seq_len() const { return seq_len_; }
  const LoaderState& state() const { return state_; }
  void set_state(const LoaderState& s);
  int64_t num_tokens() const { return static_cast<int64_t>(tokens_.size()); }

 private:
  void Shuffle();
  std::vector<int32_t> tokens_;
  int64_t seq_len_ = 0, num_windows_ = 0;
  uint64_t seed_ = 0;
  bool shuffle_ = true;
  LoaderState state_;
  std::vector<int64_t> order_;  // window order of the current epoch
};

// Reads text files (valid UTF-8 required; errors name the file and byte offset) and encodes each
// with the tokenizer, appending eos_id after each file when eos_id >= 0.
Result<std::vector<int32_t>> TokenizeFiles(const tokenizer::Tokenizer& tok,
                                           const std::vector<std::string>& paths, int32_t eos_id);

}  // namespace dsv3::train
