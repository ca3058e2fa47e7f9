// FP8 (e4m3) weights decoded 64 bytes at a time by shifts and one ternary-logic op per 16
// values, for the exact kernels' decode products (avx512_bf16_tiles.cpp on pair tiles,
// avx512_matmul.cpp on row-major rows), in place of vpmovsxbw + vcvtph2ps, which bound those
// products by their instruction count rather than by DRAM.
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

#include <cstdint>
#include <type_traits>

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
  // (a & b) | c
  wq[0] = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
      _mm512_srai_epi32(_mm512_slli_epi32(v, 24), 4), bits, offset, 0xEA));
  wq[1] = _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
      _mm512_srai_epi32(_mm512_slli_epi32(v, 16), 4), bits, offset, 0xEA));
  wq[2] = _mm512_castsi512_ps(
      _mm512_ternarylogic_epi32(_mm512_srai_epi32(_mm512_slli_epi32(v, 8), 4), bits, offset, 0xEA));
  wq[3] =
      _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_srai_epi32(v, 4), bits, offset, 0xEA));
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

// out[b], lane k = x[4 k + b] for the 64 floats at x: the columns a row-major line's byte
// position b holds in lane k.
inline void PermuteX64(const float* x, __m512 out[4]) {
  const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
  const __m512 x2 = _mm512_loadu_ps(x + 32), x3 = _mm512_loadu_ps(x + 48);
  for (int b = 0; b < 4; ++b) {
    // lane l: element 4 (l % 8) + b of (x0, x1) for l < 8, of (x2, x3) for l >= 8
    const __m512i index = _mm512_add_epi32(
        _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28),
        _mm512_set1_epi32(b));
    out[b] = _mm512_mask_blend_ps(0xff00, _mm512_permutex2var_ps(x0, index, x1),
                                  _mm512_permutex2var_ps(x2, index, x3));
  }
}

// Columns [c, end) (end - c a multiple of 64) of MR row-major FP8 rows dotted with NT tokens'
// x: part[i][t] += the products, values worth e4m3 * 2^-56 (Fp8LineValues). Lane k of a line
// step adds columns c + 4k, c + 4k + 1, c + 4k + 2, c + 4k + 3 in that order, so a row's sums
// never depend on MR or NT. Each row's line `ahead` bytes on is requested per step. Lines with a
// zero-exponent code take the mending off the fast loop (a branch inside it made GCC keep the
// sums in memory).
template <int MR, int NT>
[[gnu::always_inline]] inline void Fp8RowLines(const uint8_t* const* wrow, const float* const* xrow,
                                               int64_t c, int64_t end, int64_t ahead,
                                               __m512 (&part)[MR][NT]) {
  const auto step = [&](int64_t col, const __m512i* v, auto mend) {
    __m512 xq[NT][4];
    for (int t = 0; t < NT; ++t) PermuteX64(xrow[t] + col, xq[t]);
    for (int i = 0; i < MR; ++i) {
      __m512 wq[4];
      Fp8LineValues<decltype(mend)::value>(v[i], wq);
      for (int t = 0; t < NT; ++t)
        for (int b = 0; b < 4; ++b) part[i][t] = _mm512_fmadd_ps(wq[b], xq[t][b], part[i][t]);
    }
  };
  while (c < end) {
    __m512i v[MR];
    for (; c < end; c += 64) {
      bool special = false;
      for (int i = 0; i < MR; ++i) {
        PrefetchAt(wrow[i], c + ahead);
        v[i] = _mm512_loadu_si512(wrow[i] + c);
        special |= LineHasZeroExponent(v[i]);
      }
      if (special) break;
      step(c, v, std::false_type{});
    }
    if (c < end) {
      step(c, v, std::true_type{});
      c += 64;
    }
  }
}

}  // namespace
}  // namespace dsv3::ops::avx512
