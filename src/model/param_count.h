// Parameter counts from the config alone (what `dsv3 info` and the README report).
#pragma once

#include <cstdint>

#include "model/config.h"

namespace dsv3 {

struct ParamCounts {
  int64_t total = 0;      // main model: embeddings, all layers, final norm, lm_head
  int64_t active = 0;     // read per token: like total but only k routed experts per MoE layer
  int64_t embedding = 0;  // embed_tokens + lm_head
  int64_t mtp = 0;        // the MTP layers, not included above
};

// k: routed experts per token (0 = the config's num_experts_per_tok).
ParamCounts CountParams(const ModelConfig& config, int64_t k = 0);

}  // namespace dsv3
