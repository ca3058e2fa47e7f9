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

// FP8 weight w's block scales for column block `block`, times `factor`, one per lane: scale_row's
// (the lanes' common row block's scales) broadcast, or where that is null each lane's gathered
// from its row block's first scale, w.scale[at[l]].
__m256 LaneScales(const WeightView& w, const float* scale_row, const int32_t* at, int64_t block,
                  float factor) {
  if (scale_row != nullptr) return _mm256_set1_ps(scale_row[block] * factor);
  const __m256i b = _mm256_set1_epi32(static_cast<int32_t>(block));
  const __m256i i = _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(at)), b);
  return _mm256_mul_ps(_mm256_i32gather_ps(w.scale, i, 4), _mm256_set1_ps(factor));
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
      const __m256 s = LaneScales(w, uniform ? scale_row : nullptr, at[v], block, 256.0f);
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

// FP8 decoded by shifts and masks, as avx512_fp8_lines.h's Fp8LineValues does 64 bytes at a time
// (there, with one ternary-logic op a vector; here two): 32 bytes of a tile line (16 rows' pairs)
// read as 8 dwords, dword k = rows 2 k and 2 k + 1's (even, odd) column bytes; byte position b of
// every dword becomes wq[b], f32 worth e4m3 * 2^-56 for every code with a nonzero exponent. Codes
// with a zero exponent (zeros, subnormals) come out as sign * 2^-63 (1 + m/8); kMend mends them to
// sign * m * 2^-65 (exact). No decoded value is an f32 subnormal. A throwaway loop over one
// core's L1, a 64-byte line and its 8 multiply-adds: 4.3-4.6 ns through Fp8ToF32x2 (vcvtph2ps
// bound), 2.6-3.0 this way (and-only values against x * 2^64, or byte shuffles in place of some
// shifts: no better).
constexpr float kFp8LineScale = 0x1p56f;  // what multiplies a block scale for line values
// Lines requested ahead of the one read, as the AVX-512 line kernel does: bench-medium FP8 tg64
// under DSV3_ISA=avx2, tokens alternating with and without in one process, either role: 0.7-2.5 %
// less time a token (4 runs).
constexpr int64_t kFp8AheadLines = 40;

template <bool kMend>
void Fp8LineValues(__m256i v, __m256 wq[4]) {
  const __m256i bits = _mm256_set1_epi32(static_cast<int>(0x87f00000u));
  const __m256i offset = _mm256_set1_epi32(0x20000000);  // exponent + 64
  const auto value = [&](__m256i a) {  // the sign (bit 31), bits 26..20 and the offset
    return _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(a, bits), offset));
  };
  // Each word's high byte arithmetic-shifted down by 4 within its word (avx512_fp8_lines.h).
  const __m256i odd = _mm256_srai_epi16(v, 4);                         // bytes 3, 1
  const __m256i even = _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 4);  // bytes 2, 0
  wq[0] = value(_mm256_slli_epi32(even, 16));
  wq[1] = value(_mm256_slli_epi32(odd, 16));
  wq[2] = value(even);
  wq[3] = value(odd);
  if constexpr (kMend) {
    const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
    const __m256i low = _mm256_castps_si256(_mm256_set1_ps(0x1p-62f));
    const __m256i exponent = _mm256_set1_epi32(0x07800000);
    for (int q = 0; q < 4; ++q) {
      const __m256i u = _mm256_castps_si256(wq[q]);
      const __m256i zero_exponent =
          _mm256_cmpeq_epi32(_mm256_and_si256(u, exponent), _mm256_setzero_si256());
      const __m256 c = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(u, sign), low));
      const __m256 mended = _mm256_fmsub_ps(wq[q], _mm256_set1_ps(2.0f), c);
      wq[q] = _mm256_blendv_ps(wq[q], mended, _mm256_castsi256_ps(zero_exponent));
    }
  }
}

