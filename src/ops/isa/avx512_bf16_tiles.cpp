// The exact (f32) product on BF16 weights in 32-row tiles (ops/bf16_tiles.h), for any T: decode
// and the few-token products of a model whose experts were tiled for the bf16-dot path.
#include <algorithm>

#include "ops/bf16_tiles.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int64_t kHalf = 16;  // rows a vector holds: half a tile

// y[t, r0 + 16 h + i] = sum_j W[r, 2 j] x[t, 2 j] + sum_j W[r, 2 j + 1] x[t, 2 j + 1] for
// h < H, i < 16, t < NT: the even and the odd columns each summed left to right in their own lane
// and added at the end (r0 a multiple of 16, the rows within whole tiles). A row's result never
// depends on H, NT or the other rows and tokens.
//   x: [NT, cols]   y: [NT, ldy] from the tile rows' column
template <int H, int NT>
void TiledDot(const float* x, const WeightView& w, int64_t r0, float* y, int64_t ldy) {
  const int64_t cols = w.cols, pairs = cols / 2;
  const uint32_t* half[H];  // [pairs][32] dwords, this half's 16 at offset 0
  for (int h = 0; h < H; ++h) {
    const int64_t r = r0 + h * kHalf;
    half[h] = Bf16TilePairs(w, r / kBf16Tile, 0) + r % kBf16Tile;
  }
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 even[H][NT], odd[H][NT];
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < NT; ++t) even[h][t] = odd[h][t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < pairs; ++j) {
    __m512 xe[NT], xo[NT];
    for (int t = 0; t < NT; ++t) {
      xe[t] = _mm512_set1_ps(x[t * cols + 2 * j]);
      xo[t] = _mm512_set1_ps(x[t * cols + 2 * j + 1]);
    }
    for (int h = 0; h < H; ++h) {
      // 16 rows' (W[r, 2 j], W[r, 2 j + 1]): the low half is the even column's bf16
      const __m512i v = _mm512_loadu_si512(half[h] + j * kBf16Tile);
      const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(v, high));
      for (int t = 0; t < NT; ++t) {
        even[h][t] = _mm512_fmadd_ps(we, xe[t], even[h][t]);
        odd[h][t] = _mm512_fmadd_ps(wo, xo[t], odd[h][t]);
      }
    }
  }
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < NT; ++t)
      _mm512_storeu_ps(y + t * ldy + r0 + h * kHalf, _mm512_add_ps(even[h][t], odd[h][t]));
}

// Up to 3 tokens from t0 on, over the half-tiles [r0, r1) (multiples of 16): 4 half-tiles at a
// time for one token (8 accumulator chains), 2 for more.
template <int NT>
void TiledDotRows(const float* x, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  const int64_t ldy = w.rows;
  int64_t r = r0;
  if constexpr (NT == 1)
    for (; r + 4 * kHalf <= r1; r += 4 * kHalf) TiledDot<4, NT>(x, w, r, y, ldy);
  for (; r + 2 * kHalf <= r1; r += 2 * kHalf) TiledDot<2, NT>(x, w, r, y, ldy);
  for (; r < r1; r += kHalf) TiledDot<1, NT>(x, w, r, y, ldy);
}

}  // namespace

void MatMulBf16TiledRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                         int64_t row_end, float* y) {
  const int64_t tiled = Bf16TiledRows(w);
  // Rows outside whole half-tiles (a range that does not start or end on 16 rows, or rows past
  // the last tile): the reference, which reads either layout; the rest natively.
  const int64_t r0 = std::min(std::max(row_begin, (row_begin + kHalf - 1) / kHalf * kHalf), tiled);
  const int64_t r1 = std::max(r0, std::min(row_end, tiled) / kHalf * kHalf);
  if (row_begin < r0) scalar::MatMulRows(x, T, w, row_begin, std::min(r0, row_end), y);
  if (r1 < row_end) scalar::MatMulRows(x, T, w, std::max(r1, row_begin), row_end, y);
  for (int64_t t0 = 0; t0 < T; t0 += 3) {
    const float* xt = x + t0 * w.cols;
    float* yt = y + t0 * w.rows;
    switch (std::min<int64_t>(3, T - t0)) {
      case 1:
        TiledDotRows<1>(xt, w, r0, r1, yt);
        break;
      case 2:
        TiledDotRows<2>(xt, w, r0, r1, yt);
        break;
      default:
        TiledDotRows<3>(xt, w, r0, r1, yt);
        break;
    }
  }
}

}  // namespace dsv3::ops::avx512
