// The exact (f32) product on BF16 and FP8 weights in 32-row pair tiles (ops/bf16_tiles.h), for
// any T: decode and the few-token products of a model tiled for the bf16-dot path.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "ops/bf16_tiles.h"
#include "ops/isa/avx512_fp8_f16.h"
#include "ops/isa/avx512_fp8_lines.h"
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
// Decode takes whole tiles (H = 2): the tile's bytes front to back, one stream, and no software
// requests; the hardware prefetchers follow that stream best. Against two tiles at a time (two
// streams) with each line 20 pair steps on requested, and the next call's first lines too, as
// before (bench-medium BF16 tg64, tokens alternating in one process, either role): one tile with
// the requests 5.5-6.3 % less time a token (2 runs); one tile without them a further 1.3-11 %
// (4 runs; the most on a quiet host); two tiles without requests took 0.7-5 % more than one.
template <int H, int NT>
void TiledDot(const float* x, const WeightView& w, int64_t r0, float* y, int64_t ldy) {
  const int64_t cols = w.cols, pairs = cols / 2;
  const uint32_t* half[H];  // [pairs][32] dwords, this half's 16 at offset 0
  for (int h = 0; h < H; ++h) {
    const int64_t r = r0 + h * kHalf;
    half[h] = reinterpret_cast<const uint32_t*>(TilePairs(w, r / kBf16Tile, 0)) + r % kBf16Tile;
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

// FP8 (e4m3 bits shifted into f16s read as e4m3 * 2^-8, vcvtph2ps; the 2^8 folded into the block
// scale, as avx512_matmul.cpp's dot form does): y[t, r0 + i] for i < 16, t < NT, one 16-row half
// of a tile. Its rows' pairs convert to two vectors of 8 rows' (even, odd) lanes, multiplied by
// each token's x pair broadcast; per column block each lane's partial sum is scaled by its row's
// block scale and added to the lane's total; a row's even and odd lanes are added at the end. A
// row's result never depends on NT or the other rows and tokens. Whole tiles take
// TiledDotFp8Lines (below, the same bits but at the edges it names); this form is left the lone
// halves of a range that starts or ends inside a tile. Each line kFp8AheadLines on is requested
// per pair step: matmul_bench BM_Bf16Tiles, 32000x2048 (65 MB, from DRAM) 1.15 of the row-major
// kernel's prefetched rows' time without, 0.94 with 40 lines (16: 1.01, 80: 1.02).
constexpr int64_t kFp8AheadLines = 40;

template <int NT>
void TiledDotFp8Half(const float* x, const WeightView& w, int64_t r0, float* y, int64_t ldy) {
  const int64_t cols = w.cols, bc = w.block_cols, scale_cols = (cols + bc - 1) / bc;
  // [pairs][32] byte pairs, this half's 16 at offset 0
  const uint8_t* half = TilePairs(w, r0 / kBf16Tile, 0) + r0 % kBf16Tile * 2;
  __m512 lo[NT], hi[NT];  // rows 0-7, 8-15 of the half: lanes (2 i, 2 i + 1) = row i's pair
  for (int t = 0; t < NT; ++t) lo[t] = hi[t] = _mm512_setzero_ps();
  // Each lane's row block's first scale: one broadcast where the half's 16 rows share a row
  // block (block_rows a multiple of 16), else gathered per column block.
  const bool uniform = r0 / w.block_rows == (r0 + kHalf - 1) / w.block_rows;
  const float* scale_row = w.scale + r0 / w.block_rows * scale_cols;  // the first row's
  __m512i at_lo = _mm512_setzero_si512(), at_hi = _mm512_setzero_si512();
  if (!uniform) {  // (divisions per call cost a MoE decode's 64-row chunks dearly)
    alignas(64) int32_t at[32];
    for (int64_t l = 0; l < 32; ++l)
      at[l] = static_cast<int32_t>((r0 + l / 2) / w.block_rows * scale_cols);
    at_lo = _mm512_load_si512(at);
    at_hi = _mm512_load_si512(at + 16);
  }
  const int64_t pairs = cols / 2;
  // The first kFp8AheadLines lines requested up front, as TiledDot does (bench-medium FP8 tg64,
  // tokens alternating: 4.2-5.7 % less time in 3 of 3).
  for (int64_t j = 0; j < std::min(kFp8AheadLines, pairs); ++j)
    _mm_prefetch(reinterpret_cast<const char*>(half + j * 64), _MM_HINT_T0);
  for (int64_t b0 = 0, block = 0; b0 < cols; b0 += bc, ++block) {  // block = b0 / bc
    const int64_t p1 = std::min(cols, b0 + bc) / 2;
    __m512 part_lo[NT], part_hi[NT];
    for (int t = 0; t < NT; ++t) part_lo[t] = part_hi[t] = _mm512_setzero_ps();
    for (int64_t j = b0 / 2; j < p1; ++j) {
      __m512 xp[NT];  // (x[t, 2 j], x[t, 2 j + 1]) in every lane pair
      for (int t = 0; t < NT; ++t) {
        double pair;
        std::memcpy(&pair, x + t * cols + 2 * j, sizeof(pair));
        xp[t] = _mm512_castpd_ps(_mm512_set1_pd(pair));
      }
      if (j + kFp8AheadLines < pairs)
        _mm_prefetch(reinterpret_cast<const char*>(half + (j + kFp8AheadLines) * 64), _MM_HINT_T0);
      __m512 wl, wh;
      Fp8ToF32x2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + j * 64)), &wl, &wh);
      for (int t = 0; t < NT; ++t) {
        part_lo[t] = _mm512_fmadd_ps(wl, xp[t], part_lo[t]);
        part_hi[t] = _mm512_fmadd_ps(wh, xp[t], part_hi[t]);
      }
    }
    __m512 s_lo, s_hi;  // each lane's row scale * 2^8
    if (uniform) {
      s_lo = s_hi = _mm512_set1_ps(scale_row[block] * 256.0f);
    } else {
      const __m512 rescale = _mm512_set1_ps(256.0f);
      const __m512i b = _mm512_set1_epi32(static_cast<int32_t>(block));
      s_lo = _mm512_mul_ps(_mm512_i32gather_ps(_mm512_add_epi32(at_lo, b), w.scale, 4), rescale);
      s_hi = _mm512_mul_ps(_mm512_i32gather_ps(_mm512_add_epi32(at_hi, b), w.scale, 4), rescale);
    }
    for (int t = 0; t < NT; ++t) {
      lo[t] = _mm512_fmadd_ps(part_lo[t], s_lo, lo[t]);
      hi[t] = _mm512_fmadd_ps(part_hi[t], s_hi, hi[t]);
    }
  }
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int t = 0; t < NT; ++t)
    _mm512_storeu_ps(y + t * ldy + r0, _mm512_add_ps(_mm512_permutex2var_ps(lo[t], evens, hi[t]),
                                                     _mm512_permutex2var_ps(lo[t], odds, hi[t])));
}

