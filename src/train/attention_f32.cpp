#include "train/attention_f32.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/vector_ops.h"
#include "train/linear.h"

namespace dsv3::train {

namespace {

// C[M, N] (+)= A · B^T on the calling thread (train::GemmF32).
void Mul(ops::Isa isa, int64_t M, int64_t N, int64_t K, const ops::GemmOperand& a,
         const ops::GemmOperand& b, float* c, int64_t ldc, bool accumulate) {
  GemmF32(Context{nullptr, isa}, M, N, K, a, b, c, ldc, accumulate);
}

// Gathers [q_i ; ...] rows into a dense [T, width] matrix from up to two strided views.
std::vector<float> Dense(int64_t T, RowsView a, int64_t wa, RowsView b = {nullptr, 0},
                         int64_t wb = 0) {
  std::vector<float> m(static_cast<size_t>(T * (wa + wb)));
  for (int64_t i = 0; i < T; ++i) {
    std::copy_n(a.data + i * a.stride, wa, &m[i * (wa + wb)]);
    if (wb > 0) std::copy_n(b.data + i * b.stride, wb, &m[i * (wa + wb) + wa]);
  }
  return m;
}

}  // namespace

void CausalAttentionForward(ops::Isa isa, const HeadShape& s, RowsView q, RowsView kn, RowsView kp,
                            RowsView v, float* p, MutableRowsView o) {
  const int64_t T = s.T, qk = s.dn + s.dr;
  const std::vector<float> kd = Dense(T, kn, s.dn, kp, s.dr);                          // k: [T, qk]
  Mul(isa, T, T, qk, {q.data, q.stride, false}, {kd.data(), qk, false}, p, T, false);  // scores
  for (int64_t i = 0; i < T; ++i) {
    float* pi = p + i * T;
    for (int64_t j = 0; j <= i; ++j) pi[j] *= s.scale;
    ops::Softmax(isa, pi, i + 1);         // the ISA's vectorised exp and sums
    std::fill(pi + i + 1, pi + T, 0.0f);  // causal mask
  }
  // o[T, dv] = p · v:  A(i, j) = p[i, j], B(d, j) = v[j, d]
  Mul(isa, T, s.dv, T, {p, T, false}, {v.data, v.stride, true}, o.data, o.stride, false);
}

void CausalAttentionBackward(ops::Isa isa, const HeadShape& s, RowsView q, RowsView kn, RowsView kp,
                             RowsView v, const float* p, RowsView d_o, MutableRowsView dq,
                             MutableRowsView dkn, MutableRowsView dkp, MutableRowsView dv) {
  const int64_t T = s.T, qk = s.dn + s.dr;
  std::vector<float> ds(static_cast<size_t>(T * T));  // dP = d_o · v^T, then d(q·k): [T, T]
  Mul(isa, T, T, s.dv, {d_o.data, d_o.stride, false}, {v.data, v.stride, false}, ds.data(), T,
      false);
  for (int64_t i = 0; i < T; ++i) {  // softmax backward, row by row
    const float* pi = p + i * T;
    float* di = &ds[i * T];
    float dot = 0;
    for (int64_t j = 0; j <= i; ++j) dot += pi[j] * di[j];
    for (int64_t j = 0; j <= i; ++j) di[j] = pi[j] * (di[j] - dot) * s.scale;
    std::fill(di + i + 1, di + T, 0.0f);
  }
  const std::vector<float> kd = Dense(T, kn, s.dn, kp, s.dr);  // k: [T, qk]
  // dq[T, qk] += ds · k:  A(i, j) = ds[i, j], B(d, j) = k[j, d]
  Mul(isa, T, qk, T, {ds.data(), T, false}, {kd.data(), qk, true}, dq.data, dq.stride, true);
  // dk[T, qk] += ds^T · q:  A(j, i) = ds[i, j], B(d, i) = q[i, d]; nope and rope parts apart
  Mul(isa, T, s.dn, T, {ds.data(), T, true}, {q.data, q.stride, true}, dkn.data, dkn.stride, true);
  Mul(isa, T, s.dr, T, {ds.data(), T, true}, {q.data + s.dn, q.stride, true}, dkp.data, dkp.stride,
      true);
  // dv[T, dv] += p^T · d_o:  A(j, i) = p[i, j], B(d, i) = d_o[i, d]
  Mul(isa, T, s.dv, T, {p, T, true}, {d_o.data, d_o.stride, true}, dv.data, dv.stride, true);
}

}  // namespace dsv3::train
