// 8x8 f32 transposes on ymm registers, shared by the AVX2 and AVX-512 kernels.
//
// Internal linkage on purpose: each kernel file compiles its own copy with its own ISA flags. An
// inline function with external linkage built under two sets of flags may resolve, at link time,
// to the copy built for AVX-512 and then run on a CPU without it.
#pragma once

#include <cstdint>

#include "ops/isa/simd_intrinsics.h"

namespace dsv3::ops {
namespace {  // NOLINT(build/namespaces): see above

// v[i] lane j becomes v[j] lane i.
inline void Transpose8x8(__m256 v[8]) {
  __m256 t[8], u[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm256_unpacklo_ps(v[2 * k], v[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_ps(v[2 * k], v[2 * k + 1]);
  }
  for (int h = 0; h < 2; ++h) {
    const __m256* a = t + 4 * h;
    u[4 * h + 0] = _mm256_shuffle_ps(a[0], a[2], 0x44);
    u[4 * h + 1] = _mm256_shuffle_ps(a[0], a[2], 0xee);
    u[4 * h + 2] = _mm256_shuffle_ps(a[1], a[3], 0x44);
    u[4 * h + 3] = _mm256_shuffle_ps(a[1], a[3], 0xee);
  }
  // u[q] (q < 4): rows 0-3 of columns q | q + 4; u[q + 4] the same for rows 4-7.
  for (int q = 0; q < 4; ++q) {
    v[q] = _mm256_permute2f128_ps(u[q], u[q + 4], 0x20);
    v[q + 4] = _mm256_permute2f128_ps(u[q], u[q + 4], 0x31);
  }
}

// dws[k * 8 + i] = srow[i][b + k] for k < n (n <= 8; later k are zero): the block scales of 8
// rows of a q8_0 / q4_0 matrix, 8 blocks at a time, as the int8 GEMVs consume them (one vector
// of the 8 rows per block), for one transpose per 8 blocks instead of a gather or 8 loads per
// block.
inline void TransposeScales8(const float* const* srow, int64_t b, int64_t n, float* dws) {
  __m256 r[8];
#ifdef __AVX512VL__
  const __mmask8 m = static_cast<__mmask8>((1u << n) - 1u);
  for (int i = 0; i < 8; ++i) r[i] = _mm256_maskz_loadu_ps(m, srow[i] + b);  // row i, blocks b..
#else
  const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  for (int i = 0; i < 8; ++i) r[i] = _mm256_maskload_ps(srow[i] + b, m);  // row i, blocks b..
#endif
  Transpose8x8(r);
  for (int k = 0; k < 8; ++k) _mm256_store_ps(dws + k * 8, r[k]);
}

}  // namespace
}  // namespace dsv3::ops
