#include "train/layer.h"

#include <fmt/format.h>

#include "train/rmsnorm.h"

namespace dsv3::train {

namespace {

template <typename Real>
std::array<int, 3> AddMlp(const std::string& prefix, int64_t H, int64_t I, ParamSet<Real>* p) {
  return {p->Add(prefix + ".gate_proj.weight", {I, H}), p->Add(prefix + ".up_proj.weight", {I, H}),
          p->Add(prefix + ".down_proj.weight", {H, I})};
}

template <typename Real, typename Set>
auto Ptr(Set& set, int i) -> decltype(set[i]) {
  return i < 0 ? nullptr : set[i];
}

template <typename Real>
MlaWeightsRef<Real> MlaWeights(const LayerParams& lp, const ParamSet<Real>& p) {
  return {Ptr<Real>(p, lp.q_proj),    Ptr<Real>(p, lp.q_a_proj),  Ptr<Real>(p, lp.q_a_layernorm),
          Ptr<Real>(p, lp.q_b_proj),  Ptr<Real>(p, lp.kv_a_proj), Ptr<Real>(p, lp.kv_a_layernorm),
          Ptr<Real>(p, lp.kv_b_proj), Ptr<Real>(p, lp.o_proj)};
}

template <typename Real>
MlaGradsRef<Real> MlaGrads(const LayerParams& lp, ParamSet<Real>& g) {
  return {Ptr<Real>(g, lp.q_proj),    Ptr<Real>(g, lp.q_a_proj),  Ptr<Real>(g, lp.q_a_layernorm),
          Ptr<Real>(g, lp.q_b_proj),  Ptr<Real>(g, lp.kv_a_proj), Ptr<Real>(g, lp.kv_a_layernorm),
          Ptr<Real>(g, lp.kv_b_proj), Ptr<Real>(g, lp.o_proj)};
}

template <typename Real>
MlpWeightsRef<Real> MlpWeights(const std::array<int, 3>& ids, const ParamSet<Real>& p) {
  const auto& gate = p.tensor(ids[0]);
  return {p[ids[0]], p[ids[1]], p[ids[2]], gate.shape[1], gate.shape[0]};
}

template <typename Real>
MlpGradsRef<Real> MlpGrads(const std::array<int, 3>& ids, ParamSet<Real>& g) {
  return {g[ids[0]], g[ids[1]], g[ids[2]]};
}

template <typename Real>
MoeWeightsRef<Real> MoeWeights(const LayerParams& lp, const ParamSet<Real>& p) {
  MoeWeightsRef<Real> w;
  w.gate = p[lp.gate];
  w.bias = Ptr<Real>(p, lp.bias);
  for (const auto& e : lp.experts) w.experts.push_back(MlpWeights(e, p));
  w.has_shared = lp.has_shared;
  if (lp.has_shared) w.shared = MlpWeights(lp.shared, p);
  return w;
}

template <typename Real>
MoeGradsRef<Real> MoeGrads(const LayerParams& lp, ParamSet<Real>& g) {
  MoeGradsRef<Real> r;
  r.gate = g[lp.gate];
  for (const auto& e : lp.experts) r.experts.push_back(MlpGrads(e, g));
  if (lp.has_shared) r.shared = MlpGrads(lp.shared, g);
  return r;
}

}  // namespace

template <typename Real>
LayerParams AddLayerParams(const ModelConfig& c, int64_t index, ParamSet<Real>* p) {
  const std::string pre = fmt::format("model.layers.{}", index);
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  LayerParams lp;
  lp.input_layernorm = p->Add(pre + ".input_layernorm.weight", {H});
  lp.post_attention_layernorm = p->Add(pre + ".post_attention_layernorm.weight", {H});
  const std::string a = pre + ".self_attn.";
  if (c.has_q_lora()) {
    lp.q_a_proj = p->Add(a + "q_a_proj.weight", {c.q_lora_rank, H});
    lp.q_a_layernorm = p->Add(a + "q_a_layernorm.weight", {c.q_lora_rank});
    lp.q_b_proj = p->Add(a + "q_b_proj.weight", {nh * c.qk_head_dim(), c.q_lora_rank});
  } else {
    lp.q_proj = p->Add(a + "q_proj.weight", {nh * c.qk_head_dim(), H});
  }
  lp.kv_a_proj = p->Add(a + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, H});
  lp.kv_a_layernorm = p->Add(a + "kv_a_layernorm.weight", {c.kv_lora_rank});
  lp.kv_b_proj =
      p->Add(a + "kv_b_proj.weight", {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank});
  lp.o_proj = p->Add(a + "o_proj.weight", {H, nh * c.v_head_dim});
  lp.is_moe = c.IsMoeLayer(index);
  if (!lp.is_moe) {
    lp.mlp = AddMlp(pre + ".mlp", H, c.intermediate_size, p);
    return lp;
  }
  lp.gate = p->Add(pre + ".mlp.gate.weight", {c.n_routed_experts, H});
  if (c.topk_method == "noaux_tc")
    lp.bias = p->Add(pre + ".mlp.gate.e_score_correction_bias", {c.n_routed_experts},
                     /*trainable=*/false);
  for (int64_t e = 0; e < c.n_routed_experts; ++e)
    lp.experts.push_back(
        AddMlp(fmt::format("{}.mlp.experts.{}", pre, e), H, c.moe_intermediate_size, p));
  lp.has_shared = c.n_shared_experts > 0;
  if (lp.has_shared)
    lp.shared =
        AddMlp(pre + ".mlp.shared_experts", H, c.n_shared_experts * c.moe_intermediate_size, p);
  return lp;
}

