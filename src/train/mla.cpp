#include "train/mla.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "train/attention_f32.h"
#include "train/rmsnorm.h"

namespace dsv3::train {

template <typename Real>
RopeTables<Real> MakeRopeTables(const RopeParams& params, int64_t T) {
  RopeTables<Real> r;
  r.half = static_cast<int64_t>(params.inv_freq.size());
  r.interleaved = params.interleaved;
  r.softmax_scale = params.softmax_scale;
  r.cos.resize(static_cast<size_t>(T * r.half));
  r.sin.resize(static_cast<size_t>(T * r.half));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t m = 0; m < r.half; ++m) {
      const double angle = static_cast<double>(t) * params.inv_freq[m];
      r.cos[t * r.half + m] = static_cast<Real>(std::cos(angle) * params.cos_sin_factor);
      r.sin[t * r.half + m] = static_cast<Real>(std::sin(angle) * params.cos_sin_factor);
    }
  }
  return r;
}

template <typename Real>
void RopeRotate(const RopeTables<Real>& tables, int64_t t, Real* x, bool inverse) {
  const int64_t half = tables.half;
  for (int64_t m = 0; m < half; ++m) {
    // Interleaved pairs (x[2m], x[2m+1]) as in every DeepSeek checkpoint (spec §5.2).
    Real* a = tables.interleaved ? &x[2 * m] : &x[m];
    Real* b = tables.interleaved ? &x[2 * m + 1] : &x[m + half];
    const Real c = tables.cos[t * half + m];
    const Real s = inverse ? -tables.sin[t * half + m] : tables.sin[t * half + m];
    const Real a0 = *a, b0 = *b;
    *a = a0 * c - b0 * s;
    *b = a0 * s + b0 * c;
  }
}

template <typename Real>
void MlaForward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                const MlaWeightsRef<Real>& w, const Real* x, int64_t B, int64_t T, Real* y,
                MlaCache<Real>* cache) {
  const int64_t N = B * T, H = cfg.hidden_size, nh = cfg.num_attention_heads;
  const int64_t dn = cfg.qk_nope_head_dim, dr = cfg.qk_rope_head_dim, dv = cfg.v_head_dim;
  const int64_t qk = dn + dr, r = cfg.kv_lora_rank, rq = cfg.q_lora_rank;
  MlaCache<Real>& k = *cache;
  k.x.assign(x, x + N * H);
  k.q.resize(static_cast<size_t>(N * nh * qk));
  if (cfg.has_q_lora()) {
    k.qa.resize(static_cast<size_t>(N * rq));
    k.qan.resize(static_cast<size_t>(N * rq));
    LinearForward(ctx, x, N, w.q_a_proj, rq, H, k.qa.data());  // qa: [N, rq]
    RmsNormForward(k.qa.data(), w.q_a_layernorm, N, rq, cfg.rms_norm_eps, k.qan.data(), &k.qa_inv);
    LinearForward(ctx, k.qan.data(), N, w.q_b_proj, nh * qk, rq, k.q.data());  // q: [N, nh, qk]
  } else {
    LinearForward(ctx, x, N, w.q_proj, nh * qk, H, k.q.data());
  }
  k.ckv.resize(static_cast<size_t>(N * (r + dr)));
  LinearForward(ctx, x, N, w.kv_a_proj, r + dr, H, k.ckv.data());  // ckv: [N, r+dr]
  k.c.resize(static_cast<size_t>(N * r));
  k.kpe.resize(static_cast<size_t>(N * dr));
  std::vector<Real> latent(static_cast<size_t>(N * r));
  for (int64_t t = 0; t < N; ++t) {
    std::copy_n(&k.ckv[t * (r + dr)], r, &latent[t * r]);
    std::copy_n(&k.ckv[t * (r + dr) + r], dr, &k.kpe[t * dr]);
    RopeRotate(rope, t % T, &k.kpe[t * dr], false);
    for (int64_t h = 0; h < nh; ++h) RopeRotate(rope, t % T, &k.q[(t * nh + h) * qk + dn], false);
  }
  RmsNormForward(latent.data(), w.kv_a_layernorm, N, r, cfg.rms_norm_eps, k.c.data(), &k.c_inv);
  k.kv.resize(static_cast<size_t>(N * nh * (dn + dv)));
  LinearForward(ctx, k.c.data(), N, w.kv_b_proj, nh * (dn + dv), r, k.kv.data());  // kv

  k.p.assign(static_cast<size_t>(B * nh * T * T), Real(0));
  k.o.assign(static_cast<size_t>(N * nh * dv), Real(0));
  const Real scale = static_cast<Real>(rope.softmax_scale);
  // One task per (sequence, head): disjoint outputs, fixed order inside.
  ParallelRows(ctx, B * nh, [&](int64_t j0, int64_t j1) {
    for (int64_t job = j0; job < j1; ++job) {
      const int64_t b = job / nh, h = job % nh;
      if constexpr (std::is_same_v<Real, float>) {  // as matrix products (attention_f32.h)
        const int64_t kv0 = (b * T * nh + h) * (dn + dv), kvs = nh * (dn + dv);
        CausalAttentionForward(ctx.isa, HeadShape{T, dn, dr, dv, scale},
                               {&k.q[(b * T * nh + h) * qk], nh * qk}, {&k.kv[kv0], kvs},
                               {&k.kpe[b * T * dr], dr}, {&k.kv[kv0 + dn], kvs},
                               &k.p[(b * nh + h) * T * T], {&k.o[(b * T * nh + h) * dv], nh * dv});
        continue;
      }
      for (int64_t i = 0; i < T; ++i) {
        const Real* qi = &k.q[((b * T + i) * nh + h) * qk];
        Real* pi = &k.p[((b * nh + h) * T + i) * T];
        Real mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {  // causal: keys 0..i
          const Real* kn = &k.kv[((b * T + j) * nh + h) * (dn + dv)];
          const Real* kp = &k.kpe[(b * T + j) * dr];
          Real s = 0;
          for (int64_t d = 0; d < dn; ++d) s += qi[d] * kn[d];
          for (int64_t d = 0; d < dr; ++d) s += qi[dn + d] * kp[d];
          pi[j] = s * scale;
          mx = std::max(mx, pi[j]);
        }
        Real sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += pi[j] = std::exp(pi[j] - mx);
        Real* oi = &k.o[((b * T + i) * nh + h) * dv];
        for (int64_t j = 0; j <= i; ++j) {
          pi[j] /= sum;
          const Real* vj = &k.kv[((b * T + j) * nh + h) * (dn + dv) + dn];
          for (int64_t d = 0; d < dv; ++d) oi[d] += pi[j] * vj[d];
        }
      }
    }
  });
  LinearForward(ctx, k.o.data(), N, w.o_proj, H, nh * dv, y);  // y: [N, H]
}

