// AVX2 loops of the machine-limit probes (ops/roofline_kernels.h): bandwidth, FP32 FMA and the
// int8 products (vpmaddubsw; AVX2 has no int8 dot-accumulate and no bf16 dot instruction).
#include "ops/isa/simd_intrinsics.h"

#include "ops/roofline_kernels.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int kSumAccumulators = 8;

template <int kChains>
double SumChainLanes(const __m256 (&acc)[kChains]) {
  alignas(32) float lanes[kLanes];
  double total = 0;
  for (int c = 0; c < kChains; ++c) {
    _mm256_store_ps(lanes, acc[c]);
    for (int l = 0; l < kLanes; ++l) total += lanes[l];
  }
  return total;
}

}  // namespace

double SumFloats(const float* x, int64_t n) {
  constexpr int64_t kStep = kSumAccumulators * kLanes;
  __m256 acc[kSumAccumulators];
#pragma GCC unroll 8
  for (int a = 0; a < kSumAccumulators; ++a) acc[a] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) {
    // x[i : i + 64]: eight independent 32-byte loads in flight per iteration.
#pragma GCC unroll 8
    for (int a = 0; a < kSumAccumulators; ++a)
      acc[a] = _mm256_add_ps(acc[a], _mm256_loadu_ps(x + i + a * kLanes));
  }
  for (; i + kLanes <= n; i += kLanes) acc[0] = _mm256_add_ps(acc[0], _mm256_loadu_ps(x + i));
  if (i < n) {
    alignas(32) float tail[kLanes] = {};
    for (int64_t j = i; j < n; ++j) tail[j - i] = x[j];
    acc[1] = _mm256_add_ps(acc[1], _mm256_load_ps(tail));
  }
  return SumChainLanes(acc);
}

double FmaChains(int64_t iterations, float a, float b0, float b1) {
  const __m256 va = _mm256_set1_ps(a), vb0 = _mm256_set1_ps(b0), vb1 = _mm256_set1_ps(b1);
  __m256 acc[kPeakChains];
#pragma GCC unroll 12
  for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm256_set1_ps(static_cast<float>(c + 1));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm256_fmadd_ps(va, vb0, acc[c]);
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm256_fmadd_ps(va, vb1, acc[c]);
  }
  return SumChainLanes(acc);
}

int64_t Int8DotChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1) {
  const __m256i va = _mm256_set1_epi8(static_cast<char>(a));
  const __m256i vb0 = _mm256_set1_epi8(b0), vb1 = _mm256_set1_epi8(b1);
  __m256i acc[kPeakChains];
#pragma GCC unroll 12
  for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm256_set1_epi16(static_cast<int16_t>(c + 1));
  // The products do not depend on the accumulators, so written as intrinsics the compiler would
  // compute them once outside the loop: each chain's step is spelled out (AT&T operand order:
  // t = maddubs(a unsigned, b signed), then acc += t). 12 + 4 ymm registers.
  const auto step = [](__m256i& acc_c, __m256i x, __m256i y) {
    __m256i t;
    asm volatile("vpmaddubsw %[y], %[x], %[t]\n\tvpaddw %[t], %[acc], %[acc]"
                 : [acc] "+x"(acc_c), [t] "=&x"(t)
                 : [x] "x"(x), [y] "x"(y));
  };
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) step(acc[c], va, vb0);
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) step(acc[c], va, vb1);
  }
  alignas(32) int16_t lanes[kInt16Lanes];
  int64_t total = 0;
  for (int c = 0; c < kPeakChains; ++c) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[c]);
    for (int l = 0; l < kInt16Lanes; ++l) total += lanes[l];
  }
  return total;
}

}  // namespace dsv3::ops::avx2
