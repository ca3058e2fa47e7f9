// AVX2+FMA MatMul for the group-quantized formats q8_0 (kI8) and q4_0 (kU8), exact path: 8
// weights at a time are widened to f32, multiplied by their group scale (one rounding) and FMA'd
// with x in f32. Reached only through ops/matmul.cpp's dispatch.
//
// Dot-product form: a tile of 4 rows x up to 2 tokens streams the rows; token tiles of a row tile
// run back to back so the rows are re-read from cache, not memory.
#include <algorithm>
#include <cstring>

#include "ops/isa/simd_intrinsics.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int64_t kGroup = 32;  // the only group size with a SIMD kernel (others: scalar)
constexpr int kMr = 4;          // rows per tile
constexpr int kNt = 2;          // tokens per tile: 8 accumulators + 2 x + w + 4 scales

template <DType D>
constexpr int64_t RowBytes(int64_t cols) {
  return D == DType::kI8 ? cols : (cols + 1) / 2;
}

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Codes of columns [c, c + 8) as f32 (q8_0: q; q4_0: nibble - 8); c is a multiple of 8. `group`
// points at the group's bytes (32 for q8_0, 16 for q4_0), k = (c mod 32) / 8.
template <DType D>
__m256 LoadCodes(const uint8_t* group, int k) {
  if constexpr (D == DType::kI8) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(group + 8 * k));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  } else {
    int32_t four;
    std::memcpy(&four, group + 4 * k, 4);
    const __m128i packed = _mm_cvtsi32_si128(four);
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i even = _mm_and_si128(packed, mask);
    const __m128i odd = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
    const __m128i codes = _mm_sub_epi8(_mm_unpacklo_epi8(even, odd), _mm_set1_epi8(8));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes));
  }
}

// y[t0 + j, r + i] for i < MR, j < NT. The last, partial group is copied into zero-padded
// buffers (AVX2 has no byte-masked loads), so nothing past a row or x is read.
template <DType D, int MR, int NT>
void DotTile(const float* x, int64_t t0, const WeightView& w, int64_t r, float* y) {
  constexpr int64_t kGroupBytes = D == DType::kI8 ? kGroup : kGroup / 2;
  const int64_t cols = w.cols;
  const int64_t groups = (cols + kGroup - 1) / kGroup;
  const int64_t full_groups = cols / kGroup;
  const uint8_t* wrow[MR];
  const float* srow[MR];
  for (int i = 0; i < MR; ++i) {
    wrow[i] = static_cast<const uint8_t*>(w.data) + (r + i) * RowBytes<D>(cols);
    srow[i] = w.scale + (r + i) * groups;
  }
  const float* xrow[NT];
  for (int j = 0; j < NT; ++j) xrow[j] = x + (t0 + j) * cols;  // x[t0 + j, :]

  __m256 acc[MR][NT];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  alignas(32) uint8_t wtail[MR][kGroupBytes];
  alignas(32) float xtail[NT][kGroup];
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t c = g * kGroup;
    const uint8_t* wg[MR];
    const float* xg[NT];
    if (g < full_groups) {
      for (int i = 0; i < MR; ++i) wg[i] = wrow[i] + g * kGroupBytes;
      for (int j = 0; j < NT; ++j) xg[j] = xrow[j] + c;
    } else {
      const int64_t n = cols - c;
      const int64_t nbytes = D == DType::kI8 ? n : (n + 1) / 2;
      for (int i = 0; i < MR; ++i) {
        std::memset(wtail[i], 0, sizeof(wtail[i]));
        std::memcpy(wtail[i], wrow[i] + g * kGroupBytes, static_cast<size_t>(nbytes));
        wg[i] = wtail[i];
      }
      for (int j = 0; j < NT; ++j) {
        std::fill(xtail[j], xtail[j] + kGroup, 0.0f);
        std::memcpy(xtail[j], xrow[j] + c, static_cast<size_t>(n) * sizeof(float));
        xg[j] = xtail[j];
      }
    }
    __m256 s[MR];
    for (int i = 0; i < MR; ++i) s[i] = _mm256_set1_ps(srow[i][g]);
    for (int k = 0; k < 4; ++k) {
      __m256 xv[NT];
      for (int j = 0; j < NT; ++j) xv[j] = _mm256_loadu_ps(xg[j] + 8 * k);
      for (int i = 0; i < MR; ++i) {
        const __m256 wv = _mm256_mul_ps(LoadCodes<D>(wg[i], k), s[i]);
        for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NT; ++j) y[(t0 + j) * w.rows + r + i] = HorizontalSum(acc[i][j]);
}

template <DType D, int MR>
void DotTileTokens(const float* x, int64_t t0, int64_t nt, const WeightView& w, int64_t r,
                   float* y) {
  static_assert(kNt == 2);
  if (nt == 1)
    DotTile<D, MR, 1>(x, t0, w, r, y);
  else
    DotTile<D, MR, 2>(x, t0, w, r, y);
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

}  // namespace dsv3::ops::avx2
