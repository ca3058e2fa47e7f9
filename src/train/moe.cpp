#include "train/moe.h"

#include <algorithm>

namespace dsv3::train {

template <typename Real>
Real MoeForward(const Context& ctx, const ModelConfig& cfg, const MoeWeightsRef<Real>& w,
                const Real* x, int64_t B, int64_t T, double alpha, Real* y, MoeCache<Real>* cache) {
  const int64_t N = B * T, H = cfg.hidden_size, E = cfg.n_routed_experts;
  const int64_t k = cfg.num_experts_per_tok;
  RouterForward(ctx, cfg, w.gate, w.bias, x, N, &cache->router);
  cache->rows.assign(static_cast<size_t>(E), {});
  cache->slots.assign(static_cast<size_t>(E), {});
  for (int64_t t = 0; t < N; ++t) {
    for (int64_t m = 0; m < k; ++m) {
      const int32_t e = cache->router.experts[t * k + m];
      cache->rows[e].push_back(static_cast<int32_t>(t));
      cache->slots[e].push_back(static_cast<int32_t>(m));
    }
  }
  cache->expert_cache.resize(static_cast<size_t>(E));
  cache->expert_out.resize(static_cast<size_t>(E));
  if (w.has_shared) {
    MlpForward(ctx, w.shared, x, N, y, &cache->shared);  // y: [N, H]
  } else {
    std::fill(y, y + N * H, Real(0));
  }
  std::vector<Real> xg;
  for (int64_t e = 0; e < E; ++e) {
    const auto& rows = cache->rows[e];
    const int64_t n = static_cast<int64_t>(rows.size());
    if (n == 0) continue;
    xg.resize(static_cast<size_t>(n * H));  // xg: [n, H] the expert's tokens
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + rows[i] * H, H, &xg[i * H]);
    auto& out = cache->expert_out[e];
    out.resize(static_cast<size_t>(n * H));
    MlpForward(ctx, w.experts[e], xg.data(), n, out.data(), &cache->expert_cache[e]);
    for (int64_t i = 0; i < n; ++i) {
      const Real wt = cache->router.weights[rows[i] * k + cache->slots[e][i]];
      for (int64_t j = 0; j < H; ++j) y[rows[i] * H + j] += wt * out[i * H + j];
    }
  }
  return alpha > 0 ? BalanceLoss(cfg, cache->router, B, T, alpha) : Real(0);
}

template <typename Real>
void MoeBackward(const Context& ctx, const ModelConfig& cfg, const MoeWeightsRef<Real>& w,
                 const MoeCache<Real>& cache, int64_t B, int64_t T, double alpha, const Real* dy,
                 Real* dx, const MoeGradsRef<Real>& grads) {
  const int64_t N = B * T, H = cfg.hidden_size, E = cfg.n_routed_experts;
  const int64_t k = cfg.num_experts_per_tok;
  if (w.has_shared) MlpBackward(ctx, w.shared, cache.shared, N, dy, dx, grads.shared);
  std::vector<Real> dweights(static_cast<size_t>(N * k), Real(0));  // [N, k]
  std::vector<Real> dout, dxg;
  for (int64_t e = 0; e < E; ++e) {
    const auto& rows = cache.rows[e];
    const int64_t n = static_cast<int64_t>(rows.size());
    if (n == 0) continue;
    const auto& out = cache.expert_out[e];
    dout.resize(static_cast<size_t>(n * H));  // dout: [n, H] = w·dy
    for (int64_t i = 0; i < n; ++i) {
      const int64_t slot = rows[i] * k + cache.slots[e][i];
      const Real wt = cache.router.weights[slot];
      const Real* dyr = dy + rows[i] * H;
      Real dot = 0;
      for (int64_t j = 0; j < H; ++j) {
        dout[i * H + j] = wt * dyr[j];
        dot += dyr[j] * out[i * H + j];
      }
      dweights[slot] = dot;
    }
    dxg.assign(static_cast<size_t>(n * H), Real(0));
    MlpBackward(ctx, w.experts[e], cache.expert_cache[e], n, dout.data(), dxg.data(),
                grads.experts[e]);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < H; ++j) dx[rows[i] * H + j] += dxg[i * H + j];
  }
  std::vector<Real> dscores;
  if (alpha > 0) {
    dscores.assign(static_cast<size_t>(N * E), Real(0));
    BalanceLossBackward(cfg, cache.router, B, T, alpha, dscores.data());
  }
  RouterBackward(ctx, cfg, w.gate, cache.router, N, dweights.data(),
                 dscores.empty() ? nullptr : dscores.data(), dx, grads.gate);
}

#define DSV3_INSTANTIATE_MOE(Real)                                                                \
  template Real MoeForward<Real>(const Context&, const ModelConfig&, const MoeWeightsRef<Real>&,  \
                                 const Real*, int64_t, int64_t, double, Real*, MoeCache<Real>*);  \
  template void MoeBackward<Real>(const Context&, const ModelConfig&, const MoeWeightsRef<Real>&, \
                                  const MoeCache<Real>&, int64_t, int64_t, double, const Real*,   \
                                  Real*, const MoeGradsRef<Real>&);
DSV3_INSTANTIATE_MOE(float)
DSV3_INSTANTIATE_MOE(double)

}  // namespace dsv3::train
