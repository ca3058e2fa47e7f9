// Helpers shared by the kernel tests: the f32 rounding bound their tolerances come from, random
// inputs, bitwise comparison.
//
// The bound (Higham, "Accuracy and Stability of Numerical Algorithms", §3.1): a sum of products
// evaluated in any order, where every term passes through at most m roundings, differs from the
// exact value by at most gamma_m * sum |terms|, gamma_m = m u / (1 - m u), u = 2^-24 (f32 unit
// roundoff). For m u <= 0.0099 (m <= 1.6e5, far above the tests' sizes) gamma_m <= 1.01 m u.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace dsv3::testing {

inline constexpr double kUnitRoundoff = 0x1p-24;  // u: f32 round-to-nearest relative error

// 1.01 m u bounds gamma_m; m is the number of roundings a term sees.
inline double GammaBound(double m) {
  return 1.01 * m * kUnitRoundoff;
}

// n values drawn uniformly from [lo, hi).
inline std::vector<float> RandomFloats(std::mt19937& rng, int64_t n, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

// Bit-for-bit equality (NaN payloads and signed zeros included); empty vectors are equal.
inline bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

}  // namespace dsv3::testing