// FP8 over H 16-row halves of one tile from r0 (a multiple of 16), by line values, for a weight
// with its zero-exponent line flags (ops/bf16_tiles.h; a model's tiles have them): y[t, r0 + l]
// for l < 16 H, t < NT. Lanes: wq[0] even rows' even columns, 1 even rows' odd columns, 2 odd
// rows' even columns, 3 odd rows' odd columns, each lane's partial sum per column block scaled by
// its row's block scale * 2^56 into its total; a row's even and odd column totals added at the
// end. Every product and partial sum is TiledDotFp8's times 2^-48: the same bits, unless a lane's
// product or running sum lies under 2^-70 in magnitude (then an f32 subnormal) or a block scale
// reaches 2^72. Lines are requested kFp8AheadLines on, into the next tile where it lies whole
// below ahead_end. One core, a 256x2048 GEMV in the L2: 3.8-3.9 ns a line through TiledDotFp8,
// 2.9 this way; bench-medium FP8 tg64 under DSV3_ISA=avx2, tokens alternating between both in one
// process, either role (busy host): -0.2 to 11 % less time a token (6 runs, median 2 %).
template <int H, int NT>
void TiledDotFp8Lines(const float* x, const WeightView& w, int64_t r0, int64_t ahead_end, float* y,
                      int64_t ldy) {
  const int64_t cols = w.cols, bc = w.block_cols, scale_cols = (cols + bc - 1) / bc;
  // [cols / 2][64] bytes, these rows' at offset 0
  const uint8_t* line = TilePairs(w, r0 / kBf16Tile, 0) + r0 % kBf16Tile * 2;
  // Bit j % 64 of flags[j / 64]: whether line j holds a zero-exponent code.
  const uint64_t* flags = w.fp8_line_flags + r0 / kBf16Tile * Fp8LineFlagWords(cols);
  const bool uniform = r0 / w.block_rows == (r0 + H * kHalf - 1) / w.block_rows;
  const float* scale_row = w.scale + r0 / w.block_rows * scale_cols;  // the first row's
  alignas(32) int32_t at[H][2][8];  // lane k's row block offset: rows 2 k (even), 2 k + 1 (odd)
  if (!uniform)
    for (int h = 0; h < H; ++h)
      for (int k = 0; k < 8; ++k)
        for (int o = 0; o < 2; ++o)
          at[h][o][k] =
              static_cast<int32_t>((r0 + h * kHalf + 2 * k + o) / w.block_rows * scale_cols);
  alignas(32) float total[NT][4 * H][8] = {};
  const int64_t pairs = cols / 2;
  const int64_t ahead_lines = r0 + H * kHalf + kBf16Tile <= ahead_end ? 2 * pairs : pairs;
  for (int64_t j = 0; j < std::min(kFp8AheadLines, pairs); ++j)
    _mm_prefetch(reinterpret_cast<const char*>(line + j * 64), _MM_HINT_T0);
  for (int64_t b0 = 0, block = 0; b0 < cols; b0 += bc, ++block) {  // block = b0 / bc
    const int64_t p1 = std::min(cols, b0 + bc) / 2;
    __m256 part[4 * H][NT];
    for (int q = 0; q < 4 * H; ++q)
      for (int t = 0; t < NT; ++t) part[q][t] = _mm256_setzero_ps();
    const auto step = [&](int64_t j, auto mend) {
      if (j + kFp8AheadLines < ahead_lines)
        _mm_prefetch(reinterpret_cast<const char*>(line + (j + kFp8AheadLines) * 64), _MM_HINT_T0);
      for (int h = 0; h < H; ++h) {
        __m256 wq[4];
        Fp8LineValues<decltype(mend)::value>(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(line + j * 64 + h * 32)), wq);
        for (int t = 0; t < NT; ++t) {
          const __m256 xe = _mm256_broadcast_ss(x + t * cols + 2 * j);
          const __m256 xo = _mm256_broadcast_ss(x + t * cols + 2 * j + 1);
          part[4 * h][t] = _mm256_fmadd_ps(wq[0], xe, part[4 * h][t]);
          part[4 * h + 1][t] = _mm256_fmadd_ps(wq[1], xo, part[4 * h + 1][t]);
          part[4 * h + 2][t] = _mm256_fmadd_ps(wq[2], xe, part[4 * h + 2][t]);
          part[4 * h + 3][t] = _mm256_fmadd_ps(wq[3], xo, part[4 * h + 3][t]);
        }
      }
    };
    for (int64_t j = b0 / 2; j < p1; ++j) {
      // Lines with no zero-exponent code, until one has (a branch inside the step's loop made
      // GCC keep the sums in memory on AVX-512).
      for (; j < p1 && (flags[j / 64] >> (j % 64) & 1) == 0; ++j) step(j, std::false_type{});
      if (j < p1) step(j, std::true_type{});
    }
    for (int q = 0; q < 4 * H; ++q) {
      const __m256 s =
          LaneScales(w, uniform ? scale_row : nullptr, at[q / 4][q % 4 / 2], block, kFp8LineScale);
      for (int t = 0; t < NT; ++t)
        _mm256_store_ps(total[t][q], _mm256_fmadd_ps(part[q][t], s, _mm256_load_ps(total[t][q])));
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int h = 0; h < H; ++h) {
      // rows 2 k (lane k) and 2 k + 1 interleaved: rows 0-7, then 8-15 of the half
      const __m256 even =
          _mm256_add_ps(_mm256_load_ps(total[t][4 * h]), _mm256_load_ps(total[t][4 * h + 1]));
      const __m256 odd =
          _mm256_add_ps(_mm256_load_ps(total[t][4 * h + 2]), _mm256_load_ps(total[t][4 * h + 3]));
      const __m256 lo = _mm256_unpacklo_ps(even, odd), hi = _mm256_unpackhi_ps(even, odd);
      float* out = y + t * ldy + r0 + h * kHalf;
      _mm256_storeu_ps(out, _mm256_permute2f128_ps(lo, hi, 0x20));
      _mm256_storeu_ps(out + kRows, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
}

// Q 8-row groups from r0 for NT tokens, the dtype's form.
template <int Q, int NT>
void TiledDotAny(const float* x, const WeightView& w, int64_t r0, int64_t ahead_end, float* y,
                 int64_t ldy) {
  if (w.dtype == DType::kF8E4M3 && w.fp8_line_flags != nullptr)
    TiledDotFp8Lines<Q / 2, NT>(x, w, r0, ahead_end, y, ldy);
  else if (w.dtype == DType::kF8E4M3)
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
    if (r % kBf16Tile != 0 && r < r1) TiledDotAny<2, 1>(x, w, r, r1, y, ldy), r += kHalf;
    for (; r + kBf16Tile <= r1; r += kBf16Tile) TiledDotAny<4, 1>(x, w, r, r1, y, ldy);
    if (r < r1) TiledDotAny<2, 1>(x, w, r, r1, y, ldy);
    return;
  }
  // Halves, two tokens at a time.
  for (int64_t r = r0; r < r1; r += kHalf) {
    int64_t t = 0;
    for (; t + 2 <= T; t += 2) TiledDotAny<2, 2>(x + t * w.cols, w, r, r + kHalf, y + t * ldy, ldy);
    if (t < T) TiledDotAny<2, 1>(x + t * w.cols, w, r, r + kHalf, y + t * ldy, ldy);
  }
}

}  // namespace dsv3::ops::avx2
