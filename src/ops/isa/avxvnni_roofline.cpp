// The int8 peak loop for AVX2 CPUs with AVX-VNNI (ops/roofline_kernels.h): vpdpbusd on ymm,
// compiled with -mavxvnni, reached only where ops::AvxVnniEnabled().
#include "ops/isa/simd_intrinsics.h"

#include "ops/roofline_kernels.h"

namespace dsv3::ops::avxvnni {

int64_t Int8DotChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1) {
  const __m256i va = _mm256_set1_epi8(static_cast<char>(a));
  const __m256i vb0 = _mm256_set1_epi8(b0), vb1 = _mm256_set1_epi8(b1);
  __m256i acc[kPeakChains];
#pragma GCC unroll 12
  for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm256_set1_epi32(c + 1);
  for (int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm256_dpbusd_avx_epi32(acc[c], va, vb0);
#pragma GCC unroll 12
    for (int c = 0; c < kPeakChains; ++c) acc[c] = _mm256_dpbusd_avx_epi32(acc[c], va, vb1);
  }
  alignas(32) int32_t lanes[kLanes];
  int64_t total = 0;
  for (int c = 0; c < kPeakChains; ++c) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[c]);
    for (int l = 0; l < kLanes; ++l) total += lanes[l];
  }
  return total;
}

}  // namespace dsv3::ops::avxvnni
