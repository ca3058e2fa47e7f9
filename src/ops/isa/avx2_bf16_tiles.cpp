// AVX2 reads BF16 and FP8 pair tiles (ops/bf16_tiles.h) natively, as the AVX-512 exact kernels do
// (avx512_bf16_tiles.cpp): decode and the few-token products take the dot forms below, over a
// tile's bytes front to back (one stream: AVX2's row-major dot forms read 4-6 rows a row length
// apart), and prefill's packed form takes 8 rows' column pair in one load (avx2_matmul.cpp,
// PackWeights).
#include "ops/isa/simd_intrinsics.h"

#include <algorithm>
#include <cstring>

#include "ops/bf16_tiles.h"
#include "ops/isa/avx2_fp8_f16.h"
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

// FP8 (e4m3 bits shifted into f16s read as e4m3 * 2^-8, Fp8ToF32x2; the 2^8 folded into the block
// scale, as the row-major dot form does): y[t, r0 + 8 q + i] for q < Q, i < 8, t < NT, the rows
// within one tile. A pair step's 16 bytes of 8 rows (row i's even and odd column at bytes 2 i,
// 2 i + 1) convert to two vectors, rows 0-3 and 4-7, lanes (2 i, 2 i + 1) = row i's pair, each
// multiplied by the token's x pair (x[t, 2 j], x[t, 2 j + 1] in every lane pair). Per column block
// each lane's partial sum is scaled by its row's block scale and added to the lane's total (kept
// in memory: updated once a block, so the partial sums keep the registers); a row's even and odd
// lanes are added at the end. A row's result never depends on Q, NT or the other rows and tokens.
//   x: [NT, cols]   y: [NT, ldy]
template <int Q, int NT>
void TiledDotFp8(const float* x, const WeightView& w, int64_t r0, float* y, int64_t ldy) {
  constexpr int V = 2 * Q;  // vectors of 4 rows' pairs
  const int64_t cols = w.cols, bc = w.block_cols, scale_cols = (cols + bc - 1) / bc;
  // [cols / 2][64] bytes, these rows' at offset 0
  const uint8_t* rows = TilePairs(w, r0 / kBf16Tile, 0) + r0 % kBf16Tile * 2;
  // Each lane's row block's first scale: one broadcast where the rows share a row block
  // (block_rows a multiple of 32 in every checkpoint), else gathered per column block.
  const bool uniform = r0 / w.block_rows == (r0 + Q * kRows - 1) / w.block_rows;
  const float* scale_row = w.scale + r0 / w.block_rows * scale_cols;  // the first row's
  alignas(32) int32_t at[V][8];
  if (!uniform)
    for (int v = 0; v < V; ++v)
      for (int l = 0; l < 8; ++l)
        at[v][l] = static_cast<int32_t>((r0 + 4 * v + l / 2) / w.block_rows * scale_cols);
  alignas(32) float total[NT][V][8] = {};
  for (int64_t b0 = 0, block = 0; b0 < cols; b0 += bc, ++block) {  // block = b0 / bc
    const int64_t p1 = std::min(cols, b0 + bc) / 2;
    __m256 part[V][NT];
    for (int v = 0; v < V; ++v)
      for (int t = 0; t < NT; ++t) part[v][t] = _mm256_setzero_ps();
    for (int64_t j = b0 / 2; j < p1; ++j) {
      __m256 xp[NT];  // (x[t, 2 j], x[t, 2 j + 1]) in every lane pair
      for (int t = 0; t < NT; ++t) {
        double pair;
        std::memcpy(&pair, x + t * cols + 2 * j, sizeof(pair));
        xp[t] = _mm256_castpd_ps(_mm256_set1_pd(pair));
      }
      for (int q = 0; q < Q; ++q) {
        __m256 lo, hi;
        Fp8ToF32x2(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows + j * 64 + q * 16)), &lo,
                   &hi);
        for (int t = 0; t < NT; ++t) {
          part[2 * q][t] = _mm256_fmadd_ps(lo, xp[t], part[2 * q][t]);
          part[2 * q + 1][t] = _mm256_fmadd_ps(hi, xp[t], part[2 * q + 1][t]);
        }
      }
    }
    for (int v = 0; v < V; ++v) {
      __m256 s;  // each lane's row scale * 2^8
      if (uniform) {
        s = _mm256_set1_ps(scale_row[block] * 256.0f);
      } else {
        const __m256i b = _mm256_set1_epi32(static_cast<int32_t>(block));
        const __m256i i = _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<__m256i*>(at[v])), b);
        s = _mm256_mul_ps(_mm256_i32gather_ps(w.scale, i, 4), _mm256_set1_ps(256.0f));
      }
      for (int t = 0; t < NT; ++t)
        _mm256_store_ps(total[t][v], _mm256_fmadd_ps(part[v][t], s, _mm256_load_ps(total[t][v])));
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int q = 0; q < Q; ++q) {
      // (even + odd) of rows 0, 1, 4, 5, 2, 3, 6, 7, then in row order
      const __m256 sums =
          _mm256_hadd_ps(_mm256_load_ps(total[t][2 * q]), _mm256_load_ps(total[t][2 * q + 1]));
      const __m256d ordered =
          _mm256_permute4x64_pd(_mm256_castps_pd(sums), _MM_SHUFFLE(3, 1, 2, 0));
      _mm256_storeu_ps(y + t * ldy + r0 + q * kRows, _mm256_castpd_ps(ordered));
    }
}

// Q 8-row groups from r0 for NT tokens, the dtype's form.
template <int Q, int NT>
void TiledDotAny(const float* x, const WeightView& w, int64_t r0, float* y, int64_t ldy) {
  if (w.dtype == DType::kF8E4M3)
    TiledDotFp8<Q, NT>(x, w, r0, y, ldy);
  else
    TiledDot<Q, NT>(x, w, r0, y, ldy);
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
    if (r % kBf16Tile != 0 && r < r1) TiledDotAny<2, 1>(x, w, r, y, ldy), r += kHalf;
    for (; r + kBf16Tile <= r1; r += kBf16Tile) TiledDotAny<4, 1>(x, w, r, y, ldy);
    if (r < r1) TiledDotAny<2, 1>(x, w, r, y, ldy);
    return;
  }
  // Halves, two tokens at a time.
  for (int64_t r = r0; r < r1; r += kHalf) {
    int64_t t = 0;
    for (; t + 2 <= T; t += 2) TiledDotAny<2, 2>(x + t * w.cols, w, r, y + t * ldy, ldy);
    if (t < T) TiledDotAny<2, 1>(x + t * w.cols, w, r, y + t * ldy, ldy);
  }
}

}  // namespace dsv3::ops::avx2
