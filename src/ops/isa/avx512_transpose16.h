// In-register transpose of a 16x16 f32 tile (AVX-512): v[i] lane j becomes v[j] lane i.
#pragma once

#include "ops/isa/simd_intrinsics.h"

namespace dsv3::ops::avx512 {

inline void Transpose16x16(__m512 v[16]) {
  __m512 t[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(v[2 * k], v[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(v[2 * k], v[2 * k + 1]);
  }
  // u[4k + m], 128-bit lane L: rows 4k..4k+3 of column 4L + m.
  __m512 u[16];
  for (int k = 0; k < 4; ++k) {
    u[4 * k + 0] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * k + 1] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * k + 2] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * k + 3] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int m = 0; m < 4; ++m) {
    const __m512 a0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);       // A0 A1 B0 B1
    const __m512 a1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xee);       // A2 A3 B2 B3
    const __m512 b0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);  // C0 C1 D0 D1
    const __m512 b1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xee);  // C2 C3 D2 D3
    v[m] = _mm512_shuffle_f32x4(a0, b0, 0x88);                          // A0 B0 C0 D0
    v[4 + m] = _mm512_shuffle_f32x4(a0, b0, 0xdd);                      // A1 B1 C1 D1
    v[8 + m] = _mm512_shuffle_f32x4(a1, b1, 0x88);
    v[12 + m] = _mm512_shuffle_f32x4(a1, b1, 0xdd);
  }
}

}  // namespace dsv3::ops::avx512
