// RMSNorm (spec §3): y = w ⊙ x / sqrt(mean(x²) + eps), forward with its saved statistic and the
// backward pass.
#pragma once

#include <cstdint>
#include <vector>

namespace dsv3::train {

// y, x: [N, n]; w: [n]; inv_rms (saved for backward): [N]
template <typename Real>
void RmsNormForward(const Real* x, const Real* w, int64_t N, int64_t n, double eps, Real* y,
                    std::vector<Real>* inv_rms);

// dx[N, n] += dL/dx (dx may alias nothing else); dw[n] += dL/dw.
template <typename Real>
void RmsNormBackward(const Real* x, const Real* w, const std::vector<Real>& inv_rms, int64_t N,
                     int64_t n, const Real* dy, Real* dx, Real* dw);

}  // namespace dsv3::train
