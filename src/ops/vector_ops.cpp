// Scalar references of the vector kernels and their ISA dispatch.
#include "ops/vector_ops.h"

#include <cmath>

#include "ops/exp_kernels.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops {

namespace scalar {

void RmsNorm(const float* x, const float* w, int64_t n, double eps, float* out) {
  if (n <= 0) return;
  double sum_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  // One f32 rounding of the exact-ish factor; every variant applies it the same way, so they
  // differ only through the order of the (double) sum of squares.
  const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv_rms);
}

float Dot(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void Axpy(float alpha, const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void Exp(const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::exp(x[i]);
}

void SiluMul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    // g / (1 + e^-g): for g -> -inf the exp overflows to inf and the quotient is -0, as it should.
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float max_value = x[0];
  for (int64_t i = 1; i < n; ++i) max_value = std::fmax(max_value, x[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  // Dividing (not multiplying by 1/sum) keeps each output within one rounding of exp/sum.
  for (int64_t i = 0; i < n; ++i) x[i] /= sum;
}

}  // namespace scalar

void RmsNorm(Isa isa, const float* x, const float* w, int64_t n, double eps, float* out) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::RmsNorm(x, w, n, eps, out);
    case Isa::kAvx2:
      return avx2::RmsNorm(x, w, n, eps, out);
    case Isa::kScalar:
      break;
  }
  scalar::RmsNorm(x, w, n, eps, out);
}

float Dot(Isa isa, const float* a, const float* b, int64_t n) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::Dot(a, b, n);
    case Isa::kAvx2:
      return avx2::Dot(a, b, n);
    case Isa::kScalar:
      break;
  }
  return scalar::Dot(a, b, n);
}

void Axpy(Isa isa, float alpha, const float* x, int64_t n, float* y) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::Axpy(alpha, x, n, y);
    case Isa::kAvx2:
      return avx2::Axpy(alpha, x, n, y);
    case Isa::kScalar:
      break;
  }
  scalar::Axpy(alpha, x, n, y);
}

void Exp(Isa isa, const float* x, int64_t n, float* out) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::Exp(x, n, out);
    case Isa::kAvx2:
      return avx2::Exp(x, n, out);
    case Isa::kScalar:
      break;
  }
  scalar::Exp(x, n, out);
}

void SiluMul(Isa isa, float* gate, const float* up, int64_t n) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::SiluMul(gate, up, n);
    case Isa::kAvx2:
      return avx2::SiluMul(gate, up, n);
    case Isa::kScalar:
      break;
  }
  scalar::SiluMul(gate, up, n);
}

void Softmax(Isa isa, float* x, int64_t n) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::Softmax(x, n);
    case Isa::kAvx2:
      return avx2::Softmax(x, n);
    case Isa::kScalar:
      break;
  }
  scalar::Softmax(x, n);
}

}  // namespace dsv3::ops
