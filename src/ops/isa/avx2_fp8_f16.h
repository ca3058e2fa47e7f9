// FP8 (e4m3) codes as f32 through vcvtph2ps, shared by the AVX2 kernels that read FP8 weights
// as f32 (the dot-form products, the FP8 column layout's VecMatFp8).
//
// Internal linkage on purpose, as ops/isa/transpose8x8.h explains: include it only from files
// built with the AVX2 flags.
#pragma once

#include "ops/isa/simd_intrinsics.h"

namespace dsv3::ops::avx2 {
namespace {

// e4m3fn and f16 both store sign | exponent | mantissa, with exponent biases 7 and 15: moving the
// 7 exponent+mantissa bits up by 7 gives the f16 whose value is e4m3 * 2^-8, subnormals included
// (vcvtph2ps converts them exactly). Sign-extending the byte first puts the sign in bit 15 (bit
// 14 is then cleared). The NaN codes 0x7F/0xFF decode as ±480 instead of NaN; checkpoints never
// hold them (quantisers saturate at ±448).
inline __m256 Fp8ToF32(__m128i bytes) {
  const __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(bytes), 7);
  return _mm256_cvtph_ps(_mm_and_si128(h, _mm_set1_epi16(static_cast<short>(0xbfff))));
}

// Fp8ToF32 of 16 bytes at once (the integer steps on one ymm): lo = bytes 0-7, hi = 8-15.
inline void Fp8ToF32x2(__m128i bytes, __m256* lo, __m256* hi) {
  const __m256i h = _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(bytes), 7),
                                     _mm256_set1_epi16(static_cast<short>(0xbfff)));
  *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

}  // namespace
}  // namespace dsv3::ops::avx2
