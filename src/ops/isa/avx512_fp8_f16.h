// FP8 (e4m3) codes as f32 through vcvtph2ps, shared by the AVX-512 kernels that read FP8 weights
// as f32 (the dot-form products, the FP8 column layout's VecMatFp8).
//
// Internal linkage on purpose, as ops/isa/transpose8x8.h explains: include it only from files
// built with the AVX-512 flags.
#pragma once

#include "ops/isa/simd_intrinsics.h"

namespace dsv3::ops::avx512 {
namespace {

// e4m3fn and f16 both store sign | exponent | mantissa, with exponent biases 7 and 15: moving the
// 7 exponent+mantissa bits up by 7 gives the f16 whose value is e4m3 * 2^-8, subnormals included
// (vcvtph2ps converts them exactly). Sign-extending the byte first puts the sign in bit 15 (bit
// 14 is then cleared). The NaN codes 0x7F/0xFF decode as ±480 instead of NaN; checkpoints never
// hold them (quantisers saturate at ±448).
inline __m512 Fp8ToF32(__m128i bytes) {
  const __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7);
  return _mm512_cvtph_ps(_mm256_and_si256(h, _mm256_set1_epi16(static_cast<short>(0xbfff))));
}

// Fp8ToF32 of 32 bytes at once (the integer steps on one zmm): lo = bytes 0-15, hi = 16-31.
inline void Fp8ToF32x2(__m256i bytes, __m512* lo, __m512* hi) {
  const __m512i h = _mm512_and_si512(_mm512_slli_epi16(_mm512_cvtepi8_epi16(bytes), 7),
                                     _mm512_set1_epi16(static_cast<short>(0xbfff)));
  *lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
  *hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

}  // namespace
}  // namespace dsv3::ops::avx512
