// AVX-512 MatMul for the group-quantized formats q8_0 (kI8) and q4_0 (kU8), exact path: each
// group of 32 weights is widened to two f32 vectors, multiplied by its group scale (one rounding)
// and FMA'd with x in f32, so the result matches the scalar reference to f32 rounding. Reached
// only through ops/matmul.cpp's dispatch.
//
// Dot-product form for every T: a tile of 4 rows x up to 3 tokens streams each weight row once per
// token tile; the token tiles of a row tile run back to back, so the rows (a few KB) are re-read
// from L1/L2, not memory. Weights are read from memory once per call.
#include <algorithm>

#include "ops/isa/simd_intrinsics.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int64_t kGroup = 32;  // the only group size with a SIMD kernel (others: scalar)
constexpr int kMr = 4;          // rows per tile
constexpr int kNt = 3;          // tokens per tile: 12 accumulators + 6 x + 2 w registers

template <DType D>
constexpr int64_t RowBytes(int64_t cols) {
  return D == DType::kI8 ? cols : (cols + 1) / 2;
}

// Columns [32 g, 32 g + n) of a row as f32 codes (q8_0: q; q4_0: nibble - 8), n <= 32. Lanes past
// n hold whatever the row's padding decodes to (q4_0's odd tail) or zero; x is zero there, so
// they add nothing. Never reads past the row's bytes.
template <DType D>
void LoadGroup(const uint8_t* row, int64_t g, int64_t n, __m512* lo, __m512* hi) {
  if constexpr (D == DType::kI8) {
    const uint8_t* p = row + g * kGroup;
    __m256i bytes;
    if (n == kGroup) {
      bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    } else {
      const __mmask32 m = (__mmask32{1} << n) - 1;
      bytes = _mm256_maskz_loadu_epi8(m, p);
    }
    *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(bytes)));
    *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(bytes, 1)));
  } else {
    const uint8_t* p = row + g * (kGroup / 2);
    __m128i packed;
    if (n == kGroup) {
      packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    } else {
      const __mmask16 m = static_cast<__mmask16>((1u << ((n + 1) / 2)) - 1u);
      packed = _mm_maskz_loadu_epi8(m, p);
    }
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i even = _mm_and_si128(packed, mask);                    // columns 0, 2, ..
    const __m128i odd = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);  // columns 1, 3, ..
    const __m128i eight = _mm_set1_epi8(8);
    const __m128i c0 = _mm_sub_epi8(_mm_unpacklo_epi8(even, odd), eight);  // columns 0..15
    const __m128i c1 = _mm_sub_epi8(_mm_unpackhi_epi8(even, odd), eight);  // columns 16..31
    *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c0));
    *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c1));
  }
}

float ReduceAdd(__m512 v) {
  return _mm512_reduce_add_ps(v);
}

