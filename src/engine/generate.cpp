#include "engine/generate.h"

#include <algorithm>
#include <chrono>

namespace dsv3 {

namespace {
double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

Session::Session(const Model& model, const ops::KernelContext& ctx, int64_t capacity)
    : model_(model),
      ctx_(ctx),
      state_(model, std::max<int64_t>(capacity, 1)),
      logits_(static_cast<size_t>(model.config().vocab_size)) {
  tokens_.reserve(static_cast<size_t>(std::max<int64_t>(capacity, 1)));
}

Result<GenerateStats> Session::Generate(std::span<const int32_t> prompt,
                                        const GenerateOptions& options,
                                        const TokenCallback& on_token,
                                        std::vector<int32_t>* output) {
  DSV3_RETURN_IF_ERROR(options.sampling.Validate());
  if (options.max_new_tokens < 0) return Err("max new tokens must be >= 0");
  if (options.prefill_chunk < 1) return Err("prefill chunk must be >= 1");
  const int64_t needed = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (needed > state_.capacity())
    return Err("prompt ({} tokens) + new tokens ({}) exceed the context size {}", prompt.size(),
               options.max_new_tokens, state_.capacity());
  if (prompt.empty()) return Status::Error("empty prompt: at least one token is needed");
  ForwardOptions forward = options.forward;
  forward.last_logits_only = true;

  // Keep the cached prefix; at least the last prompt token runs again to produce its logits.
  size_t keep = 0;
  while (keep < tokens_.size() && keep < prompt.size() && tokens_[keep] == prompt[keep]) ++keep;
  keep = std::min(keep, prompt.size() - 1);
  tokens_.resize(keep);
  state_.cache().set_length(static_cast<int64_t>(keep));
  DSV3_RETURN_IF_ERROR(CheckForwardInput(model_, state_, prompt.subspan(keep), forward));

  GenerateStats stats;
  stats.reused_tokens = static_cast<int64_t>(keep);
  stats.prompt_tokens = static_cast<int64_t>(prompt.size() - keep);
  auto start = std::chrono::steady_clock::now();
  for (size_t begin = keep; begin < prompt.size();
       begin += static_cast<size_t>(options.prefill_chunk)) {
    const size_t n = std::min(prompt.size() - begin, static_cast<size_t>(options.prefill_chunk));
    DSV3_RETURN_IF_ERROR(
        Forward(model_, ctx_, state_, prompt.subspan(begin, n), forward, logits_.data()));
    tokens_.insert(tokens_.end(), prompt.begin() + begin, prompt.begin() + begin + n);
  }
  stats.prefill_seconds = SecondsSince(start);

  Sampler sampler(options.sampling, model_.config().vocab_size);
  start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const int32_t token = sampler.Sample(logits_.data(), tokens_);
    output->push_back(token);
    ++stats.generated_tokens;
    const bool stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token) !=
                      options.stop_tokens.end();
    const bool go_on = !on_token || on_token(token);
    if (stop) stats.stopped_by_token = true;
    // The last token is run through the model too (unless the sequence is full), so the cache
    // holds the whole sequence and the next turn continues from it.
    if (state_.length() < state_.capacity()) {
      const int32_t next[1] = {token};
      DSV3_RETURN_IF_ERROR(Forward(model_, ctx_, state_, next, forward, logits_.data()));
      tokens_.push_back(token);
    }
    if (stop || !go_on) break;
  }
  stats.decode_seconds = SecondsSince(start);
  return stats;
}

Result<GenerateStats> Generate(const Model& model, const ops::KernelContext& ctx,
                               std::span<const int32_t> prompt, const GenerateOptions& options,
                               const TokenCallback& on_token, std::vector<int32_t>* output) {
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (capacity > model.config().max_position_embeddings)
    return Err("prompt ({}) + new tokens ({}) exceed max_position_embeddings {}", prompt.size(),
               options.max_new_tokens, model.config().max_position_embeddings);
  Session session(model, ctx, capacity);
  return session.Generate(prompt, options, on_token, output);
}

}  // namespace dsv3
