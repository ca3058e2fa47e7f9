#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace dsv3 {

Status SamplingParams::Validate() const {
  if (!(temperature >= 0) || !std::isfinite(temperature))
    return Err("temperature must be >= 0, got {}", temperature);
  if (top_k < 0) return Err("top-k must be >= 0, got {}", top_k);
  if (!(top_p > 0 && top_p <= 1)) return Err("top-p must be in (0, 1], got {}", top_p);
  if (!(min_p >= 0 && min_p <= 1)) return Err("min-p must be in [0, 1], got {}", min_p);
  if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty))
    return Err("repetition penalty must be > 0, got {}", repetition_penalty);
  return Status::Ok();
}

Sampler::Sampler(const SamplingParams& params, int64_t vocab_size)
    : params_(params), vocab_size_(vocab_size), engine_(params.seed) {
  candidates_.reserve(static_cast<size_t>(vocab_size));
  probs_.reserve(static_cast<size_t>(vocab_size));
  seen_.resize(static_cast<size_t>(vocab_size));
}

double Sampler::Uniform() {
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

int32_t Sampler::Sample(float* logits, std::span<const int32_t> history) {
  const int64_t V = vocab_size_;
  if (params_.repetition_penalty != 1.0) {
    // Each distinct previous token once: positive logits are divided, negative multiplied.
    std::fill(seen_.begin(), seen_.end(), 0);
    const float p = static_cast<float>(params_.repetition_penalty);
    for (int32_t token : history) {
      if (token < 0 || token >= V || seen_[token]) continue;
      seen_[token] = 1;
      logits[token] = logits[token] > 0 ? logits[token] / p : logits[token] * p;
    }
  }
  if (params_.temperature == 0.0) {
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  }
  // Candidates sorted by logit, highest first (ties: lower id first).
  candidates_.resize(static_cast<size_t>(V));
  std::iota(candidates_.begin(), candidates_.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int64_t n = V;
  if (params_.top_k > 0 && params_.top_k < V) {
    n = params_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + n, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  // Softmax of logit / temperature over the candidates, in double.
  probs_.resize(static_cast<size_t>(n));
  const double inv_t = 1.0 / params_.temperature;
  const double top = logits[candidates_[0]] * inv_t;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += probs_[i] = std::exp(logits[candidates_[i]] * inv_t - top);
  for (int64_t i = 0; i < n; ++i) probs_[i] /= sum;
  if (params_.top_p < 1.0) {
    // Smallest prefix whose mass reaches top_p (always at least one token).
    double mass = 0;
    int64_t keep = 0;
    while (keep < n) {
      mass += probs_[keep++];
      if (mass >= params_.top_p) break;
    }
    n = keep;
  }
  if (params_.min_p > 0.0) {
    const double threshold = params_.min_p * probs_[0];
    int64_t keep = 1;
    while (keep < n && probs_[keep] >= threshold) ++keep;
    n = keep;
  }
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += probs_[i];
  double u = Uniform() * total;
  for (int64_t i = 0; i < n; ++i) {
    u -= probs_[i];
    if (u < 0) return candidates_[i];
  }
  return candidates_[n - 1];
}

}  // namespace dsv3
