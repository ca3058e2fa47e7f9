#include "train/mtp.h"

#include <algorithm>

#include <fmt/format.h>

#include "train/embedding.h"
#include "train/rmsnorm.h"

namespace dsv3::train {

template <typename Real>
MtpParams AddMtpParams(const ModelConfig& c, ParamSet<Real>* p) {
  const int64_t H = c.hidden_size, V = c.vocab_size, m = c.num_hidden_layers;
  const std::string pre = fmt::format("model.layers.{}", m);
  MtpParams mp;
  mp.embed_tokens = p->Add(pre + ".embed_tokens.weight", {V, H});
  mp.enorm = p->Add(pre + ".enorm.weight", {H});
  mp.hnorm = p->Add(pre + ".hnorm.weight", {H});
  mp.eh_proj = p->Add(pre + ".eh_proj.weight", {H, 2 * H});
  mp.layer = AddLayerParams(c, m, p);
  mp.shared_head_norm = p->Add(pre + ".shared_head.norm.weight", {H});
  mp.shared_head_head = p->Add(pre + ".shared_head.head.weight", {V, H});
  return mp;
}

template <typename Real>
Real MtpForward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                const MtpParams& mp, const ParamSet<Real>& p, const int32_t* tokens, int64_t B,
                int64_t T, double alpha, const Real* h_final, Real* out, MtpCache<Real>* k) {
  const int64_t H = cfg.hidden_size, Tm = T - 1, N = B * Tm;
  const double eps = cfg.rms_norm_eps;
  k->next_ids.resize(static_cast<size_t>(N));
  k->hsel.resize(static_cast<size_t>(N * H));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < Tm; ++i) {
      k->next_ids[b * Tm + i] = tokens[b * T + i + 1];
      std::copy_n(h_final + (b * T + i) * H, H, &k->hsel[(b * Tm + i) * H]);
    }
  }
  k->e.resize(static_cast<size_t>(N * H));
  EmbeddingForward(p[mp.embed_tokens], k->next_ids.data(), N, H, k->e.data());
  std::vector<Real> en(static_cast<size_t>(N * H)), hn(static_cast<size_t>(N * H));
  RmsNormForward(k->e.data(), p[mp.enorm], N, H, eps, en.data(), &k->inv_e);
  RmsNormForward(k->hsel.data(), p[mp.hnorm], N, H, eps, hn.data(), &k->inv_h);
  k->cat.resize(static_cast<size_t>(N * 2 * H));  // order [emb ; hidden] as the weights expect
  for (int64_t t = 0; t < N; ++t) {
    std::copy_n(&en[t * H], H, &k->cat[t * 2 * H]);
    std::copy_n(&hn[t * H], H, &k->cat[t * 2 * H + H]);
  }
  k->x.resize(static_cast<size_t>(N * H));
  LinearForward(ctx, k->cat.data(), N, p[mp.eh_proj], H, 2 * H, k->x.data());  // x: [N, H]
  const Real balance =
      LayerForward(ctx, cfg, rope, mp.layer, p, B, Tm, alpha, k->x.data(), &k->layer);
  RmsNormForward(k->x.data(), p[mp.shared_head_norm], N, H, eps, out, &k->inv_x);
  return balance;
}

template <typename Real>
void MtpBackward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                 const MtpParams& mp, const ParamSet<Real>& p, const MtpCache<Real>& k, int64_t B,
                 int64_t T, double alpha, const Real* dout, Real* dh_final, ParamSet<Real>* g) {
  const int64_t H = cfg.hidden_size, Tm = T - 1, N = B * Tm;
  std::vector<Real> dx(static_cast<size_t>(N * H), Real(0));  // dx: [N, H]
  RmsNormBackward(k.x.data(), p[mp.shared_head_norm], k.inv_x, N, H, dout, dx.data(),
                  (*g)[mp.shared_head_norm]);
  LayerBackward(ctx, cfg, rope, mp.layer, p, k.layer, B, Tm, alpha, dx.data(), g);
  std::vector<Real> dcat(static_cast<size_t>(N * 2 * H), Real(0));  // dcat: [N, 2H]
  LinearBackward(ctx, k.cat.data(), N, p[mp.eh_proj], H, 2 * H, dx.data(), dcat.data(),
                 (*g)[mp.eh_proj]);
  std::vector<Real> den(static_cast<size_t>(N * H)), dhn(static_cast<size_t>(N * H));
  for (int64_t t = 0; t < N; ++t) {
    std::copy_n(&dcat[t * 2 * H], H, &den[t * H]);
    std::copy_n(&dcat[t * 2 * H + H], H, &dhn[t * H]);
  }
  std::vector<Real> de(static_cast<size_t>(N * H), Real(0)), dh(static_cast<size_t>(N * H), 0);
  RmsNormBackward(k.e.data(), p[mp.enorm], k.inv_e, N, H, den.data(), de.data(), (*g)[mp.enorm]);
  RmsNormBackward(k.hsel.data(), p[mp.hnorm], k.inv_h, N, H, dhn.data(), dh.data(), (*g)[mp.hnorm]);
  EmbeddingBackward(k.next_ids.data(), N, H, de.data(), (*g)[mp.embed_tokens]);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < Tm; ++i)
      for (int64_t j = 0; j < H; ++j) dh_final[(b * T + i) * H + j] += dh[(b * Tm + i) * H + j];
}

#define DSV3_INSTANTIATE_MTP(Real)                                                                 \
  template MtpParams AddMtpParams<Real>(const ModelConfig&, ParamSet<Real>*);                      \
  template Real MtpForward<Real>(const Context&, const ModelConfig&, const RopeTables<Real>&,      \
                                 const MtpParams&, const ParamSet<Real>&, const int32_t*, int64_t, \
                                 int64_t, double, const Real*, Real*, MtpCache<Real>*);            \
  template void MtpBackward<Real>(const Context&, const ModelConfig&, const RopeTables<Real>&,     \
                                  const MtpParams&, const ParamSet<Real>&, const MtpCache<Real>&,  \
                                  int64_t, int64_t, double, const Real*, Real*, ParamSet<Real>*);
DSV3_INSTANTIATE_MTP(float)
DSV3_INSTANTIATE_MTP(double)

}  // namespace dsv3::train
