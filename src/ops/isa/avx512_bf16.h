// f32 -> bf16 rounding on AVX-512 as F32ToBf16 rounds, subnormals kept, for the bf16 copies
// (avx512_transpose.cpp). (The bf16-dot MatMul's x takes vcvtne2ps2bf16, which flushes them.)
//
// Internal linkage on purpose, as ops/isa/transpose8x8.h explains: include it only from files
// built with the AVX-512 flags.
#pragma once

#include "ops/isa/simd_intrinsics.h"

namespace dsv3::ops::avx512 {
namespace {  // NOLINT(build/namespaces): see above

// 16 floats rounded to bf16 as F32ToBf16 does (nearest even; NaN stays NaN, made quiet), each in
// the low half of its 32-bit lane. Integer arithmetic on the bits, so every input (subnormals
// and overflow to inf included) gives the scalar function's bits.
inline __m512i F32ToBf16Lanes(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i high = _mm512_srli_epi32(u, 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  const __m512i bias =
      _mm512_add_epi32(_mm512_and_si512(high, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fff));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  return _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40)));
}

// The same 16 values narrowed to 16 contiguous bf16.
inline __m256i F32ToBf16x16(__m512 v) {
  return _mm512_cvtepi32_epi16(F32ToBf16Lanes(v));
}

}  // namespace
}  // namespace dsv3::ops::avx512