template <typename Real>
Real LayerForward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                  const LayerParams& lp, const ParamSet<Real>& p, int64_t B, int64_t T,
                  double alpha, Real* h, LayerCache<Real>* k) {
  const int64_t N = B * T, H = cfg.hidden_size;
  const double eps = cfg.rms_norm_eps;
  k->h_in.assign(h, h + N * H);
  k->a.resize(static_cast<size_t>(N * H));
  RmsNormForward(h, p[lp.input_layernorm], N, H, eps, k->a.data(), &k->inv_a);
  std::vector<Real> y(static_cast<size_t>(N * H));  // y: [N, H] sublayer output
  MlaForward(ctx, cfg, rope, MlaWeights(lp, p), k->a.data(), B, T, y.data(), &k->mla);
  for (int64_t i = 0; i < N * H; ++i) h[i] += y[i];
  k->h_mid.assign(h, h + N * H);
  k->f.resize(static_cast<size_t>(N * H));
  RmsNormForward(h, p[lp.post_attention_layernorm], N, H, eps, k->f.data(), &k->inv_f);
  Real balance = 0;
  if (lp.is_moe) {
    balance = MoeForward(ctx, cfg, MoeWeights(lp, p), k->f.data(), B, T, alpha, y.data(), &k->moe);
  } else {
    MlpForward(ctx, MlpWeights(lp.mlp, p), k->f.data(), N, y.data(), &k->mlp);
  }
  for (int64_t i = 0; i < N * H; ++i) h[i] += y[i];
  return balance;
}

template <typename Real>
void LayerBackward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                   const LayerParams& lp, const ParamSet<Real>& p, const LayerCache<Real>& k,
                   int64_t B, int64_t T, double alpha, Real* dh, ParamSet<Real>* g) {
  const int64_t N = B * T, H = cfg.hidden_size;
  std::vector<Real> dsub(static_cast<size_t>(N * H), Real(0));  // d(sublayer input): [N, H]
  if (lp.is_moe) {
    MoeBackward(ctx, cfg, MoeWeights(lp, p), k.moe, B, T, alpha, dh, dsub.data(), MoeGrads(lp, *g));
  } else {
    MlpBackward(ctx, MlpWeights(lp.mlp, p), k.mlp, N, dh, dsub.data(), MlpGrads(lp.mlp, *g));
  }
  // The residual passes dh through; the norm adds its part.
  RmsNormBackward(k.h_mid.data(), p[lp.post_attention_layernorm], k.inv_f, N, H, dsub.data(), dh,
                  (*g)[lp.post_attention_layernorm]);
  std::fill(dsub.begin(), dsub.end(), Real(0));
  MlaBackward(ctx, cfg, rope, MlaWeights(lp, p), k.mla, B, T, dh, dsub.data(), MlaGrads(lp, *g));
  RmsNormBackward(k.h_in.data(), p[lp.input_layernorm], k.inv_a, N, H, dsub.data(), dh,
                  (*g)[lp.input_layernorm]);
}

#define DSV3_INSTANTIATE_LAYER(Real)                                                             \
  template LayerParams AddLayerParams<Real>(const ModelConfig&, int64_t, ParamSet<Real>*);       \
  template Real LayerForward<Real>(const Context&, const ModelConfig&, const RopeTables<Real>&,  \
                                   const LayerParams&, const ParamSet<Real>&, int64_t, int64_t,  \
                                   double, Real*, LayerCache<Real>*);                            \
  template void LayerBackward<Real>(const Context&, const ModelConfig&, const RopeTables<Real>&, \
                                    const LayerParams&, const ParamSet<Real>&,                   \
                                    const LayerCache<Real>&, int64_t, int64_t, double, Real*,    \
                                    ParamSet<Real>*);
DSV3_INSTANTIATE_LAYER(float)
DSV3_INSTANTIATE_LAYER(double)

}  // namespace dsv3::train
