#include "train/router.h"

#include <algorithm>
#include <cmath>

#include "model/router.h"

namespace dsv3::train {

namespace {

// V3: normalise (if norm_topk_prob and k > 1), then always scale; V2: one or the other (§6.2).
struct WeightRule {
  bool normalise;
  double scale;
};
WeightRule MakeWeightRule(const ModelConfig& cfg) {
  const int64_t k = cfg.num_experts_per_tok;
  const bool normalise = cfg.norm_topk_prob && k > 1;
  const bool v2 = cfg.model_type == "deepseek_v2";
  return {normalise, (v2 && normalise) ? 1.0 : cfg.routed_scaling_factor};
}

}  // namespace

template <typename Real>
void RouterForward(const Context& ctx, const ModelConfig& cfg, const Real* gate, const Real* bias,
                   const Real* x, int64_t N, RouterCache<Real>* cache) {
  const int64_t H = cfg.hidden_size, E = cfg.n_routed_experts, k = cfg.num_experts_per_tok;
  cache->x.assign(x, x + N * H);
  std::vector<Real> logits(static_cast<size_t>(N * E));  // logits: [N, E]
  LinearForward(ctx, x, N, gate, E, H, logits.data());
  cache->scores.resize(static_cast<size_t>(N * E));
  cache->experts.resize(static_cast<size_t>(N * k));
  cache->weights.resize(static_cast<size_t>(N * k));
  std::vector<float> bias_f;
  if (bias != nullptr) bias_f.assign(bias, bias + E);
  const WeightRule rule = MakeWeightRule(cfg);
  std::vector<float> logits_f(static_cast<size_t>(E));
  std::vector<float> unused(static_cast<size_t>(k));
  for (int64_t t = 0; t < N; ++t) {
    const Real* lt = &logits[t * E];
    Real* st = &cache->scores[t * E];
    if (cfg.scoring_func == "sigmoid") {
      for (int64_t e = 0; e < E; ++e) st[e] = Real(1) / (Real(1) + std::exp(-lt[e]));
    } else {
      const Real mx = *std::max_element(lt, lt + E);
      Real sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += st[e] = std::exp(lt[e] - mx);
      for (int64_t e = 0; e < E; ++e) st[e] /= sum;
    }
    // Selection is the inference model's own, so training and inference route alike.
    for (int64_t e = 0; e < E; ++e) logits_f[e] = static_cast<float>(lt[e]);
    int32_t* idx = &cache->experts[t * k];
    RouteToken(cfg, logits_f.data(), bias_f, k, idx, unused.data());
    Real sum = 0;
    for (int64_t m = 0; m < k; ++m) sum += st[idx[m]];
    for (int64_t m = 0; m < k; ++m) {
      const Real v = rule.normalise ? st[idx[m]] / sum : st[idx[m]];
      cache->weights[t * k + m] = v * static_cast<Real>(rule.scale);
    }
  }
}

template <typename Real>
void RouterBackward(const Context& ctx, const ModelConfig& cfg, const Real* gate,
                    const RouterCache<Real>& cache, int64_t N, const Real* dweights,
                    const Real* dscores, Real* dx, Real* dgate) {
  const int64_t H = cfg.hidden_size, E = cfg.n_routed_experts, k = cfg.num_experts_per_tok;
  const WeightRule rule = MakeWeightRule(cfg);
  const Real scale = static_cast<Real>(rule.scale);
  std::vector<Real> dlogits(static_cast<size_t>(N * E));  // dlogits: [N, E]
  std::vector<Real> ds(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t) {
    const Real* st = &cache.scores[t * E];
    const int32_t* idx = &cache.experts[t * k];
    const Real* dw = &dweights[t * k];
    for (int64_t e = 0; e < E; ++e) ds[e] = dscores ? dscores[t * E + e] : Real(0);
    if (rule.normalise) {
      // w_m = scale·s_m/S with S = Σ s_sel: ds_j = scale·(dw_j − Σ_m dw_m s_m/S)/S.
      Real sum = 0, dot = 0;
      for (int64_t m = 0; m < k; ++m) sum += st[idx[m]];
      for (int64_t m = 0; m < k; ++m) dot += dw[m] * st[idx[m]];
      for (int64_t m = 0; m < k; ++m) ds[idx[m]] += scale * (dw[m] - dot / sum) / sum;
    } else {
      for (int64_t m = 0; m < k; ++m) ds[idx[m]] += scale * dw[m];
    }
    Real* dl = &dlogits[t * E];
    if (cfg.scoring_func == "sigmoid") {
      for (int64_t e = 0; e < E; ++e) dl[e] = ds[e] * st[e] * (Real(1) - st[e]);
    } else {
      Real dot = 0;
      for (int64_t e = 0; e < E; ++e) dot += ds[e] * st[e];
      for (int64_t e = 0; e < E; ++e) dl[e] = st[e] * (ds[e] - dot);
    }
  }
  LinearBackward(ctx, cache.x.data(), N, gate, E, H, dlogits.data(), dx, dgate);
}

template <typename Real>
Real BalanceLoss(const ModelConfig& cfg, const RouterCache<Real>& cache, int64_t B, int64_t T,
                 double alpha) {
  const int64_t E = cfg.n_routed_experts, k = cfg.num_experts_per_tok;
  double total = 0;
  std::vector<double> f(static_cast<size_t>(E)), P(static_cast<size_t>(E));
  for (int64_t b = 0; b < B; ++b) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(P.begin(), P.end(), 0.0);
    for (int64_t t = b * T; t < (b + 1) * T; ++t) {
      for (int64_t m = 0; m < k; ++m) f[cache.experts[t * k + m]] += 1.0;
      const Real* st = &cache.scores[t * E];
      double sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += st[e];
      for (int64_t e = 0; e < E; ++e) P[e] += st[e] / sum;
    }
    for (int64_t e = 0; e < E; ++e)
      total += (static_cast<double>(E) / static_cast<double>(k * T) * f[e]) *
               (P[e] / static_cast<double>(T));
  }
  return static_cast<Real>(alpha * total / static_cast<double>(B));
}

