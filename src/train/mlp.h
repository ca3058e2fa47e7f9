// SwiGLU feed-forward (spec §4): down(silu(gate(x)) ⊙ up(x)), used for dense layers, routed experts
// and the shared experts. Forward saves what the backward pass needs.
#pragma once

#include <cstdint>
#include <vector>

#include "train/linear.h"

namespace dsv3::train {

template <typename Real>
struct MlpWeightsRef {
  const Real* gate;  // [I, H]
  const Real* up;    // [I, H]
  const Real* down;  // [H, I]
  int64_t H = 0, I = 0;
};

template <typename Real>
struct MlpGradsRef {
  Real* gate;
  Real* up;
  Real* down;
};

template <typename Real>
struct MlpCache {
  std::vector<Real> x;     // [N, H] input
  std::vector<Real> g, u;  // [N, I] gate and up projections
  std::vector<Real> a;     // [N, I] silu(g) ⊙ u
};

// y: [N, H] (overwritten)
template <typename Real>
void MlpForward(const Context& ctx, const MlpWeightsRef<Real>& w, const Real* x, int64_t N, Real* y,
                MlpCache<Real>* cache);

// dx: [N, H] accumulated; grads accumulated.
template <typename Real>
void MlpBackward(const Context& ctx, const MlpWeightsRef<Real>& w, const MlpCache<Real>& cache,
                 int64_t N, const Real* dy, Real* dx, const MlpGradsRef<Real>& grads);

}  // namespace dsv3::train
