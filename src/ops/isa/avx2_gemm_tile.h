// The AVX2 f32 outer-product micro-kernel and its token packing, shared by the AVX2 MatMul (packed
// prefill form) and Gemm: a tile is kStrip output columns (two ymm) x up to kPackNt output rows,
// whose 12 accumulators stay in registers while kc products are summed in order.
//
// Internal linkage on purpose, as ops/isa/transpose8x8.h explains: include it only from files
// built with the AVX2 flags.
#pragma once

#include <algorithm>
#include <cstdint>

#include "ops/isa/simd_intrinsics.h"

namespace dsv3::ops::avx2 {
namespace {  // NOLINT(build/namespaces): see above

constexpr int64_t kKc = 256;    // columns per packed block (ops/gemm.h's kGemmKc)
constexpr int64_t kStrip = 16;  // rows per micro-kernel tile (two vectors)
constexpr int kPackNt = 6;      // tokens per micro-kernel tile

// xpanel: [ceil(nt / 6)][kc][6] = x[t0 + t, c0 + c], tokens past nt zero.
inline void PackTokens(const float* x, int64_t cols, int64_t t0, int64_t nt, int64_t c0, int64_t kc,
                       float* xpanel) {
  for (int64_t g = 0; g * kPackNt < nt; ++g) {
    const int64_t valid = std::min<int64_t>(kPackNt, nt - g * kPackNt);
    float* dst = xpanel + g * kc * kPackNt;
    const float* src = x + (t0 + g * kPackNt) * cols + c0;  // x[t0 + 6 g, c0:]
    for (int64_t c = 0; c < kc; ++c)
      for (int64_t j = 0; j < kPackNt; ++j)
        dst[c * kPackNt + j] = j < valid ? src[j * cols + c] : 0;
  }
}

// y[t, r .. r + 16) (+)= sum_c panel[c][0..16) * xpanel[c][t] for t < NT, c in order from a zero
// start; the first `valid` rows are written. accumulate: the sum is added to y (one rounding).
template <int NT>
inline void MicroKernel(const float* panel, const float* xpanel, int64_t kc, float* y, int64_t ldy,
                        int64_t valid, bool accumulate) {
  __m256 lo[NT], hi[NT];  // rows r .. r + 8 and r + 8 .. r + 16 of each token
#pragma GCC unroll 8
  for (int j = 0; j < NT; ++j) lo[j] = hi[j] = _mm256_setzero_ps();
  for (int64_t c = 0; c < kc; ++c) {
    const __m256 w0 = _mm256_load_ps(panel + c * kStrip);
    const __m256 w1 = _mm256_load_ps(panel + c * kStrip + 8);
    const float* xc = xpanel + c * kPackNt;
#pragma GCC unroll 8
    for (int j = 0; j < NT; ++j) {
      const __m256 b = _mm256_broadcast_ss(xc + j);
      lo[j] = _mm256_fmadd_ps(w0, b, lo[j]);
      hi[j] = _mm256_fmadd_ps(w1, b, hi[j]);
    }
  }
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid - 8)), lane);
#pragma GCC unroll 8
  for (int j = 0; j < NT; ++j) {
    float* yj = y + j * ldy;  // y[t0 + j, r:r + 16]
    const __m256 a = accumulate ? _mm256_add_ps(_mm256_maskload_ps(yj, m0), lo[j]) : lo[j];
    const __m256 b = accumulate ? _mm256_add_ps(_mm256_maskload_ps(yj + 8, m1), hi[j]) : hi[j];
    _mm256_maskstore_ps(yj, m0, a);
    _mm256_maskstore_ps(yj + 8, m1, b);
  }
}

using MicroKernelFn = void (*)(const float*, const float*, int64_t, float*, int64_t, int64_t, bool);
constexpr MicroKernelFn kMicroKernels[kPackNt] = {&MicroKernel<1>, &MicroKernel<2>,
                                                  &MicroKernel<3>, &MicroKernel<4>,
                                                  &MicroKernel<5>, &MicroKernel<6>};

}  // namespace
}  // namespace dsv3::ops::avx2
