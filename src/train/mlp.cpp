#include "train/mlp.h"

#include <cmath>

namespace dsv3::train {

template <typename Real>
void MlpForward(const Context& ctx, const MlpWeightsRef<Real>& w, const Real* x, int64_t N, Real* y,
                MlpCache<Real>* cache) {
  const int64_t H = w.H, I = w.I;
  cache->x.assign(x, x + N * H);
  cache->g.resize(static_cast<size_t>(N * I));
  cache->u.resize(static_cast<size_t>(N * I));
  cache->a.resize(static_cast<size_t>(N * I));
  LinearForward(ctx, x, N, w.gate, I, H, cache->g.data());  // g: [N, I]
  LinearForward(ctx, x, N, w.up, I, H, cache->u.data());    // u: [N, I]
  for (int64_t i = 0; i < N * I; ++i) {
    const Real g = cache->g[i];
    cache->a[i] = g / (Real(1) + std::exp(-g)) * cache->u[i];
  }
  LinearForward(ctx, cache->a.data(), N, w.down, H, I, y);  // y: [N, H]
}

template <typename Real>
void MlpBackward(const Context& ctx, const MlpWeightsRef<Real>& w, const MlpCache<Real>& cache,
                 int64_t N, const Real* dy, Real* dx, const MlpGradsRef<Real>& grads) {
  const int64_t H = w.H, I = w.I;
  std::vector<Real> da(static_cast<size_t>(N * I), Real(0));  // da: [N, I]
  LinearBackward(ctx, cache.a.data(), N, w.down, H, I, dy, da.data(), grads.down);
  std::vector<Real> dg(static_cast<size_t>(N * I)), du(static_cast<size_t>(N * I));
  for (int64_t i = 0; i < N * I; ++i) {
    const Real g = cache.g[i];
    const Real sig = Real(1) / (Real(1) + std::exp(-g));
    const Real silu = g * sig;
    du[i] = da[i] * silu;
    // silu'(g) = σ(g)·(1 + g·(1 − σ(g)))
    dg[i] = da[i] * cache.u[i] * sig * (Real(1) + g * (Real(1) - sig));
  }
  LinearBackward(ctx, cache.x.data(), N, w.gate, I, H, dg.data(), dx, grads.gate);
  LinearBackward(ctx, cache.x.data(), N, w.up, I, H, du.data(), dx, grads.up);
}

template void MlpForward<float>(const Context&, const MlpWeightsRef<float>&, const float*, int64_t,
                                float*, MlpCache<float>*);
template void MlpForward<double>(const Context&, const MlpWeightsRef<double>&, const double*,
                                 int64_t, double*, MlpCache<double>*);
template void MlpBackward<float>(const Context&, const MlpWeightsRef<float>&,
                                 const MlpCache<float>&, int64_t, const float*, float*,
                                 const MlpGradsRef<float>&);
template void MlpBackward<double>(const Context&, const MlpWeightsRef<double>&,
                                  const MlpCache<double>&, int64_t, const double*, double*,
                                  const MlpGradsRef<double>&);

}  // namespace dsv3::train
