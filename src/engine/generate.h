// One sequence's prefill + decode loop. A Session keeps its KV cache between calls, so a chat
// re-uses the cached prefix of the conversation and only runs the new tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "engine/sampler.h"
#include "model/transformer.h"

namespace dsv3 {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingParams sampling;
  ForwardOptions forward;            // experts per token, attention path
  std::vector<int32_t> stop_tokens;  // generation ends after emitting one of these (e.g. EOS)
  int64_t prefill_chunk = 512;       // prompt tokens per forward call
};

struct GenerateStats {
  int64_t prompt_tokens = 0;  // tokens run in the prefill (after the reused cached prefix)
  int64_t reused_tokens = 0;  // cached prefix tokens not run again
  int64_t generated_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  bool stopped_by_token = false;
};

// Called with each new token; return false to stop early.
using TokenCallback = std::function<bool(int32_t token)>;

class Session {
 public:
  // capacity: the most tokens the sequence may reach (prompt + generated).
  Session(const Model& model, const ops::KernelContext& ctx, int64_t capacity);

  // Continues the sequence so that it becomes prompt + generated tokens. The longest prefix of
  // `prompt` already in the cache is kept; the rest is prefilled. Generated ids are appended to
  // *output and passed to on_token as they come.
  Result<GenerateStats> Generate(std::span<const int32_t> prompt, const GenerateOptions& options,
                                 const TokenCallback& on_token, std::vector<int32_t>* output);

  // The tokens whose keys/values the cache holds.
  const std::vector<int32_t>& tokens() const { return tokens_; }

 private:
  const Model& model_;
  ops::KernelContext ctx_;
  InferenceState state_;
  std::vector<int32_t> tokens_;
  std::vector<float> logits_;
};

// A one-shot generation from an empty cache.
Result<GenerateStats> Generate(const Model& model, const ops::KernelContext& ctx,
                               std::span<const int32_t> prompt, const GenerateOptions& options,
                               const TokenCallback& on_token, std::vector<int32_t>* output);

}  // namespace dsv3
