// AVX2 reads BF16 pair tiles (ops/bf16_tiles.h) natively, as the AVX-512 exact kernels do
// (avx512_bf16_tiles.cpp): decode and the few-token products take the dot form below, over a
// tile's bytes front to back (one stream: AVX2's row-major dot form reads 6 rows a row length
// apart), and prefill's packed form takes 8 rows' column pair in one load (avx2_matmul.cpp,
// PackWeights). FP8 stays row-major on AVX2 (LoadOptions::tile_fp8_pairs).
#include "ops/isa/simd_intrinsics.h"

#include <algorithm>

#include "ops/bf16_tiles.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int64_t kRows = 8;   // rows a ymm holds
constexpr int64_t kHalf = 16;  // half a tile: the smallest piece a thread's row range takes

// y[t, r0 + 8 q + i] = sum_j W[r, 2 j] x[t, 2 j] + sum_j W[r, 2 j + 1] x[t, 2 j + 1] for q < Q,
// i < 8, t < NT: the even and the odd columns each summed left to right in their own lane and
// added at the end (r0 and the Q x 8 rows within one tile). A row's result never depends on Q, NT
// or the other rows and tokens.
//   x: [NT, cols]   y: [NT, ldy]
// Q = 4 (a whole tile, decode) with NT = 1, or Q = 2 (a half) with NT <= 2: at most 8
// accumulators, so nothing spills from the 16 ymm.
template <int Q, int NT>
void TiledDot(const float* x, const WeightView& w, int64_t r0, float* y, int64_t ldy) {
  const int64_t cols = w.cols, pairs = cols / 2;
  // [pairs][32] dwords, these rows' at offset 0
  const uint32_t* rows =
      reinterpret_cast<const uint32_t*>(TilePairs(w, r0 / kBf16Tile, 0)) + r0 % kBf16Tile;
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  __m256 even[Q][NT], odd[Q][NT];
  for (int q = 0; q < Q; ++q)
    for (int t = 0; t < NT; ++t) even[q][t] = odd[q][t] = _mm256_setzero_ps();
  for (int64_t j = 0; j < pairs; ++j) {
    __m256 xe[NT], xo[NT];
    for (int t = 0; t < NT; ++t) {
      xe[t] = _mm256_set1_ps(x[t * cols + 2 * j]);
      xo[t] = _mm256_set1_ps(x[t * cols + 2 * j + 1]);
    }
    for (int q = 0; q < Q; ++q) {
      // 8 rows' (W[r, 2 j], W[r, 2 j + 1]): the low half is the even column's bf16
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows + j * kBf16Tile + q * kRows));
      const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
      const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(v, high));
      for (int t = 0; t < NT; ++t) {
        even[q][t] = _mm256_fmadd_ps(we, xe[t], even[q][t]);
        odd[q][t] = _mm256_fmadd_ps(wo, xo[t], odd[q][t]);
      }
    }
  }
  for (int q = 0; q < Q; ++q)
    for (int t = 0; t < NT; ++t)
      _mm256_storeu_ps(y + t * ldy + r0 + q * kRows, _mm256_add_ps(even[q][t], odd[q][t]));
}

}  // namespace

void MatMulPairTiledRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                         int64_t row_end, float* y) {
  const int64_t tiled = PairTiledRows(w), ldy = w.rows;
  // Rows outside whole half-tiles (a range that does not start or end on 16 rows, or rows past
  // the last tile): the reference, which reads either layout; the rest natively.
  const int64_t r0 = std::min((row_begin + kHalf - 1) / kHalf * kHalf, tiled);
  const int64_t r1 = std::max(r0, std::min(row_end, tiled) / kHalf * kHalf);
  if (row_begin < r0) scalar::MatMulRows(x, T, w, row_begin, std::min(r0, row_end), y);
  if (r1 < row_end) scalar::MatMulRows(x, T, w, std::max(r1, row_begin), row_end, y);
  if (T == 1) {
    // Whole tiles, and a lone half on either side.
    int64_t r = r0;
    if (r % kBf16Tile != 0 && r < r1) TiledDot<2, 1>(x, w, r, y, ldy), r += kHalf;
    for (; r + kBf16Tile <= r1; r += kBf16Tile) TiledDot<4, 1>(x, w, r, y, ldy);
    if (r < r1) TiledDot<2, 1>(x, w, r, y, ldy);
    return;
  }
  // Halves, two tokens at a time.
  for (int64_t r = r0; r < r1; r += kHalf) {
    int64_t t = 0;
    for (; t + 2 <= T; t += 2) TiledDot<2, 2>(x + t * w.cols, w, r, y + t * ldy, ldy);
    if (t < T) TiledDot<2, 1>(x + t * w.cols, w, r, y + t * ldy, ldy);
  }
}

}  // namespace dsv3::ops::avx2
