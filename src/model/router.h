// DeepSeekMoE expert selection (spec §6): sigmoid or softmax scores, optional group-limited
// selection, a correction bias that steers selection only, renormalisation and scaling.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dsv3 {

// Routing works on stack arrays of this size; ModelConfig::Validate rejects larger E.
inline constexpr int64_t kMaxRoutedExperts = 1024;

// How many routed experts a token can reach: those in the kept groups (all for greedy).
int64_t MaxSelectableExperts(const ModelConfig& config);

// Routes one token. gate_logits: [E]; bias: [E] or empty. Writes k expert indices and their
// combination weights (already renormalised and multiplied by routed_scaling_factor).
// Computed in double: selection is discontinuous, so it gets the most precise inputs we have.
void RouteToken(const ModelConfig& config, const float* gate_logits, const std::vector<float>& bias,
                int64_t k, int32_t* experts, float* weights);

}  // namespace dsv3
