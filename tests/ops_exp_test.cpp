// The exp-based vector kernels (Exp, SiluMul, Softmax): every ISA variant against exact (double)
// arithmetic and against its scalar twin, on sizes that are not multiples of the vector widths,
// with inputs that reach exp's overflow and underflow, infinities and NaN.
//
// Error model: the SIMD exp has relative error <= kExpRelError (2^-23) where exp(x) is a normal
// float and absolute error <= 2^-149 below (ops/exp_kernels.h); glibc's expf, used by the scalar
// twins, is within 1 ulp, which the same bound covers. Every other operation rounds once
// (relative error u = 2^-24); m roundings compound to at most GammaBound(m) = 1.01*m*u (Higham
// §3.1).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "float_test_util.h"
#include "ops/exp_kernels.h"
#include "ops/isa.h"
#include "ops/vector_ops.h"

namespace dsv3::ops {
namespace {

using testing::GammaBound;
using testing::RandomFloats;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Sizes around the vector widths (8, 16) and their multiples, never only multiples.
const int64_t kSizes[] = {0, 1, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1000, 4099};

// Equal bits (so +0 and -0 differ), or both NaN.
bool SameFloat(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) ||
         std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

// |y - exp(x)| within the bound of ops/exp_kernels.h (overflow: exactly inf).
void ExpectExpAccurate(float x, float y, const std::string& where) {
  const double exact = std::exp(static_cast<double>(x));
  if (std::isnan(x)) {
    EXPECT_TRUE(std::isnan(y)) << where << " x=" << x;
  } else if (exact > FLT_MAX) {
    EXPECT_EQ(y, kInf) << where << " x=" << x;
  } else if (exact >= FLT_MIN) {
    EXPECT_LE(std::fabs(y - exact), kExpRelError * exact) << where << " x=" << x;
  } else {
    EXPECT_LE(std::fabs(y - exact), kExpSubnormalError) << where << " x=" << x;
  }
}

// Bitwise equality of two float arrays (NaN payloads included); memcmp is not called on the
// null data() of an empty vector (UBSan: null argument).
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

TEST(ExpKernels, EveryIsaWithinTheExpBound) {
  std::mt19937 rng(20);
  // The whole interesting range, densely; plus every 2^20-th float bit pattern (both signs, all
  // exponents) and the special values.
  std::vector<float> x = RandomFloats(rng, 200003, -110.0f, 95.0f);
  for (uint32_t bits = 0; bits < 0xFF800000u; bits += 1u << 20) {
    float f;
    std::memcpy(&f, &bits, 4);
    x.push_back(f);
    x.push_back(-f);
  }
  for (float f : {0.0f, -0.0f, kInf, -kInf, kNaN, 88.7228f, 88.7229f, -87.3365f, -103.97f, -103.98f,
                  FLT_MAX, -FLT_MAX, FLT_MIN, 1e-30f})
    x.push_back(f);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> ref(x.size());
  Exp(Isa::kScalar, x.data(), n, ref.data());
  for (Isa isa : RunnableIsas()) {
    std::vector<float> y(x.size());
    Exp(isa, x.data(), n, y.data());
    for (int64_t i = 0; i < n; ++i) {
      ExpectExpAccurate(x[i], y[i], std::string(IsaName(isa)));
      // Both within the bound of exp(x): within twice it of each other (the twin test).
      const double exact = std::exp(static_cast<double>(x[i]));
      if (std::isfinite(exact) && exact >= FLT_MIN && exact <= FLT_MAX) {
        EXPECT_LE(std::fabs(y[i] - ref[i]), 2.0 * kExpRelError * exact) << IsaName(isa);
      }
    }
    if (HasFailure()) return;
  }
}

TEST(ExpKernels, SpecialValues) {
  const std::vector<float> x = {-kInf, kInf, kNaN, 0.0f, -0.0f, -1000.0f, 1000.0f, -104.0f, 89.0f};
  const std::vector<float> expected = {0.0f, kInf, kNaN, 1.0f, 1.0f, 0.0f, kInf, 0.0f, kInf};
  for (Isa isa : RunnableIsas()) {
    std::vector<float> y(x.size());
    Exp(isa, x.data(), static_cast<int64_t>(x.size()), y.data());
    for (size_t i = 0; i < x.size(); ++i)
      EXPECT_TRUE(SameFloat(y[i], expected[i]))
          << IsaName(isa) << " exp(" << x[i] << ") = " << y[i];
  }
}

TEST(ExpKernels, SimdVariantsGiveTheSameBitsAndTailsMatchFullVectors) {
  std::mt19937 rng(21);
  const auto isas = RunnableIsas();
  for (int64_t n : kSizes) {
    const auto x = RandomFloats(rng, n, -100.0f, 90.0f);
    std::vector<float> first;
    for (Isa isa : isas) {
      if (isa == Isa::kScalar) continue;
      std::vector<float> y(x.size());
      Exp(isa, x.data(), n, y.data());
      // Element by element (a tail of one) gives the same bits as the vector loop.
      for (int64_t i = 0; i < n; ++i) {
        float one;
        Exp(isa, &x[i], 1, &one);
        EXPECT_TRUE(SameFloat(one, y[i])) << IsaName(isa) << " n=" << n << " i=" << i;
      }
      // In place.
      std::vector<float> in_place = x;
      Exp(isa, in_place.data(), n, in_place.data());
      EXPECT_TRUE(SameBits(in_place, y)) << IsaName(isa);
      if (first.empty()) first = y;
      EXPECT_TRUE(SameBits(first, y)) << IsaName(isa) << " " << n;
    }
  }
}

// g / (1 + exp(-g)) * up in double.
double ExactSiluMul(float g, float up) {
  return static_cast<double>(g) / (1.0 + std::exp(-static_cast<double>(g))) * up;
}

TEST(ExpKernels, SiluMulEveryIsaMatchesExactAndScalar) {
  std::mt19937 rng(22);
  // Error of one variant: exp's (damped by e/(1+e) <= 1 through 1 + e), then 1 + e, the quotient
  // and the product: kExpRelError + GammaBound(3) relative. When exp(-g) overflows (g < -88.72)
  // the result is a signed zero and the exact value is below 89 * e^-88.7 * |up| < 1e-36: the
  // absolute slack covers it and exp's subnormal error.
  const double rel = kExpRelError + GammaBound(3);
  const double abs_slack = 1e-36;
  for (int64_t n : kSizes) {
    auto gate0 = RandomFloats(rng, n, -20.0f, 20.0f);
    const auto up = RandomFloats(rng, n, -2.0f, 2.0f);
    // Every fifth value far out: exp(-g) overflows (g < -88.7) or underflows (g > 87.3).
    for (int64_t i = 0; i < n; i += 5) gate0[i] *= 10.0f;
    std::vector<float> ref = gate0;
    SiluMul(Isa::kScalar, ref.data(), up.data(), n);
    for (Isa isa : RunnableIsas()) {
      std::vector<float> out = gate0;
      SiluMul(isa, out.data(), up.data(), n);
      for (int64_t i = 0; i < n; ++i) {
        const double exact = ExactSiluMul(gate0[i], up[i]);
        EXPECT_LE(std::fabs(out[i] - exact), rel * std::fabs(exact) + abs_slack)
            << IsaName(isa) << " n=" << n << " g=" << gate0[i];
        EXPECT_LE(std::fabs(out[i] - ref[i]), 2.0 * rel * std::fabs(exact) + 2.0 * abs_slack)
            << IsaName(isa) << " n=" << n << " g=" << gate0[i];
      }
    }
  }
}

TEST(ExpKernels, SiluMulOverflowAndSpecialValuesMatchTheScalarTwin) {
  // The scalar twin's documented overflow: for g below about -88.7, exp(-g) = inf and
  // g / (1 + inf) is -0 (times up: a signed zero). +inf passes through (exp(-inf) = 0); -inf gives
  // -inf / inf = NaN; NaN stays NaN.
  const std::vector<float> gate0 = {-88.8f, -100.0f, -1e30f, -FLT_MAX, -kInf,  kInf, kNaN,
                                    0.0f,   -0.0f,   100.0f, 1e30f,    -88.7f, 88.0f};
  const std::vector<float> up = {1.0f, -1.0f, 2.0f, 0.5f, 1.0f, 1.0f, 1.0f,
                                 1.0f, 1.0f,  3.0f, 1.0f, 1.0f, -1.0f};
  const int64_t n = static_cast<int64_t>(gate0.size());
  std::vector<float> ref = gate0;
  SiluMul(Isa::kScalar, ref.data(), up.data(), n);
  EXPECT_TRUE(SameFloat(ref[0], -0.0f));
  EXPECT_TRUE(SameFloat(ref[1], 0.0f));
  EXPECT_TRUE(std::isnan(ref[4]));
  EXPECT_EQ(ref[5], kInf);
  for (Isa isa : RunnableIsas()) {
    std::vector<float> out = gate0;
    SiluMul(isa, out.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      if (std::isfinite(ref[i]) && ref[i] != 0.0f) {
        const double exact = ExactSiluMul(gate0[i], up[i]);
        EXPECT_LE(std::fabs(out[i] - ref[i]),
                  2.0 * (kExpRelError + GammaBound(3)) * std::fabs(exact) + 2e-36)
            << IsaName(isa) << " g=" << gate0[i];
      } else {
        EXPECT_TRUE(SameFloat(out[i], ref[i]))
            << IsaName(isa) << " g=" << gate0[i] << ": " << out[i] << " vs " << ref[i];
      }
    }
  }
}

struct SoftmaxExact {
  std::vector<double> p;
  double max_value = 0;
};

SoftmaxExact ExactSoftmax(const std::vector<float>& x) {
  SoftmaxExact s;
  s.max_value = *std::max_element(x.begin(), x.end());
  double sum = 0.0;
  for (float v : x) sum += std::exp(v - s.max_value);
  for (float v : x) s.p.push_back(std::exp(v - s.max_value) / sum);
  return s;
}

// Relative error bound of one softmax output: the f32 difference x - max (u*|d|, which exp turns
// into a relative error), exp (kExpRelError) in the value and, through the sum, in every term;
// the f32 sum of n terms (gamma_n) and the quotient. Outputs whose exp is subnormal or zero also
// get exp's absolute error, relative to the sum (>= 1).
double SoftmaxTolerance(double d, int64_t n, double exact) {
  if (exact == 0.0) return 2.0 * kExpSubnormalError;  // -inf entries (d = -inf)
  const double rel = GammaBound(std::fabs(d) + 1.0 + static_cast<double>(n)) + 2.0 * kExpRelError;
  return rel * exact + 2.0 * kExpSubnormalError;
}

TEST(ExpKernels, SoftmaxEveryIsaMatchesExactAndScalar) {
  std::mt19937 rng(23);
  for (int64_t n : kSizes) {
    if (n == 0) continue;
    for (float range : {10.0f, 200.0f}) {
      auto x0 = RandomFloats(rng, n, -range, range);
      // -inf entries (masked positions) and one large value that pushes most exps to 0.
      for (int64_t i = 3; i < n; i += 7) x0[i] = -kInf;
      if (n > 2) x0[n / 2] = 1e4f;
      const SoftmaxExact exact = ExactSoftmax(x0);
      std::vector<float> ref = x0;
      Softmax(Isa::kScalar, ref.data(), n);
      for (Isa isa : RunnableIsas()) {
        std::vector<float> out = x0;
        Softmax(isa, out.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          const double d = static_cast<double>(x0[i]) - exact.max_value;
          const double tol = SoftmaxTolerance(d, n, exact.p[i]);
          EXPECT_LE(std::fabs(out[i] - exact.p[i]), tol)
              << IsaName(isa) << " n=" << n << " i=" << i << " x=" << x0[i];
          EXPECT_LE(std::fabs(out[i] - ref[i]), 2.0 * tol) << IsaName(isa) << " n=" << n;
          if (std::isinf(x0[i])) {
            EXPECT_EQ(out[i], 0.0f) << IsaName(isa);
          }
        }
      }
    }
  }
}

TEST(ExpKernels, SoftmaxDegenerateInputsMatchTheScalarTwin) {
  // All -inf (nothing to attend to) and a +inf entry give NaN in the scalar twin: so must every
  // variant. A single finite value among -inf gets all the weight.
  const std::vector<std::vector<float>> cases = {
      {-kInf, -kInf, -kInf},
      {1.0f, kInf, 2.0f},
      {-kInf, 3.0f, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf,
       -kInf, -kInf, -kInf, -kInf, -kInf}};
  for (const auto& x0 : cases) {
    const int64_t n = static_cast<int64_t>(x0.size());
    std::vector<float> ref = x0;
    Softmax(Isa::kScalar, ref.data(), n);
    for (Isa isa : RunnableIsas()) {
      std::vector<float> out = x0;
      Softmax(isa, out.data(), n);
      for (int64_t i = 0; i < n; ++i)
        EXPECT_TRUE(SameFloat(out[i], ref[i])) << IsaName(isa) << " n=" << n << " i=" << i;
    }
  }
}

}  // namespace
}  // namespace dsv3::ops