template <typename Real>
void MlaBackward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                 const MlaWeightsRef<Real>& w, const MlaCache<Real>& k, int64_t B, int64_t T,
                 const Real* dy, Real* dx, const MlaGradsRef<Real>& g) {
  const int64_t N = B * T, H = cfg.hidden_size, nh = cfg.num_attention_heads;
  const int64_t dn = cfg.qk_nope_head_dim, dr = cfg.qk_rope_head_dim, dv = cfg.v_head_dim;
  const int64_t qk = dn + dr, r = cfg.kv_lora_rank, rq = cfg.q_lora_rank;
  std::vector<Real> d_o(static_cast<size_t>(N * nh * dv), Real(0));  // do: [N, nh*dv]
  LinearBackward(ctx, k.o.data(), N, w.o_proj, H, nh * dv, dy, d_o.data(), g.o_proj);

  std::vector<Real> dq(static_cast<size_t>(N * nh * qk), Real(0));          // dq: [N, nh, qk]
  std::vector<Real> dkv(static_cast<size_t>(N * nh * (dn + dv)), Real(0));  // dkv
  std::vector<Real> dkpe_heads(static_cast<size_t>(N * nh * dr), Real(0));  // [N, nh, dr]
  const Real scale = static_cast<Real>(rope.softmax_scale);
  ParallelRows(ctx, B * nh, [&](int64_t j0, int64_t j1) {
    std::vector<Real> ds(static_cast<size_t>(T));
    for (int64_t job = j0; job < j1; ++job) {
      const int64_t b = job / nh, h = job % nh;
      if constexpr (std::is_same_v<Real, float>) {  // as matrix products (attention_f32.h)
        const int64_t kv0 = (b * T * nh + h) * (dn + dv), kvs = nh * (dn + dv);
        const int64_t q0 = (b * T * nh + h) * qk;
        CausalAttentionBackward(
            ctx.isa, HeadShape{T, dn, dr, dv, scale}, {&k.q[q0], nh * qk}, {&k.kv[kv0], kvs},
            {&k.kpe[b * T * dr], dr}, {&k.kv[kv0 + dn], kvs}, &k.p[(b * nh + h) * T * T],
            {&d_o[(b * T * nh + h) * dv], nh * dv}, {&dq[q0], nh * qk}, {&dkv[kv0], kvs},
            {&dkpe_heads[(b * T * nh + h) * dr], nh * dr}, {&dkv[kv0 + dn], kvs});
        continue;
      }
      for (int64_t i = 0; i < T; ++i) {
        const Real* pi = &k.p[((b * nh + h) * T + i) * T];
        const Real* doi = &d_o[((b * T + i) * nh + h) * dv];
        Real dot = 0;
        for (int64_t j = 0; j <= i; ++j) {  // dP = dO·V, then the softmax backward
          const Real* vj = &k.kv[((b * T + j) * nh + h) * (dn + dv) + dn];
          Real dp = 0;
          for (int64_t d = 0; d < dv; ++d) dp += doi[d] * vj[d];
          ds[j] = dp;
          dot += pi[j] * dp;
        }
        const Real* qi = &k.q[((b * T + i) * nh + h) * qk];
        Real* dqi = &dq[((b * T + i) * nh + h) * qk];
        for (int64_t j = 0; j <= i; ++j) {
          Real* dvj = &dkv[((b * T + j) * nh + h) * (dn + dv) + dn];
          for (int64_t d = 0; d < dv; ++d) dvj[d] += pi[j] * doi[d];
          const Real dsj = pi[j] * (ds[j] - dot) * scale;  // d score / d (q·k)
          const Real* kn = &k.kv[((b * T + j) * nh + h) * (dn + dv)];
          const Real* kp = &k.kpe[(b * T + j) * dr];
          Real* dkn = &dkv[((b * T + j) * nh + h) * (dn + dv)];
          Real* dkp = &dkpe_heads[((b * T + j) * nh + h) * dr];
          for (int64_t d = 0; d < dn; ++d) {
            dqi[d] += dsj * kn[d];
            dkn[d] += dsj * qi[d];
          }
          for (int64_t d = 0; d < dr; ++d) {
            dqi[dn + d] += dsj * kp[d];
            dkp[d] += dsj * qi[dn + d];
          }
        }
      }
    }
  });

  // The latent path: kv = c·W_kvb^T, c = RMSNorm(ckv[:, :r]).
  std::vector<Real> dc(static_cast<size_t>(N * r), Real(0));  // dc: [N, r]
  LinearBackward(ctx, k.c.data(), N, w.kv_b_proj, nh * (dn + dv), r, dkv.data(), dc.data(),
                 g.kv_b_proj);
  std::vector<Real> latent(static_cast<size_t>(N * r)), dlatent(static_cast<size_t>(N * r), 0);
  for (int64_t t = 0; t < N; ++t) std::copy_n(&k.ckv[t * (r + dr)], r, &latent[t * r]);
  RmsNormBackward(latent.data(), w.kv_a_layernorm, k.c_inv, N, r, dc.data(), dlatent.data(),
                  g.kv_a_layernorm);
  std::vector<Real> dckv(static_cast<size_t>(N * (r + dr)));  // dckv: [N, r+dr]
  for (int64_t t = 0; t < N; ++t) {
    std::copy_n(&dlatent[t * r], r, &dckv[t * (r + dr)]);
    Real* dkpe = &dckv[t * (r + dr) + r];
    // The rope key is shared by all heads: sum their gradients in head order.
    for (int64_t d = 0; d < dr; ++d) {
      Real acc = 0;
      for (int64_t h = 0; h < nh; ++h) acc += dkpe_heads[(t * nh + h) * dr + d];
      dkpe[d] = acc;
    }
    RopeRotate(rope, t % T, dkpe, true);
    for (int64_t h = 0; h < nh; ++h) RopeRotate(rope, t % T, &dq[(t * nh + h) * qk + dn], true);
  }
  LinearBackward(ctx, k.x.data(), N, w.kv_a_proj, r + dr, H, dckv.data(), dx, g.kv_a_proj);

  if (cfg.has_q_lora()) {
    std::vector<Real> dqan(static_cast<size_t>(N * rq), Real(0)), dqa(dqan.size(), Real(0));
    LinearBackward(ctx, k.qan.data(), N, w.q_b_proj, nh * qk, rq, dq.data(), dqan.data(),
                   g.q_b_proj);
    RmsNormBackward(k.qa.data(), w.q_a_layernorm, k.qa_inv, N, rq, dqan.data(), dqa.data(),
                    g.q_a_layernorm);
    LinearBackward(ctx, k.x.data(), N, w.q_a_proj, rq, H, dqa.data(), dx, g.q_a_proj);
  } else {
    LinearBackward(ctx, k.x.data(), N, w.q_proj, nh * qk, H, dq.data(), dx, g.q_proj);
  }
}

#define DSV3_INSTANTIATE_MLA(Real)                                                                 \
  template RopeTables<Real> MakeRopeTables<Real>(const RopeParams&, int64_t);                      \
  template void RopeRotate<Real>(const RopeTables<Real>&, int64_t, Real*, bool);                   \
  template void MlaForward<Real>(const Context&, const ModelConfig&, const RopeTables<Real>&,      \
                                 const MlaWeightsRef<Real>&, const Real*, int64_t, int64_t, Real*, \
                                 MlaCache<Real>*);                                                 \
  template void MlaBackward<Real>(const Context&, const ModelConfig&, const RopeTables<Real>&,     \
                                  const MlaWeightsRef<Real>&, const MlaCache<Real>&, int64_t,      \
                                  int64_t, const Real*, Real*, const MlaGradsRef<Real>&);
DSV3_INSTANTIATE_MLA(float)
DSV3_INSTANTIATE_MLA(double)

}  // namespace dsv3::train
