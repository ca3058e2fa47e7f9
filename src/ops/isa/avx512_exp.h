// Vectorised exp for the AVX-512 kernels (include only from src/ops/isa/avx512_*.cpp).
//
// Cephes expf: x = n*ln2 + r with n = round(x*log2(e)) and |r| <= ln2/2 (Cody-Waite split of ln2:
// n*ln2_hi is exact), exp(r) ~= 1 + r + r^2*P(r) with Cephes' degree-5 P, then scaled by 2^n.
// Error bound (kExpRelError in ops/exp_kernels.h): relative error <= 2^-23 wherever exp(x) is a
// normal float; measured over every float in [-110, 95]: at most 1.01 ulp, 8.5e-8 relative.
// Outside the normal range: x >= 88.7229 and +inf -> +inf; x <= -103.98 and -inf -> +0;
// NaN -> NaN; subnormal results are within 2^-149 of exp(x).
// The AVX2 variant (avx2_exp.h) computes the same polynomial and the same exactly scaled result,
// so both give identical bits.
#pragma once

#include "ops/isa/simd_intrinsics.h"

namespace dsv3::ops::avx512 {

inline __m512 Exp(__m512 x) {
  // Past these, exp is 0 or inf in f32; clamping keeps n (and so 2^n) in range. The operand
  // order lets a NaN x through both (max/min return the second operand on NaN).
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // r = x - n*ln2 with ln2 = 0.693359375 - 2.12194440e-4 (the high part has 9 bits: n*hi exact).
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  // p * 2^n with one rounding: overflow to inf, gradual underflow.
  return _mm512_scalef_ps(p, n);
}

}  // namespace dsv3::ops::avx512