// FP8 over one whole tile (r0 a multiple of 32), the form decode takes: y[t, r0 + l] for l < 32,
// t < NT (one stream: TiledDotRows). A pair step's 64-byte line (the tile's 32 rows' byte
// pairs) is read as 16 dwords, dword k = rows 2k and 2k + 1's (even, odd) column bytes, and decoded
// by Fp8LineValues (ops/isa/avx512_fp8_lines.h) into 4 vectors, one per byte position, of values
// worth e4m3 * 2^-56; the block scale is multiplied by 2^56, so every product and partial sum is
// the f16 form's (TiledDotFp8Half) times 2^-48: the same bits, unless a lane's product or running
// partial sum of e4m3 * x lies under 2^-70 in magnitude (then an f32 subnormal, where the f16
// form's threshold was 2^-118: activations under about 2^-60) or a block scale reaches 2^72 (then
// infinite). Lanes: q = 0 even rows' even columns, 1 even rows' odd columns, 2 odd rows' even
// columns, 3 odd rows' odd columns; a row's even and odd column totals are added at the end, as in
// TiledDotFp8Half. Lines with a zero-exponent code are decoded with the mending off the fast loop
// (a branch inside it made GCC keep the sums in memory). Decode's FP8 products had been bound by
// the conversion, not by DRAM: in one core's L1 the f16 form took 0.92 ns per 32 bytes (34 GB/s),
// this one 0.63 (1.01 with a zero code every 500 bytes, a quarter of the pair steps mended;
// e4m3-quantized normal weights hold a zero or subnormal code in a few per cent of lines).
// matmul_bench BM_Bf16Tiles/dtype:3 T=1, 2 threads (host busy): 512x2048 19.6
// -> 13.7-18.0 us, 2048x2048 70.3 -> 49.6-62.2 us (32000x2048, 65 MB from DRAM: 1197 -> 1126-1234
// us, level). bench-medium FP8 tg64, tokens alternating with the f16 form in one process: 6.9-7.7 %
// less time a token.
// kFlags: the lines to mend are read from w.fp8_line_flags (made when the weight was tiled), not
// found by a test of each line (a vptestnmb, which shares the two multiply-add pipes, 1 of the
// line's 14 vector operations). bench-medium FP8 tg64, tokens alternating between both in one
// process, either role: quiet host (65-75 tok/s) 3.2-4.7 % less time a token in 6 of 7 runs (0.4
// in one), busy host (47-54, DRAM-bound) level (-1.6 to +1.3 %, 9 runs).
template <int NT, bool kFlags>
void TiledDotFp8Lines(const float* x, const WeightView& w, int64_t r0, int64_t ahead_end, float* y,
                      int64_t ldy) {
  const int64_t cols = w.cols, bc = w.block_cols, scale_cols = (cols + bc - 1) / bc;
  const int64_t pairs = cols / 2;
  const uint8_t* line = TilePairs(w, r0 / kBf16Tile, 0);  // [pairs][64] bytes
  // kFlags: bit j % 64 of flags[j / 64] says whether line j holds a zero-exponent code.
  const uint64_t* flags =
      kFlags ? w.fp8_line_flags + r0 / kBf16Tile * Fp8LineFlagWords(cols) : nullptr;
  // Lines the stream requests: its own, then, where the next tile (the next call's) lies whole
  // below ahead_end, that tile's first ones (tiles are pairs * 64 bytes, back to back), so the
  // next call does not start on lines not yet requested. 2 threads, T = 1, 100 copies from DRAM
  // (busy host), old / new us a call: 2048x512 41.5 / 36.2, 40.2 / 33.3; 3072x768 85.1 / 73.3,
  // 79.7 / 73.4; 512x2048 31.1 / 28.4, 32.2 / 32.9. bench-medium FP8 tg64, tokens alternating in
  // one process, either role: 3.0-6.2 % less time a token (4 runs).
  const int64_t ahead_lines = r0 + 2 * kBf16Tile <= ahead_end ? 2 * pairs : pairs;
  // The tile's row block scales: one broadcast where its 32 rows share a row block, else
  // gathered per column block for the even and the odd rows' lanes.
  const int64_t block_row = r0 / w.block_rows;  // one division a tile (decode calls are short)
  const bool uniform = r0 - block_row * w.block_rows + kBf16Tile <= w.block_rows;
  const float* scale_row = w.scale + block_row * scale_cols;
  __m512i at_even = _mm512_setzero_si512(), at_odd = _mm512_setzero_si512();
  if (!uniform) {
    alignas(64) int32_t at[32];
    for (int64_t k = 0; k < 16; ++k) {
      at[k] = static_cast<int32_t>((r0 + 2 * k) / w.block_rows * scale_cols);
      at[16 + k] = static_cast<int32_t>((r0 + 2 * k + 1) / w.block_rows * scale_cols);
    }
    at_even = _mm512_load_si512(at);
    at_odd = _mm512_load_si512(at + 16);
  }
  __m512 total[4][NT];
  for (int q = 0; q < 4; ++q)
    for (int t = 0; t < NT; ++t) total[q][t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < std::min(kFp8AheadLines, pairs); ++j)
    _mm_prefetch(reinterpret_cast<const char*>(line + j * 64), _MM_HINT_T0);
  for (int64_t b0 = 0, block = 0; b0 < cols; b0 += bc, ++block) {  // block = b0 / bc
    const int64_t p1 = std::min(cols, b0 + bc) / 2;
    __m512 part[4][NT];
    for (int q = 0; q < 4; ++q)
      for (int t = 0; t < NT; ++t) part[q][t] = _mm512_setzero_ps();
    // Pair step j's line v into the partial sums, x[t, 2 j] and x[t, 2 j + 1] broadcast inside
    // the multiply-adds (FmaBroadcast): the line's 14 vector operations (9 decoding, a test, 4
    // multiply-adds) leave no pipe slot spare for separate broadcasts. matmul_bench
    // BM_Bf16Tiles/dtype:3, 2 threads, old / new us (two runs each): 2048x2048 T=1 (from the L3)
    // 256, 243 / 228, 225; 512x2048 T=4 176, 149 / 150, 133; 32000x2048 T=1 (from DRAM) 5940, 5692
    // / 5553, 4703; the 30-70 us shapes level. A throwaway loop over one core's L1: 2.56-2.63
    // -> 2.23-2.32 ns a line. bench-medium FP8 tg64 on a busy host (DRAM-bound), tokens alternating
    // in one process: level (-1.0 to +2.1 %, 6 runs). (BF16's TiledDot, whose broadcasts each feed
    // two halves, was slower so at T = 4: 108-110 -> 157-165 us.)
    const auto step = [&](int64_t j, __m512i v, auto mend) {
      __m512 wq[4];
      Fp8LineValues<decltype(mend)::value>(v, wq);
      for (int t = 0; t < NT; ++t) {
        const float* xt = x + t * cols + 2 * j;  // x[t, 2 j], x[t, 2 j + 1]
        part[0][t] = FmaBroadcast(wq[0], xt, part[0][t]);
        part[1][t] = FmaBroadcast(wq[1], xt + 1, part[1][t]);
        part[2][t] = FmaBroadcast(wq[2], xt, part[2][t]);
        part[3][t] = FmaBroadcast(wq[3], xt + 1, part[3][t]);
      }
    };
    for (int64_t j = b0 / 2; j < p1; ++j) {
      __m512i v = _mm512_setzero_si512();
      // Lines with no zero-exponent code, until one has.
      for (; j < p1; ++j) {
        const int64_t ahead = j + kFp8AheadLines;
        if (ahead < ahead_lines)
          _mm_prefetch(reinterpret_cast<const char*>(line + ahead * 64), _MM_HINT_T0);
        v = _mm512_loadu_si512(line + j * 64);
        if (kFlags ? (flags[j / 64] >> (j % 64) & 1) != 0 : LineHasZeroExponent(v)) break;
        step(j, v, std::false_type{});
      }
      if (j < p1) step(j, v, std::true_type{});
    }
    __m512 s_even, s_odd;  // each lane's row scale * 2^56
    if (uniform) {
      s_even = s_odd = _mm512_set1_ps(scale_row[block] * kFp8LineScale);
    } else {
      const __m512 rescale = _mm512_set1_ps(kFp8LineScale);
      const __m512i b = _mm512_set1_epi32(static_cast<int32_t>(block));
      s_even =
          _mm512_mul_ps(_mm512_i32gather_ps(_mm512_add_epi32(at_even, b), w.scale, 4), rescale);
      s_odd = _mm512_mul_ps(_mm512_i32gather_ps(_mm512_add_epi32(at_odd, b), w.scale, 4), rescale);
    }
    for (int t = 0; t < NT; ++t) {
      total[0][t] = _mm512_fmadd_ps(part[0][t], s_even, total[0][t]);
      total[1][t] = _mm512_fmadd_ps(part[1][t], s_even, total[1][t]);
      total[2][t] = _mm512_fmadd_ps(part[2][t], s_odd, total[2][t]);
      total[3][t] = _mm512_fmadd_ps(part[3][t], s_odd, total[3][t]);
    }
  }
  // Rows 2k (lane k of even) and 2k + 1 (lane k of odd) interleaved: rows 0-15, then 16-31.
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second =
      _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int t = 0; t < NT; ++t) {
    const __m512 even = _mm512_add_ps(total[0][t], total[1][t]);
    const __m512 odd = _mm512_add_ps(total[2][t], total[3][t]);
    float* out = y + t * ldy + r0;
    _mm512_storeu_ps(out, _mm512_permutex2var_ps(even, first, odd));
    _mm512_storeu_ps(out + kHalf, _mm512_permutex2var_ps(even, second, odd));
  }
}

