// The f32 outer-product micro-kernel and its packing steps, shared by the AVX-512 MatMul (packed
// prefill form) and Gemm. A tile is kTileRows output columns (two vectors) x up to kTileTokens
// output rows; its 24 accumulators stay in registers while kc products are summed in order.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "ops/isa/avx512_transpose16.h"
#include "ops/isa/simd_intrinsics.h"

namespace dsv3::ops::avx512 {

constexpr int64_t kTileRows = 32;  // panel width: two vectors of output columns
constexpr int kTileTokens = 12;    // tokens (output rows) per micro-kernel tile

inline __mmask16 LaneMask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff)
                 : static_cast<__mmask16>((1u << std::max<int64_t>(n, 0)) - 1u);
}

// y[t, r .. r+32) (+)= sum_c panel[c][0..32) * xpanel[c][t] for t < NT, c in order from a zero
// start; m0/m1 mask the 32 columns. accumulate: the sum is added to y (one rounding), else stored.
template <int NT>
void MicroKernelF32(const float* panel, const float* xpanel, int64_t kc, float* y, int64_t ldy,
                    __mmask16 m0, __mmask16 m1, bool accumulate) {
  // y's lines requested into the L2 for the adds at the end, as MicroKernelBf16 does (y's token
  // rows alias in the caches; MatMul's and Gemm's). bench-medium BF16 and FP8 --no-bf16-dot pp512,
  // forwards alternating in one process: 0.5-3.8 % less time (6 of 6). The token loops are unrolled
  // so the accumulators stay in registers only.
#pragma GCC unroll 16
  for (int j = 0; j < NT; ++j) {
    _mm_prefetch(reinterpret_cast<const char*>(y + j * ldy), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(y + j * ldy + 16), _MM_HINT_T1);
  }
  __m512 acc[NT][2];
#pragma GCC unroll 16
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
  for (int64_t c = 0; c < kc; ++c) {
    const __m512 w0 = _mm512_load_ps(panel + c * kTileRows);
    const __m512 w1 = _mm512_load_ps(panel + c * kTileRows + 16);
    const float* xc = xpanel + c * kTileTokens;
#pragma GCC unroll 16
    for (int j = 0; j < NT; ++j) {
      const __m512 b = _mm512_set1_ps(xc[j]);
      acc[j][0] = _mm512_fmadd_ps(w0, b, acc[j][0]);
      acc[j][1] = _mm512_fmadd_ps(w1, b, acc[j][1]);
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NT; ++j) {
    float* yj = y + j * ldy;  // y[t0 + j, r:r + 32]
    if (accumulate) {
      acc[j][0] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, yj), acc[j][0]);
      acc[j][1] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, yj + 16), acc[j][1]);
    }
    _mm512_mask_storeu_ps(yj, m0, acc[j][0]);
    _mm512_mask_storeu_ps(yj + 16, m1, acc[j][1]);
  }
}

using MicroKernelF32Fn = void (*)(const float*, const float*, int64_t, float*, int64_t, __mmask16,
                                  __mmask16, bool);

template <int... Ns>
constexpr auto MakeMicroKernelsF32(std::integer_sequence<int, Ns...>) {
  return std::array<MicroKernelF32Fn, sizeof...(Ns)>{&MicroKernelF32<Ns + 1>...};
}
// kMicroKernelsF32[nt - 1] handles nt tokens.
inline constexpr auto kMicroKernelsF32 =
    MakeMicroKernelsF32(std::make_integer_sequence<int, kTileTokens>{});

// xpanel: [ceil(nt / 12)][kc][12] = x[t0 + t, c0 + c] (x row-major with leading dimension ldx),
// tokens past nt zero. Sixteen columns of twelve tokens at a time through a 16x16 transpose.
inline void PackTokens(const float* x, int64_t ldx, int64_t t0, int64_t nt, int64_t c0, int64_t kc,
                       float* xpanel) {
  constexpr __mmask16 kTwelve = 0x0fff;
  for (int64_t g = 0; g * kTileTokens < nt; ++g) {
    const int64_t valid = std::min<int64_t>(kTileTokens, nt - g * kTileTokens);
    float* dst = xpanel + g * kc * kTileTokens;
    const float* src = x + (t0 + g * kTileTokens) * ldx + c0;
    for (int64_t cb = 0; cb < kc; cb += 16) {
      const int64_t n = std::min<int64_t>(16, kc - cb);
      const __mmask16 m = LaneMask(n);
      __m512 v[16];
      for (int64_t i = 0; i < 16; ++i)
        v[i] = i < valid ? _mm512_maskz_loadu_ps(m, src + i * ldx + cb) : _mm512_setzero_ps();
      Transpose16x16(v);
      for (int64_t j = 0; j < n; ++j)
        _mm512_mask_storeu_ps(dst + (cb + j) * kTileTokens, kTwelve, v[j]);
    }
  }
}

// As PackTokens from x stored transposed: x[t, c] = xt[c * ldx + t]. Column by column, so each
// of xt's rows is read once, front to back (12 contiguous floats per token group).
inline void PackTokensTransposed(const float* xt, int64_t ldx, int64_t t0, int64_t nt, int64_t c0,
                                 int64_t kc, float* xpanel) {
  const int64_t groups = (nt + kTileTokens - 1) / kTileTokens;
  const __mmask16 last = LaneMask(nt - (groups - 1) * kTileTokens);
  for (int64_t c = 0; c < kc; ++c) {
    const float* src = xt + (c0 + c) * ldx + t0;
    float* dst = xpanel + c * kTileTokens;
    for (int64_t g = 0; g < groups; ++g) {
      const __mmask16 m = g + 1 < groups ? __mmask16{0x0fff} : last;
      _mm512_mask_storeu_ps(dst + g * kc * kTileTokens, 0x0fff,
                            _mm512_maskz_loadu_ps(m, src + g * kTileTokens));
    }
  }
}

}  // namespace dsv3::ops::avx512
