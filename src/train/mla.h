// Multi-head Latent Attention for training (spec §5): the naive (decompressed) form, which is the
// natural one when every position is computed at once. Forward saves its activations; backward
// returns the input gradient and accumulates the weight gradients.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/rope_yarn.h"
#include "train/linear.h"

namespace dsv3::train {

template <typename Real>
struct MlaWeightsRef {
  const Real* q_proj = nullptr;          // [nh*(dn+dr), H] when q_lora_rank is null
  const Real* q_a_proj = nullptr;        // [rq, H]
  const Real* q_a_layernorm = nullptr;   // [rq]
  const Real* q_b_proj = nullptr;        // [nh*(dn+dr), rq]
  const Real* kv_a_proj = nullptr;       // [r+dr, H]
  const Real* kv_a_layernorm = nullptr;  // [r]
  const Real* kv_b_proj = nullptr;       // [nh*(dn+dv), r]
  const Real* o_proj = nullptr;          // [H, nh*dv]
};

template <typename Real>
struct MlaGradsRef {
  Real* q_proj = nullptr;
  Real* q_a_proj = nullptr;
  Real* q_a_layernorm = nullptr;
  Real* q_b_proj = nullptr;
  Real* kv_a_proj = nullptr;
  Real* kv_a_layernorm = nullptr;
  Real* kv_b_proj = nullptr;
  Real* o_proj = nullptr;
};

// cos/sin of positions 0..T-1 (angles in double, cos_sin_factor applied): [T, dr/2] each.
template <typename Real>
struct RopeTables {
  std::vector<Real> cos, sin;
  int64_t half = 0;
  bool interleaved = true;
  double softmax_scale = 1.0;
};

template <typename Real>
RopeTables<Real> MakeRopeTables(const RopeParams& params, int64_t T);

// Rotates x [d] by position t; inverse applies the transpose (the backward of the rotation).
template <typename Real>
void RopeRotate(const RopeTables<Real>& tables, int64_t t, Real* x, bool inverse);

template <typename Real>
struct MlaCache {
  std::vector<Real> x;           // [N, H]
  std::vector<Real> qa, qa_inv;  // [N, rq], [N]   (q_lora only)
  std::vector<Real> qan;         // [N, rq]        RMSNorm(qa)
  std::vector<Real> q;           // [N, nh, dn+dr] with the rope part rotated
  std::vector<Real> ckv, c_inv;  // [N, r+dr], [N]
  std::vector<Real> c;           // [N, r]         normalised latent
  std::vector<Real> kpe;         // [N, dr]        rotated rope key
  std::vector<Real> kv;          // [N, nh*(dn+dv)]
  std::vector<Real> p;           // [B, nh, T, T]  softmax probabilities
  std::vector<Real> o;           // [N, nh*dv]
};

// x: [B*T, H], B sequences of T tokens at positions 0..T-1; y: [B*T, H] (overwritten).
template <typename Real>
void MlaForward(const Context& ctx, const ModelConfig& config, const RopeTables<Real>& rope,
                const MlaWeightsRef<Real>& w, const Real* x, int64_t B, int64_t T, Real* y,
                MlaCache<Real>* cache);

// dx: [B*T, H] accumulated.
template <typename Real>
void MlaBackward(const Context& ctx, const ModelConfig& config, const RopeTables<Real>& rope,
                 const MlaWeightsRef<Real>& w, const MlaCache<Real>& cache, int64_t B, int64_t T,
                 const Real* dy, Real* dx, const MlaGradsRef<Real>& grads);

}  // namespace dsv3::train
