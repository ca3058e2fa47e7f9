// The DeepSeekMoE router for training (spec §6): discrete expert selection (exactly the model's
// RouteToken, incl. groups and the correction bias), combination weights recomputed in Real from
// the scores so gradients flow through the scores of the selected experts into gate.weight.
// The correction bias only steers selection and gets no gradient. Also the sequence-wise balance
// loss (DeepSeek-V3 report eq. 17-20).
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "train/linear.h"

namespace dsv3::train {

template <typename Real>
struct RouterCache {
  std::vector<Real> x;           // [N, H]
  std::vector<Real> scores;      // [N, E] s: sigmoid or softmax of the gate logits
  std::vector<int32_t> experts;  // [N, k] selected experts
  std::vector<Real> weights;     // [N, k] combination weights (normalised, scaled)
};

// gate: [E, H]; bias: [E] or null (selection only).
template <typename Real>
void RouterForward(const Context& ctx, const ModelConfig& cfg, const Real* gate, const Real* bias,
                   const Real* x, int64_t N, RouterCache<Real>* cache);

// dweights: [N, k] gradient of the combination weights; dscores: [N, E] extra gradient on the
// scores (the balance loss) or null. dx: [N, H] accumulated; dgate: [E, H] accumulated.
template <typename Real>
void RouterBackward(const Context& ctx, const ModelConfig& cfg, const Real* gate,
                    const RouterCache<Real>& cache, int64_t N, const Real* dweights,
                    const Real* dscores, Real* dx, Real* dgate);

// Sequence-wise balance loss over B sequences of T tokens, averaged over sequences:
// L = α/B Σ_b Σ_i f_i P_i, f_i = E/(k T) Σ_t 1[t selects i], P_i = 1/T Σ_t s_{i,t}/Σ_j s_{j,t}.
template <typename Real>
Real BalanceLoss(const ModelConfig& cfg, const RouterCache<Real>& cache, int64_t B, int64_t T,
                 double alpha);
// Adds dL/ds to dscores [N, E].
template <typename Real>
void BalanceLossBackward(const ModelConfig& cfg, const RouterCache<Real>& cache, int64_t B,
                         int64_t T, double alpha, Real* dscores);

}  // namespace dsv3::train