// Up to 3 tokens from t0 on, over the half-tiles [r0, r1) (multiples of 16): BF16 a whole tile
// at a time (4 accumulator chains a token), FP8 as TiledDotFp8Lines says.
template <int NT>
void TiledDotRows(const float* x, const WeightView& w, int64_t r0, int64_t r1, float* y) {
  const int64_t ldy = w.rows;
  if (w.dtype == DType::kF8E4M3) {
    // Whole tiles by lines, one at a time (one stream, as BF16's TiledDot), a lone half on either
    // side by halves. Against two tiles at a time (bench-medium FP8 tg64, tokens alternating in
    // one process, either role): 1.1-3.6 % less time a token (4 runs); without the requests,
    // one tile took 0-1.6 % more time than with them, two tiles 10 % more.
    int64_t r = r0;
    if (r % kBf16Tile != 0 && r < r1) TiledDotFp8Half<NT>(x, w, r, y, ldy), r += kHalf;
    for (; r + kBf16Tile <= r1; r += kBf16Tile) {
      if (w.fp8_line_flags != nullptr)
        TiledDotFp8Lines<NT, true>(x, w, r, r1, y, ldy);
      else
        TiledDotFp8Lines<NT, false>(x, w, r, r1, y, ldy);
    }
    if (r < r1) TiledDotFp8Half<NT>(x, w, r, y, ldy);
    return;
  }
  int64_t r = r0;
  for (; r + 2 * kHalf <= r1; r += 2 * kHalf) TiledDot<2, NT>(x, w, r, y, ldy);
  for (; r < r1; r += kHalf) TiledDot<1, NT>(x, w, r, y, ldy);
}

}  // namespace

void MatMulPairTiledRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                         int64_t row_end, float* y) {
  const int64_t tiled = PairTiledRows(w);
  // Rows outside whole half-tiles (a range that does not start or end on 16 rows, or rows past
  // the last tile): the reference, which reads either layout; the rest natively.
  // (Rows past the last tile exist only where rows % 32 != 0, no real model's shape.)
  const int64_t r0 = std::min((row_begin + kHalf - 1) / kHalf * kHalf, tiled);
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
