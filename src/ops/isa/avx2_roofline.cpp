// AVX2 loops of the machine-limit probes (ops/roofline_kernels.h). AVX2 has no int8 or bf16 dot
// instruction, so only the bandwidth and FP32 FMA loops exist here.
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

}  // namespace dsv3::ops::avx2
