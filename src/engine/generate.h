// The prefill + decode loop for one sequence.
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
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  bool stopped_by_token = false;
};

// Called with each new token; return false to stop early.
using TokenCallback = std::function<bool(int32_t token)>;

// Generates up to max_new_tokens after the prompt. The generated ids are appended to *output.
Result<GenerateStats> Generate(const Model& model, const ops::KernelContext& ctx,
                               std::span<const int32_t> prompt, const GenerateOptions& options,
                               const TokenCallback& on_token, std::vector<int32_t>* output);

}  // namespace dsv3