template <typename Real>
void BalanceLossBackward(const ModelConfig& cfg, const RouterCache<Real>& cache, int64_t B,
                         int64_t T, double alpha, Real* dscores) {
  const int64_t E = cfg.n_routed_experts, k = cfg.num_experts_per_tok;
  std::vector<Real> g(static_cast<size_t>(E));  // g_i = dL/ds'_i = α/B · f_i / T
  for (int64_t b = 0; b < B; ++b) {
    std::fill(g.begin(), g.end(), Real(0));
    for (int64_t t = b * T; t < (b + 1) * T; ++t)
      for (int64_t m = 0; m < k; ++m) g[cache.experts[t * k + m]] += Real(1);
    const double coef = alpha / static_cast<double>(B) * static_cast<double>(E) /
                        static_cast<double>(k * T) / static_cast<double>(T);
    for (int64_t e = 0; e < E; ++e) g[e] *= static_cast<Real>(coef);
    for (int64_t t = b * T; t < (b + 1) * T; ++t) {
      const Real* st = &cache.scores[t * E];
      Real sum = 0, dot = 0;
      for (int64_t e = 0; e < E; ++e) sum += st[e];
      for (int64_t e = 0; e < E; ++e) dot += g[e] * st[e];
      // s' = s/S: ds_j = (g_j − Σ_i g_i s_i/S)/S
      for (int64_t e = 0; e < E; ++e) dscores[t * E + e] += (g[e] - dot / sum) / sum;
    }
  }
}

#define DSV3_INSTANTIATE_ROUTER(Real)                                                             \
  template void RouterForward<Real>(const Context&, const ModelConfig&, const Real*, const Real*, \
                                    const Real*, int64_t, RouterCache<Real>*);                    \
  template void RouterBackward<Real>(const Context&, const ModelConfig&, const Real*,             \
                                     const RouterCache<Real>&, int64_t, const Real*, const Real*, \
                                     Real*, Real*);                                               \
  template Real BalanceLoss<Real>(const ModelConfig&, const RouterCache<Real>&, int64_t, int64_t, \
                                  double);                                                        \
  template void BalanceLossBackward<Real>(const ModelConfig&, const RouterCache<Real>&, int64_t,  \
                                          int64_t, double, Real*);
DSV3_INSTANTIATE_ROUTER(float)
DSV3_INSTANTIATE_ROUTER(double)

}  // namespace dsv3::train
