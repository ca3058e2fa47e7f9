// Vector kernels (ops/vector_ops.h: Dot, Axpy, RmsNorm, SiluMul, Softmax): every ISA variant
// against the scalar twin and the exact value in double, on sizes that are not multiples of the
// vector widths (8, 16), with tolerances from the f32 rounding bound (float_test_util.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "float_test_util.h"
#include "ops/isa.h"
#include "ops/vector_ops.h"

namespace dsv3::ops {
namespace {

using testing::BitwiseEqual;
using testing::GammaBound;
using testing::RandomFloats;

const int64_t kVectorSizes[] = {0, 1, 5, 7, 8, 15, 16, 17, 33, 100, 1000, 4099};

TEST(VectorOps, DotMatchesScalarAndExact) {
  std::mt19937 rng(10);
  for (int64_t n : kVectorSizes) {
    const auto a = RandomFloats(rng, n);
    const auto b = RandomFloats(rng, n);
    double exact = 0.0, abs_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      exact += static_cast<double>(a[i]) * b[i];
      abs_sum += std::fabs(static_cast<double>(a[i]) * b[i]);
    }
    // n roundings per term at most: the product and n - 1 additions.
    const double gamma = GammaBound(static_cast<double>(n));
    const float ref = Dot(Isa::kScalar, a.data(), b.data(), n);
    EXPECT_LE(std::fabs(ref - exact), gamma * abs_sum) << n;
    for (Isa isa : RunnableIsas())
      EXPECT_LE(std::fabs(Dot(isa, a.data(), b.data(), n) - ref), 2.0 * gamma * abs_sum)
          << IsaName(isa) << " n=" << n;
  }
}

TEST(VectorOps, AxpyMatchesScalar) {
  std::mt19937 rng(11);
  for (int64_t n : kVectorSizes) {
    const auto x = RandomFloats(rng, n);
    const auto y0 = RandomFloats(rng, n);
    const float alpha = 0.75f;
    std::vector<float> ref = y0;
    Axpy(Isa::kScalar, alpha, x.data(), n, ref.data());
    for (Isa isa : RunnableIsas()) {
      std::vector<float> y = y0;
      Axpy(isa, alpha, x.data(), n, y.data());
      for (int64_t i = 0; i < n; ++i) {
        // y + alpha*x with or without a fused multiply-add: at most 2 roundings each side.
        const double scale = std::fabs(y0[i]) + std::fabs(static_cast<double>(alpha) * x[i]);
        EXPECT_LE(std::fabs(y[i] - ref[i]), 2.0 * GammaBound(2) * scale)
            << IsaName(isa) << " n=" << n << " i=" << i;
      }
    }
  }
}

TEST(VectorOps, RmsNormMatchesScalarAndExact) {
  std::mt19937 rng(12);
  const double eps = 1e-6;
  for (int64_t n : kVectorSizes) {
    const auto x = RandomFloats(rng, n, -3.0f, 3.0f);
    const auto w = RandomFloats(rng, n, 0.5f, 1.5f);
    double sum_sq = 0.0;
    for (float v : x) sum_sq += static_cast<double>(v) * v;
    const double inv_rms = n ? 1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps) : 0.0;
    std::vector<float> ref(static_cast<size_t>(n));
    RmsNorm(Isa::kScalar, x.data(), w.data(), n, eps, ref.data());
    for (int64_t i = 0; i < n; ++i) {
      // inv_rms rounded to f32 once (its double evaluation is ~1e-16 exact), then two products:
      // 3 roundings, plus slack for the double-precision part.
      const double exact = w[i] * (x[i] * inv_rms);
      EXPECT_LE(std::fabs(ref[i] - exact), GammaBound(4) * std::fabs(exact)) << n << " " << i;
    }
    for (Isa isa : RunnableIsas()) {
      std::vector<float> out(static_cast<size_t>(n));
      RmsNorm(isa, x.data(), w.data(), n, eps, out.data());
      for (int64_t i = 0; i < n; ++i) {
        const double exact = w[i] * (x[i] * inv_rms);
        EXPECT_LE(std::fabs(out[i] - ref[i]), 2.0 * GammaBound(4) * std::fabs(exact))
            << IsaName(isa) << " n=" << n << " i=" << i;
      }
      // In place (out aliases x).
      std::vector<float> inplace = x;
      RmsNorm(isa, inplace.data(), w.data(), n, eps, inplace.data());
      EXPECT_TRUE(BitwiseEqual(inplace, out)) << IsaName(isa);
    }
  }
}

TEST(VectorOps, SiluMulMatchesExact) {
  std::mt19937 rng(13);
  for (int64_t n : kVectorSizes) {
    const auto gate0 = RandomFloats(rng, n, -20.0f, 20.0f);
    const auto up = RandomFloats(rng, n, -2.0f, 2.0f);
    std::vector<float> ref = gate0;
    SiluMul(Isa::kScalar, ref.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double g = gate0[i];
      const double exact = g / (1.0 + std::exp(-g)) * up[i];
      // exp (glibc expf: < 1 ulp), 1 + e, the quotient and the product: 4 roundings, one more for
      // the exp's own error; the exp error is damped by e/(1+e) <= 1 through the quotient.
      EXPECT_LE(std::fabs(ref[i] - exact), GammaBound(6) * std::fabs(exact) + 1e-30)
          << n << " " << i;
    }
    for (Isa isa : RunnableIsas()) {
      std::vector<float> out = gate0;
      SiluMul(isa, out.data(), up.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double g = gate0[i];
        const double exact = g / (1.0 + std::exp(-g)) * up[i];
        EXPECT_LE(std::fabs(out[i] - ref[i]), 2.0 * GammaBound(6) * std::fabs(exact) + 1e-30)
            << IsaName(isa) << " n=" << n << " i=" << i;
      }
    }
  }
}

TEST(VectorOps, SoftmaxMatchesExact) {
  std::mt19937 rng(14);
  for (int64_t n : kVectorSizes) {
    const auto x0 = RandomFloats(rng, n, -10.0f, 10.0f);
    if (n == 0) continue;
    const double max_value = *std::max_element(x0.begin(), x0.end());
    double sum = 0.0;
    for (float v : x0) sum += std::exp(v - max_value);
    std::vector<float> ref = x0;
    Softmax(Isa::kScalar, ref.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double d = x0[i] - max_value;
      const double exact = std::exp(d) / sum;
      // The f32 difference x - max is off by up to u*|d|, which exp turns into a relative error
      // u*|d|; exp itself, the quotient: 2 more roundings; the f32 sum of n terms: gamma_n.
      const double rel = GammaBound(std::fabs(d) + 2.0 + static_cast<double>(n));
      EXPECT_LE(std::fabs(ref[i] - exact), rel * exact) << n << " " << i;
    }
    for (Isa isa : RunnableIsas()) {
      std::vector<float> out = x0;
      Softmax(isa, out.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double d = x0[i] - max_value;
        const double exact = std::exp(d) / sum;
        const double rel = GammaBound(std::fabs(d) + 2.0 + static_cast<double>(n));
        EXPECT_LE(std::fabs(out[i] - ref[i]), 2.0 * rel * exact) << IsaName(isa) << " " << n;
      }
    }
  }
}

}  // namespace
}  // namespace dsv3::ops
