#include "model/router.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace dsv3 {

namespace {

constexpr int64_t kMaxExperts = kMaxRoutedExperts;  // bounded stack use

// Indices of the n largest values, largest first; ties keep the lower index first.
void TopIndices(const double* values, int64_t count, int64_t n, int32_t* out) {
  int32_t order[kMaxExperts];
  std::iota(order, order + count, 0);
  std::partial_sort(order, order + n, order + count, [&](int32_t a, int32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  std::copy(order, order + n, out);
}

}  // namespace

int64_t MaxSelectableExperts(const ModelConfig& c) {
  if (c.topk_method == "greedy" || c.n_group <= 1) return c.n_routed_experts;
  return c.topk_group * (c.n_routed_experts / c.n_group);
}

void RouteToken(const ModelConfig& c, const float* gate_logits, const std::vector<float>& bias,
                int64_t k, int32_t* experts, float* weights) {
  const int64_t E = c.n_routed_experts;
  double scores[kMaxExperts];     // s: the "original" scores
  double selection[kMaxExperts];  // s + bias, masked to the kept groups
  if (c.scoring_func == "sigmoid") {
    for (int64_t e = 0; e < E; ++e) scores[e] = 1.0 / (1.0 + std::exp(-double{gate_logits[e]}));
  } else {
    double max_logit = -std::numeric_limits<double>::infinity();
    for (int64_t e = 0; e < E; ++e) max_logit = std::max(max_logit, double{gate_logits[e]});
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += scores[e] = std::exp(gate_logits[e] - max_logit);
    for (int64_t e = 0; e < E; ++e) scores[e] /= sum;
  }
  for (int64_t e = 0; e < E; ++e) selection[e] = scores[e] + (bias.empty() ? 0.0 : bias[e]);

  if (c.topk_method != "greedy" && c.n_group > 1) {
    const int64_t group_size = E / c.n_group;
    double group_score[kMaxExperts];
    for (int64_t g = 0; g < c.n_group; ++g) {
      const double* in_group = selection + g * group_size;
      if (c.topk_method == "noaux_tc") {
        // Sum of the two largest biased scores of the group.
        double first = -std::numeric_limits<double>::infinity(), second = first;
        for (int64_t i = 0; i < group_size; ++i) {
          if (in_group[i] > first) {
            second = first;
            first = in_group[i];
          } else if (in_group[i] > second) {
            second = in_group[i];
          }
        }
        group_score[g] = first + second;
      } else {  // group_limited_greedy: max of the scores (no bias exists there)
        group_score[g] = *std::max_element(scores + g * group_size, scores + (g + 1) * group_size);
      }
    }
    int32_t kept[kMaxExperts];
    TopIndices(group_score, c.n_group, c.topk_group, kept);
    bool keep[kMaxExperts] = {};
    for (int64_t i = 0; i < c.topk_group; ++i) keep[kept[i]] = true;
    // Dropped groups get -inf (official code), not 0.0 (HF): with 0.0 a dropped expert could win.
    for (int64_t e = 0; e < E; ++e)
      if (!keep[e / group_size]) selection[e] = -std::numeric_limits<double>::infinity();
  }

  TopIndices(selection, E, k, experts);
  double w[kMaxExperts];
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += w[i] = scores[experts[i]];  // weights from s, not s+bias
  const bool v2_rule = c.model_type == "deepseek_v2";
  const bool normalise = c.norm_topk_prob && k > 1;
  // V3: normalise, then always scale. V2 remote code: normalise OR scale, never both (spec §6.2).
  const double scale = (v2_rule && normalise) ? 1.0 : c.routed_scaling_factor;
  for (int64_t i = 0; i < k; ++i)
    weights[i] = static_cast<float>((normalise ? w[i] / sum : w[i]) * scale);
}

}  // namespace dsv3
