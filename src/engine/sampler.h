// Picks the next token from logits: greedy, or temperature sampling with top-k, top-p, min-p and
// a repetition penalty (applied in the Hugging Face order: penalty, temperature, top-k, top-p,
// min-p). Owns its random generator: the same seed gives the same tokens.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "util/status.h"

namespace dsv3 {

struct SamplingParams {
  double temperature = 0.0;         // 0: greedy (argmax)
  int64_t top_k = 0;                // 0: off
  double top_p = 1.0;               // 1: off
  double min_p = 0.0;               // 0: off
  double repetition_penalty = 1.0;  // 1: off; > 1 discourages tokens already in the sequence
  uint64_t seed = 0;

  Status Validate() const;
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, int64_t vocab_size);

  // logits: [vocab] (modified in place by the penalty); history: the tokens so far.
  int32_t Sample(float* logits, std::span<const int32_t> history);

 private:
  double Uniform();  // [0, 1), from the engine's bits (portable, unlike std distributions)

  SamplingParams params_;
  int64_t vocab_size_;
  std::mt19937_64 engine_;
  std::vector<int32_t> candidates_;
  std::vector<double> probs_;
  std::vector<uint8_t> seen_;
};

}  // namespace dsv3
