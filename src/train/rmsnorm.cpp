#include "train/rmsnorm.h"

#include <cmath>

namespace dsv3::train {

template <typename Real>
void RmsNormForward(const Real* x, const Real* w, int64_t N, int64_t n, double eps, Real* y,
                    std::vector<Real>* inv_rms) {
  inv_rms->resize(static_cast<size_t>(N));
  for (int64_t t = 0; t < N; ++t) {
    const Real* xr = x + t * n;
    // The statistic in double, as HF computes it in fp32 from bf16: never the weak point.
    double ss = 0;
    for (int64_t j = 0; j < n; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    const Real inv = static_cast<Real>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
    (*inv_rms)[t] = inv;
    for (int64_t j = 0; j < n; ++j) y[t * n + j] = w[j] * (xr[j] * inv);
  }
}

template <typename Real>
void RmsNormBackward(const Real* x, const Real* w, const std::vector<Real>& inv_rms, int64_t N,
                     int64_t n, const Real* dy, Real* dx, Real* dw) {
  for (int64_t t = 0; t < N; ++t) {
    const Real* xr = x + t * n;
    const Real* dyr = dy + t * n;
    const Real inv = inv_rms[t];
    // With g = dy ⊙ w: dx = inv·g − x·inv³·mean(g ⊙ x).
    Real dot = 0;
    for (int64_t j = 0; j < n; ++j) dot += dyr[j] * w[j] * xr[j];
    const Real coef = dot * inv * inv * inv / static_cast<Real>(n);
    for (int64_t j = 0; j < n; ++j) {
      dx[t * n + j] += inv * dyr[j] * w[j] - xr[j] * coef;
      dw[j] += dyr[j] * xr[j] * inv;
    }
  }
}

template void RmsNormForward<float>(const float*, const float*, int64_t, int64_t, double, float*,
                                    std::vector<float>*);
template void RmsNormForward<double>(const double*, const double*, int64_t, int64_t, double,
                                     double*, std::vector<double>*);
template void RmsNormBackward<float>(const float*, const float*, const std::vector<float>&, int64_t,
                                     int64_t, const float*, float*, float*);
template void RmsNormBackward<double>(const double*, const double*, const std::vector<double>&,
                                      int64_t, int64_t, const double*, double*, double*);

}  // namespace dsv3::train
