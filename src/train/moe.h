// The DeepSeekMoE layer for training (spec §6): y = Σ_m w_m·Expert_{idx_m}(x) + SharedExperts(x).
// Tokens are grouped by expert (in token order), each expert runs once on its rows.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "train/mlp.h"
#include "train/router.h"

namespace dsv3::train {

template <typename Real>
struct MoeWeightsRef {
  const Real* gate = nullptr;  // [E, H]
  const Real* bias = nullptr;  // [E] or null
  std::vector<MlpWeightsRef<Real>> experts;
  bool has_shared = false;
  MlpWeightsRef<Real> shared{};
};

template <typename Real>
struct MoeGradsRef {
  Real* gate = nullptr;
  std::vector<MlpGradsRef<Real>> experts;
  MlpGradsRef<Real> shared{};
};

template <typename Real>
struct MoeCache {
  RouterCache<Real> router;
  std::vector<std::vector<int32_t>> rows;   // per expert: token rows routed to it
  std::vector<std::vector<int32_t>> slots;  // per expert: which of the token's k choices it is
  std::vector<MlpCache<Real>> expert_cache;
  std::vector<std::vector<Real>> expert_out;  // per expert: [rows, H], unweighted
  MlpCache<Real> shared;
};

// x, y: [B*T, H]. Returns the balance loss (α·…, 0 when alpha is 0).
template <typename Real>
Real MoeForward(const Context& ctx, const ModelConfig& cfg, const MoeWeightsRef<Real>& w,
                const Real* x, int64_t B, int64_t T, double alpha, Real* y, MoeCache<Real>* cache);

// dx: [B*T, H] accumulated. The balance loss's gradient (weight alpha) is included.
template <typename Real>
void MoeBackward(const Context& ctx, const ModelConfig& cfg, const MoeWeightsRef<Real>& w,
                 const MoeCache<Real>& cache, int64_t B, int64_t T, double alpha, const Real* dy,
                 Real* dx, const MoeGradsRef<Real>& grads);

}  // namespace dsv3::train
