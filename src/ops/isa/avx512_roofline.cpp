// AVX-512 loops of the machine-limit probes (ops/roofline_kernels.h). The accumulators are arrays
// indexed by compile-time constants in fully unrolled loops, so they live in registers.
#include "ops/isa/simd_intrinsics.h"

#include "ops/roofline_kernels.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int kSumAccumulators = 8;

template <int kChains>
double SumChainLanes(const __m512 (&acc)[kChains]) {
  alignas(64) float lanes[kLanes];
  double total = 0;
  for (int c = 0; c < kChains; ++c) {
    _mm512_store_ps(lanes, acc[c]);
    for (int l = 0; l < kLanes; ++l) total += lanes[l];
  }
  return total;
}

}  // namespace

double SumFloats(const float* x, int64_t n) {
  constexpr int64_t kStep = kSumAccumulators * kLanes;
  __m512 acc[kSumAccumulators];
#pragma GCC unroll 8
  for (int a = 0; a < kSumAccumulators; ++a) acc[a] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) {
    // x[i : i + 128]: eight independent 64-byte loads in flight per iteration.
#pragma GCC unroll 8
    for (int a = 0; a < kSumAccumulators; ++a)
      acc[a] = _mm512_add_ps(acc[a], _mm512_loadu_ps(x + i + a * kLanes));
  }
  for (; i + kLanes <= n; i += kLanes) acc[0] = _mm512_add_ps(acc[0], _mm512_loadu_ps(x + i));
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1u);
    acc[1] = _mm512_add_ps(acc[1], _mm512_maskz_loadu_ps(tail, x + i));
  }
  return SumChainLanes(acc);
}

double FmaChains(int64_t iterations, float a, float b0, float b1) {
  const __m512 va = _mm512_set1_ps(a), vb0 = _mm512_set1_ps(b0), vb1 = _mm512_set1_ps(b1);
  __m512 acc[kPeakChains];
#pragma GCC unroll 12
  for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c + 1));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm512_fmadd_ps(va, vb0, acc[c]);
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm512_fmadd_ps(va, vb1, acc[c]);
  }
  return SumChainLanes(acc);
}

int64_t Int8DotChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1) {
  const __m512i va = _mm512_set1_epi8(static_cast<char>(a));
  const __m512i vb0 = _mm512_set1_epi8(b0), vb1 = _mm512_set1_epi8(b1);
  __m512i acc[kPeakChains];
#pragma GCC unroll 12
  for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm512_set1_epi32(c + 1);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], va, vb0);
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], va, vb1);
  }
  alignas(64) int32_t lanes[kLanes];
  int64_t total = 0;
  for (int c = 0; c < kPeakChains; ++c) {
    _mm512_store_si512(lanes, acc[c]);
    for (int l = 0; l < kLanes; ++l) total += lanes[l];
  }
  return total;
}

double Bf16DotChains(int64_t iterations, float a, float b0, float b1) {
  // Each 32-bit lane holds a pair of equal bf16 values (the inputs are bf16-representable, so the
  // round-to-nearest conversion is exact).
  const __m512bh va = _mm512_cvtne2ps_pbh(_mm512_set1_ps(a), _mm512_set1_ps(a));
  const __m512bh vb0 = _mm512_cvtne2ps_pbh(_mm512_set1_ps(b0), _mm512_set1_ps(b0));
  const __m512bh vb1 = _mm512_cvtne2ps_pbh(_mm512_set1_ps(b1), _mm512_set1_ps(b1));
  __m512 acc[kPeakChains];
#pragma GCC unroll 12
  for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c + 1));
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], va, vb0);
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], va, vb1);
  }
  return SumChainLanes(acc);
}

}  // namespace dsv3::ops::avx512
