#include "engine/generate.h"

#include <algorithm>
#include <chrono>

namespace dsv3 {

namespace {
double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

Result<GenerateStats> Generate(const Model& model, const ops::KernelContext& ctx,
                               std::span<const int32_t> prompt, const GenerateOptions& options,
                               const TokenCallback& on_token, std::vector<int32_t>* output) {
  DSV3_RETURN_IF_ERROR(options.sampling.Validate());
  if (options.max_new_tokens < 0) return Err("max new tokens must be >= 0");
  if (options.prefill_chunk < 1) return Err("prefill chunk must be >= 1");
  const ModelConfig& c = model.config();
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (capacity > c.max_position_embeddings)
    return Err("prompt ({}) + new tokens ({}) exceed max_position_embeddings {}", prompt.size(),
               options.max_new_tokens, c.max_position_embeddings);
  InferenceState state(model, std::max<int64_t>(capacity, 1));
  DSV3_RETURN_IF_ERROR(CheckForwardInput(model, state, prompt, options.forward));

  GenerateStats stats;
  stats.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  history.reserve(static_cast<size_t>(capacity));
  ForwardOptions forward = options.forward;
  forward.last_logits_only = true;

  auto start = std::chrono::steady_clock::now();
  for (size_t begin = 0; begin < prompt.size();
       begin += static_cast<size_t>(options.prefill_chunk)) {
    const size_t n = std::min(prompt.size() - begin, static_cast<size_t>(options.prefill_chunk));
    DSV3_RETURN_IF_ERROR(
        Forward(model, ctx, state, prompt.subspan(begin, n), forward, logits.data()));
  }
  stats.prefill_seconds = SecondsSince(start);

  Sampler sampler(options.sampling, c.vocab_size);
  start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const int32_t token = sampler.Sample(logits.data(), history);
    history.push_back(token);
    output->push_back(token);
    ++stats.generated_tokens;
    const bool stop = std::find(options.stop_tokens.begin(), options.stop_tokens.end(), token) !=
                      options.stop_tokens.end();
    if (on_token && !on_token(token)) break;
    if (stop) {
      stats.stopped_by_token = true;
      break;
    }
    if (i + 1 == options.max_new_tokens) break;
    const int32_t next[1] = {token};
    DSV3_RETURN_IF_ERROR(Forward(model, ctx, state, next, forward, logits.data()));
  }
  stats.decode_seconds = SecondsSince(start);
  return stats;
}

}  // namespace dsv3
