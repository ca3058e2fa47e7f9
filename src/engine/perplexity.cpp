#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dsv3 {

double NegativeLogLikelihood(const float* logits, int64_t vocab, int32_t target) {
  double max = logits[0];
  for (int64_t v = 1; v < vocab; ++v) max = std::max(max, static_cast<double>(logits[v]));
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - max);
  return max + std::log(sum) - static_cast<double>(logits[target]);
}

Result<PerplexityResult> ComputePerplexity(const Model& model, const ops::KernelContext& ctx,
                                           std::span<const int32_t> tokens,
                                           const PerplexityOptions& options) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n < 2) return Err("perplexity needs at least 2 tokens, got {}", n);
  if (options.context < 2) return Err("context must be >= 2 tokens, got {}", options.context);
  if (options.stride < 0 || options.stride > options.context)
    return Err("stride must be in [1, context = {}] (0: = context), got {}", options.context,
               options.stride);
  if (options.batch < 1) return Err("batch must be >= 1, got {}", options.batch);
  const int64_t context = std::min(options.context, n);
  const int64_t stride = options.stride == 0 ? context : std::min(options.stride, context);
  // Window starts: 0, stride, 2 stride, ... until a window reaches the end of the text; a window
  // left with nothing to score (a last non-overlapping window of one token) is skipped.
  std::vector<int64_t> starts;
  for (int64_t start = 0, next_target = 1;; start += stride) {
    const int64_t end = std::min(start + context, n);
    if (std::max(next_target, start + 1) < end) starts.push_back(start);
    next_target = end;
    if (end == n) break;
  }
  const int64_t windows = static_cast<int64_t>(starts.size());
  const int64_t V = model.config().vocab_size;
  const int64_t batch = std::min(options.batch, context);

  ForwardOptions forward = options.forward;
  forward.last_logits_only = false;
  std::vector<float> logits(static_cast<size_t>(batch * V));  // [batch, V]
  double sum = 0, sum_sq = 0;
  int64_t scored = 0, evaluated = 0;
  int64_t next_target = 1;  // the first token not scored yet
  for (int64_t w = 0; w < windows; ++w) {
    const int64_t start = starts[static_cast<size_t>(w)];
    const int64_t end = std::min(start + context, n);
    InferenceState state(model, end - start);
    evaluated += end - start;
    for (int64_t b = start; b < end; b += batch) {
      const int64_t T = std::min(batch, end - b);
      DSV3_RETURN_IF_ERROR(Forward(model, ctx, state,
                                   tokens.subspan(static_cast<size_t>(b), static_cast<size_t>(T)),
                                   forward, logits.data()));
      // logits[t] predicts tokens[b + t + 1]; score the targets no earlier window scored.
      for (int64_t t = 0; t < T; ++t) {
        const int64_t target = b + t + 1;
        if (target >= end || target < next_target) continue;
        const double nll = NegativeLogLikelihood(logits.data() + t * V, V, tokens[target]);
        sum += nll;
        sum_sq += nll * nll;
        ++scored;
      }
    }
    next_target = end;
    if (options.progress) {
      options.progress({w + 1, windows, scored,
                        std::exp(sum / static_cast<double>(std::max<int64_t>(scored, 1)))});
    }
  }

  PerplexityResult r;
  r.tokens_scored = scored;
  r.tokens_evaluated = evaluated;
  r.windows = windows;
  r.context = context;
  r.stride = stride;
  r.mean_nll = sum / static_cast<double>(scored);
  r.perplexity = std::exp(r.mean_nll);
  if (scored > 1) {
    const double variance =
        std::max(0.0, (sum_sq - sum * r.mean_nll) / static_cast<double>(scored - 1));
    r.nll_stderr = std::sqrt(variance / static_cast<double>(scored));
  }
  r.perplexity_stderr = r.perplexity * r.nll_stderr;
  return r;
}

}  // namespace dsv3
