// Perplexity of a model on a token sequence (`dsv3 perplexity`), evaluated in windows of
// `context` tokens, each run from an empty KV cache.
//
// Which tokens are scored: window w covers tokens [w * stride, w * stride + context) (the last one
// clipped to the text). The first window scores every token after its first; each later window
// scores only the tokens no earlier window scored (its last `stride` tokens). So:
//   - stride == context (the default): non-overlapping windows, each scoring all its tokens after
//     its first (which has no prediction inside the window); no token is scored twice, and the
//     first token of each window is never scored.
//   - stride < context: overlapping windows; every token after the first of the text is scored
//     exactly once, with at least context - stride tokens before it in its window (the sliding-
//     window evaluation of Hugging Face's perplexity guide).
// This differs from llama-perplexity, which scores only the second half of each window.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "model/transformer.h"
#include "util/status.h"

namespace dsv3 {

struct PerplexityProgress {
  int64_t windows_done = 0;
  int64_t windows_total = 0;
  int64_t tokens_scored = 0;
  double perplexity = 0;  // over the tokens scored so far
};

struct PerplexityOptions {
  int64_t context = 512;   // tokens per window, >= 2
  int64_t stride = 0;      // 0: = context; else in [1, context]
  int64_t batch = 256;     // tokens per forward call inside a window (bounds the logits buffer)
  ForwardOptions forward;  // experts per token, attention path (last_logits_only is ignored)
  std::function<void(const PerplexityProgress&)> progress;  // after each window
};

struct PerplexityResult {
  double perplexity = 0;  // exp(mean_nll)
  double mean_nll = 0;    // mean negative log-likelihood (nats) of the scored tokens
  double nll_stderr = 0;  // standard error of mean_nll
  // perplexity * nll_stderr: the first-order standard error of the perplexity.
  double perplexity_stderr = 0;
  int64_t tokens_scored = 0;
  int64_t tokens_evaluated = 0;  // run through the model, over all windows
  int64_t windows = 0;
  int64_t context = 0;  // as used (clipped to the text)
  int64_t stride = 0;
};

// Errors: fewer than 2 tokens, context < 2, stride outside [0, context], batch < 1, and any
// Forward error (token ids outside the vocabulary among them).
Result<PerplexityResult> ComputePerplexity(const Model& model, const ops::KernelContext& ctx,
                                           std::span<const int32_t> tokens,
                                           const PerplexityOptions& options);

// -log softmax(logits)[target] in double. logits: [vocab]
double NegativeLogLikelihood(const float* logits, int64_t vocab, int32_t target);

}  // namespace dsv3
