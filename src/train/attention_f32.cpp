#include "train/attention_f32.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/transpose.h"
#include "train/linear.h"

namespace dsv3::train {

namespace {

// y[T, n] = x[T, k] · w[n, k]^T on the calling thread.
void Product(ops::Isa isa, const float* x, int64_t T, const float* w, int64_t n, int64_t k,
             float* y) {
  ProductF32(Context{nullptr, isa}, x, T, w, n, k, y);
}

void Transpose(ops::Isa isa, const std::vector<float>& src, int64_t rows, int64_t cols,
               std::vector<float>* dst) {
  dst->resize(static_cast<size_t>(rows * cols));
  ops::Transpose(ops::KernelContext{nullptr, isa}, src.data(), rows, cols, dst->data());
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
  const std::vector<float> qd = Dense(T, q, qk);               // [T, qk]
  const std::vector<float> kd = Dense(T, kn, s.dn, kp, s.dr);  // [T, qk]
  Product(isa, qd.data(), T, kd.data(), T, qk, p);             // scores: [T, T]
  for (int64_t i = 0; i < T; ++i) {
    float* pi = p + i * T;
    float mx = -INFINITY;
    for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, pi[j] *= s.scale);
    float sum = 0;
    for (int64_t j = 0; j <= i; ++j) sum += pi[j] = std::exp(pi[j] - mx);
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j <= i; ++j) pi[j] *= inv;
    std::fill(pi + i + 1, pi + T, 0.0f);  // causal mask
  }
  std::vector<float> vt;  // v^T: [dv, T]
  Transpose(isa, Dense(T, v, s.dv), T, s.dv, &vt);
  std::vector<float> od(static_cast<size_t>(T * s.dv));
  Product(isa, p, T, vt.data(), s.dv, T, od.data());  // o = p · v: [T, dv]
  for (int64_t i = 0; i < T; ++i) std::copy_n(&od[i * s.dv], s.dv, o.data + i * o.stride);
}

void CausalAttentionBackward(ops::Isa isa, const HeadShape& s, RowsView q, RowsView kn, RowsView kp,
                             RowsView v, const float* p, RowsView d_o, MutableRowsView dq,
                             MutableRowsView dkn, MutableRowsView dkp, MutableRowsView dv) {
  const int64_t T = s.T, qk = s.dn + s.dr;
  const std::vector<float> dod = Dense(T, d_o, s.dv);  // [T, dv]
  const std::vector<float> vd = Dense(T, v, s.dv);     // [T, dv]
  std::vector<float> ds(static_cast<size_t>(T * T));   // dP, then d(q·k): [T, T]
  Product(isa, dod.data(), T, vd.data(), T, s.dv, ds.data());
  for (int64_t i = 0; i < T; ++i) {  // softmax backward, row by row
    const float* pi = p + i * T;
    float* di = &ds[i * T];
    float dot = 0;
    for (int64_t j = 0; j <= i; ++j) dot += pi[j] * di[j];
    for (int64_t j = 0; j <= i; ++j) di[j] = pi[j] * (di[j] - dot) * s.scale;
    std::fill(di + i + 1, di + T, 0.0f);
  }
  std::vector<float> t1, t2;
  // dq = ds · k: [T, qk]
  Transpose(isa, Dense(T, kn, s.dn, kp, s.dr), T, qk, &t1);  // k^T: [qk, T]
  std::vector<float> out(static_cast<size_t>(T * qk));
  Product(isa, ds.data(), T, t1.data(), qk, T, out.data());
  for (int64_t i = 0; i < T; ++i)
    for (int64_t d = 0; d < qk; ++d) dq.data[i * dq.stride + d] += out[i * qk + d];
  // dk = ds^T · q: [T, qk]
  Transpose(isa, ds, T, T, &t1);                // ds^T
  Transpose(isa, Dense(T, q, qk), T, qk, &t2);  // q^T: [qk, T]
  Product(isa, t1.data(), T, t2.data(), qk, T, out.data());
  for (int64_t i = 0; i < T; ++i) {
    for (int64_t d = 0; d < s.dn; ++d) dkn.data[i * dkn.stride + d] += out[i * qk + d];
    for (int64_t d = 0; d < s.dr; ++d) dkp.data[i * dkp.stride + d] += out[i * qk + s.dn + d];
  }
  // dv = p^T · d_o: [T, dv]
  std::vector<float> pv(p, p + T * T);
  Transpose(isa, pv, T, T, &t1);      // p^T
  Transpose(isa, dod, T, s.dv, &t2);  // d_o^T: [dv, T]
  out.resize(static_cast<size_t>(T * s.dv));
  Product(isa, t1.data(), T, t2.data(), s.dv, T, out.data());
  for (int64_t i = 0; i < T; ++i)
    for (int64_t d = 0; d < s.dv; ++d) dv.data[i * dv.stride + d] += out[i * s.dv + d];
}

}  // namespace dsv3::train
