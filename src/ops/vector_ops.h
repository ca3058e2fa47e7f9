// Element-wise and reduction kernels on f32 activations. Each has a scalar reference twin in
// ops/ (namespace dsv3::ops::scalar) and SIMD variants chosen by ctx.isa.
#pragma once

#include <cstdint>

#include "ops/matmul.h"

namespace dsv3::ops {

// out[i] = w[i] * x[i] / sqrt(mean(x^2) + eps), one row of n values. out may alias x.
// The statistic is accumulated in double (it costs nothing at these sizes and removes doubt).
void RmsNorm(Isa isa, const float* x, const float* w, int64_t n, double eps, float* out);

// sum_i a[i] * b[i]
float Dot(Isa isa, const float* a, const float* b, int64_t n);

// y[i] += alpha * x[i]
void Axpy(Isa isa, float alpha, const float* x, int64_t n, float* y);

// The exp-based kernels below: the scalar twins call std::exp, the SIMD variants a polynomial exp
// with relative error <= 2^-23 (ops/exp_kernels.h: kExpRelError), identical on AVX2 and AVX-512.

// out[i] = exp(x[i]). out may alias x.
void Exp(Isa isa, const float* x, int64_t n, float* out);

// gate[i] = silu(gate[i]) * up[i]  (SwiGLU: silu(z) = z * sigmoid(z)), computed as
// gate / (1 + exp(-gate)) * up: for gate below about -88.7 the exp overflows to inf and the result
// is a signed zero, as the limit is; gate = -inf gives NaN (-inf / inf) in every variant.
void SiluMul(Isa isa, float* gate, const float* up, int64_t n);

// In-place softmax of n values, max-subtracted; exp accumulated in f32. -inf entries get 0 as long
// as one entry is finite; all -inf (or any NaN) gives NaN everywhere.
void Softmax(Isa isa, float* x, int64_t n);

}  // namespace dsv3::ops