// y[t0 + j, r + i] for i < MR, j < NT.
template <DType D, int MR, int NT>
void DotTile(const float* x, int64_t t0, const WeightView& w, int64_t r, float* y) {
  const int64_t cols = w.cols;
  const int64_t groups = (cols + kGroup - 1) / kGroup;
  const uint8_t* wrow[MR];
  const float* srow[MR];
  for (int i = 0; i < MR; ++i) {
    wrow[i] = static_cast<const uint8_t*>(w.data) + (r + i) * RowBytes<D>(cols);
    srow[i] = w.scale + (r + i) * groups;
  }
  const float* xrow[NT];
  for (int j = 0; j < NT; ++j) xrow[j] = x + (t0 + j) * cols;  // x[t0 + j, :]

  __m512 acc[MR][NT];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t c = g * kGroup;
    const int64_t n = std::min(kGroup, cols - c);
    __m512 x0[NT], x1[NT];
    if (n == kGroup) {
      for (int j = 0; j < NT; ++j) {
        x0[j] = _mm512_loadu_ps(xrow[j] + c);
        x1[j] = _mm512_loadu_ps(xrow[j] + c + 16);
      }
    } else {
      const __mmask16 m0 = static_cast<__mmask16>(n >= 16 ? 0xffffu : (1u << n) - 1u);
      const __mmask16 m1 = static_cast<__mmask16>(n <= 16 ? 0u : (1u << (n - 16)) - 1u);
      for (int j = 0; j < NT; ++j) {
        x0[j] = _mm512_maskz_loadu_ps(m0, xrow[j] + c);
        x1[j] = _mm512_maskz_loadu_ps(m1, xrow[j] + c + 16);
      }
    }
    if (D == DType::kU8 && n == kGroup) {
      // A row's 16 bytes widen to 16 lanes (low nibble: even column, high: odd); vpermps looks
      // each nibble up in the group's table of (code - 8) * s (the rounding of the generic path),
      // against x split into its even and odd columns.
      const __m512i evens =
          _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
      const __m512i odds =
          _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
      const __m512 codes = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
      __m512 xe[NT], xo[NT];
      for (int j = 0; j < NT; ++j) {
        xe[j] = _mm512_permutex2var_ps(x0[j], evens, x1[j]);
        xo[j] = _mm512_permutex2var_ps(x0[j], odds, x1[j]);
      }
      for (int i = 0; i < MR; ++i) {
        const __m512i v = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(wrow[i] + g * (kGroup / 2))));
        const __m512 table = _mm512_mul_ps(codes, _mm512_set1_ps(srow[i][g]));
        const __m512 we = _mm512_permutexvar_ps(v, table);  // the low 4 bits index
        const __m512 wo = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table);
        for (int j = 0; j < NT; ++j) {
          acc[i][j] = _mm512_fmadd_ps(we, xe[j], acc[i][j]);
          acc[i][j] = _mm512_fmadd_ps(wo, xo[j], acc[i][j]);
        }
      }
      continue;
    }
    for (int i = 0; i < MR; ++i) {
      __m512 w0, w1;
      LoadGroup<D>(wrow[i], g, n, &w0, &w1);
      const __m512 s = _mm512_set1_ps(srow[i][g]);
      w0 = _mm512_mul_ps(w0, s);
      w1 = _mm512_mul_ps(w1, s);
      for (int j = 0; j < NT; ++j) {
        acc[i][j] = _mm512_fmadd_ps(w0, x0[j], acc[i][j]);
        acc[i][j] = _mm512_fmadd_ps(w1, x1[j], acc[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NT; ++j) y[(t0 + j) * w.rows + r + i] = ReduceAdd(acc[i][j]);
}

template <DType D, int MR>
void DotTileTokens(const float* x, int64_t t0, int64_t nt, const WeightView& w, int64_t r,
                   float* y) {
  static_assert(kNt == 3);
  switch (nt) {
    case 1:
      return DotTile<D, MR, 1>(x, t0, w, r, y);
    case 2:
      return DotTile<D, MR, 2>(x, t0, w, r, y);
    default:
      return DotTile<D, MR, 3>(x, t0, w, r, y);
  }
}

template <DType D>
void MatMulTyped(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                 float* y) {
  int64_t r = row_begin;
  for (; r + kMr <= row_end; r += kMr)
    for (int64_t t0 = 0; t0 < T; t0 += kNt)
      DotTileTokens<D, kMr>(x, t0, std::min<int64_t>(kNt, T - t0), w, r, y);
  for (; r < row_end; ++r)
    for (int64_t t0 = 0; t0 < T; t0 += kNt)
      DotTileTokens<D, 1>(x, t0, std::min<int64_t>(kNt, T - t0), w, r, y);
}

}  // namespace

void MatMulRowsQuant(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                     int64_t row_end, float* y) {
  if (w.cols == 0) {
    for (int64_t t = 0; t < T; ++t)
      std::fill(y + t * w.rows + row_begin, y + t * w.rows + row_end, 0.0f);
    return;
  }
  if (w.group_size != kGroup) return scalar::MatMulRows(x, T, w, row_begin, row_end, y);
  switch (w.dtype) {
    case DType::kI8:
      return MatMulTyped<DType::kI8>(x, T, w, row_begin, row_end, y);
    case DType::kU8:
      return MatMulTyped<DType::kU8>(x, T, w, row_begin, row_end, y);
    default:
      return scalar::MatMulRows(x, T, w, row_begin, row_end, y);
  }
}

}  // namespace dsv3::ops::avx512
