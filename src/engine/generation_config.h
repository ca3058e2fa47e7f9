// The sampling defaults a Hugging Face model directory ships in generation_config.json
// (do_sample, temperature, top_k, top_p, min_p, repetition_penalty), as transformers applies them
// when the caller does not say otherwise. DeepSeek-V3's says do_sample with temperature 0.6 and
// top_p 0.95, for instance.
#pragma once

#include <string>

#include "engine/sampler.h"
#include "util/status.h"

namespace dsv3 {

// Starts from `base` and sets what DIR/generation_config.json gives: do_sample false means greedy
// (temperature 0), do_sample true keeps the file's temperature (1.0 if absent, transformers'
// default). No file: `base` unchanged. A malformed file or field: an error naming file and key.
Result<SamplingParams> LoadGenerationConfig(const std::string& model_dir,
                                            const SamplingParams& base);

}  // namespace dsv3
