// FP8 (e4m3) weights decoded 64 bytes at a time by shifts and one ternary-logic op per 16
// values, for the exact kernel's decode products on pair tiles (avx512_bf16_tiles.cpp), in place
// of vpmovsxbw + vcvtph2ps, which bound those products by their instruction count rather than by
// DRAM.
//
// A 64-byte line read as 16 dwords; byte position b of every dword becomes one vector:
// ((v << (24 - 8 b)) >>arith 4) & 0x87f00000 | 0x20000000 puts a byte's sign on bit 31 and its 4
// exponent and 3 mantissa bits under an f32 exponent offset by 64, an f32 worth e4m3 * 2^-56 for
// every code with a nonzero exponent (always a normal f32). Codes with a zero exponent (zeros and
// subnormals) come out as sign * 2^-63 (1 + m/8); with kMend they are mended to 2 * that - sign *
// 2^-62 = sign * m * 2^-65 (exact), for the rare lines that hold one (LineHasZeroExponent). No
// decoded value is ever an f32 subnormal: Intel cores take a microcode assist on a subnormal
// operand (AMD cores do not), and real e4m3 weights hold subnormal codes. (A product or sum can
// still be one when x is tiny, under about 2^-60, as in any f32 arithmetic.) The NaN codes
// 0x7F/0xFF decode as
// +-480 * 2^-56, as the f16 form's +-480 * 2^-8.
//
// Internal linkage on purpose, as ops/isa/transpose8x8.h explains: include it only from files
// built with the AVX-512 flags.
#pragma once

#include "ops/isa/simd_intrinsics.h"

namespace dsv3::ops::avx512 {
namespace {

constexpr float kFp8LineScale = 0x1p56f;  // what multiplies a block scale for line values

// Whether any byte of v is a zero-exponent code (zero or subnormal).
inline bool LineHasZeroExponent(__m512i v) {
  return _mm512_testn_epi8_mask(v, _mm512_set1_epi8(0x78)) != 0;
}

// wq[b]: byte position b of v's 16 dwords as f32 worth e4m3 * 2^-56; kMend: right for every code
// (else zero-exponent codes are wrong).
template <bool kMend>
void Fp8LineValues(__m512i v, __m512 wq[4]) {
  const __m512i bits = _mm512_set1_epi32(static_cast<int>(0x87f00000u));
  const __m512i offset = _mm512_set1_epi32(0x20000000);  // exponent + 64
  // (a & b) | c keeps the sign (bit 31) and bits 26..20 and sets the offset.
  const auto value = [&](__m512i a) {
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(a, bits, offset, 0xEA));
  };
  // Each word's high byte arithmetic-shifted down by 4 within its word: the high word's (bytes 3
  // and, after v << 8 per word, 2) lies at bits 27..20 with its sign at 31..28, as the whole
  // dword shifted would put it; the low word's (bytes 1 and 0) at 11..4, 16 below. 9 operations
  // for the 4 vectors instead of 11 (each byte moved to the top of its dword, then shifted): an
  // FP8 GEMV from the L2/L3, 2 threads, 2048x512 22.2-24.7 -> 20.0-22.3 us, 2048x2048 90.6 ->
  // 80.9-82.7 us; bench-medium FP8 tg64, tokens alternating in one process, either role (busy
  // host): 1.2-3.7 % less time a token (4 runs).
  const __m512i odd = _mm512_srai_epi16(v, 4);                         // bytes 3, 1
  const __m512i even = _mm512_srai_epi16(_mm512_slli_epi16(v, 8), 4);  // bytes 2, 0
  wq[0] = value(_mm512_slli_epi32(even, 16));
  wq[1] = value(_mm512_slli_epi32(odd, 16));
  wq[2] = value(even);
  wq[3] = value(odd);
  if constexpr (kMend) {
    const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
    const __m512i low = _mm512_castps_si512(_mm512_set1_ps(0x1p-62f));
    for (int q = 0; q < 4; ++q) {
      const __m512i u = _mm512_castps_si512(wq[q]);
      const __mmask16 zero_exponent = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x07800000));
      const __m512 c = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(u, sign, low, 0xEA));
      wq[q] = _mm512_mask_fmsub_ps(wq[q], zero_exponent, _mm512_set1_ps(2.0f), c);
    }
  }
}

}  // namespace
}  // namespace dsv3::ops::avx512
