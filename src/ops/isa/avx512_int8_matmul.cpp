// AVX-512 VNNI int8-activation MatMul for q8_0 (kI8) and q4_0 (kU8) weights (ops/int8_dot.h for
// the arithmetic, which every kernel here reproduces bit for bit).
//
// vpdpbusd multiplies unsigned bytes by signed bytes. In the GEMV x keeps its signed codes and the
// weights are made unsigned: q8_0 codes + 128 (an xor with 0x80), q4_0 nibbles as stored (code +
// 8). The dot then owes offset * sum(q_x) per block (offset 128 or 8), which the quantizer stores
// next to x as a negative "bias" that starts each block's int32 accumulator. The prefill tiles do
// the same (q8_0 tiles read in place xor each broadcast dword). All of it is exact integer math.
//
// Two kernel shapes:
//  - GEMV (the tokens PrefillTokens leaves to it): 8 rows in the lanes (16 for tiled rows, below).
//    Per pair of blocks, each row's 64 weight bytes meet the token's 64 x codes in one zmm
//    vpdpbusd (16 partial sums), and a transposing reduction turns the 8 rows' partials into the
//    8 rows' exact dots of both blocks. Weights stream once per run of up to 4 tokens (8 for
//    tiled rows); decode is bandwidth-bound, so the shuffles are free.
//  - Packed prefill tiles (the first PrefillTokens(T, w) tokens): 16 tokens in the lanes of a
//    zmm. x is quantized into tiles of 16 tokens whose 4-byte column groups are interleaved
//    ([step][token][4 bytes]), so a broadcast dword of weights times one x vector feeds 16
//    tokens' block dots at once.
//    Tiled rows are read in place (q4_0 unpacked first when many token tiles reuse them); other
//    rows are first unpacked into a panel of 8 rows (L1/L2) reused by every token tile; micro-tiles
//    of 4 rows x 32 tokens (8 rows x 16 for a lone tile) keep 8 accumulator chains (q4_0 nibbles
//    in place 16: low and high apart): per block 8 vpdpbusd per chain, then 3 other vector ops
//    (cvt, vscalefps by log2 d_x, fma with d_w: ops/int8_dot.h).
#include <algorithm>
#include <cstring>

#include "ops/isa/avx512_int8_blocks.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/isa/transpose8x8.h"
#include "ops/kernels_internal.h"
#include "ops/row_tiles.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int kGemvRows = 8;
constexpr int kGemvTokens = 4;
// The row-major GEMV prefetches this far ahead (whole row tiles, at least one): a DRAM latency's
// worth of one core's bandwidth with margin. One tile was too close for short rows (a 512-column
// q4_0 tile is 2 KB): matmul_bench 131072x512 T=1, mean of 6 interleaved runs, q4_0 1 thread 21.4
// -> 26.0, q8_0 2 threads 63.3 -> 79.8 GB/s; 16 KB was no better than 8. Into the L2 only: an
// 8-row tile of 2048 q8_0 columns is 16 KB, half the L1, and requested into the L1 the lines
// evicted others before their use. matmul_bench BM_MatMul (row-major) T=1, 2 runs each: 12288x7168
// 2 threads q8_0 26-29 -> 36-45 GB/s, q4_0 28 -> 35-47; 131072x512 1 thread q8_0 9.5 -> 19-21,
// q4_0 11-12 -> 21-22; bench-medium `--load mmap` (no tiling) tg32, tokens alternating in one
// process (4 runs): q8_0 20-26 % less time a token, q4_0 22-34 %.
constexpr int64_t kGemvAheadBytes = 8192;
// The q4_0 GEMV tiles request their own lines this far ahead (below, GemvTile16).
constexpr int64_t kQ4TileAheadBytes = 2048;

// GEMV layout: codes [T, groups * 32] (block order of the weights), log2 d [T, groups] (d a power
// of two; vscalefps scales by it), bias [T, groups] = -offset * sum.
template <DType D>
void QuantizeRowsLayout(const ActSource& a, int64_t T, int64_t cols, uint8_t* buf) {
  const int64_t groups = QuantGroups(cols, kBlock);
  float* log2_d = reinterpret_cast<float*>(buf + T * groups * kBlock);
  int32_t* bias = reinterpret_cast<int32_t*>(log2_d + T * groups);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < groups; ++b) {
      const QuantizedBlock q = ActBlock(a, t, b, cols);
      const __m256i codes = D == DType::kU8 ? ToNibbleOrder(q.codes) : q.codes;
      _mm256_store_si256(reinterpret_cast<__m256i*>(buf + (t * groups + b) * kBlock), codes);
      log2_d[t * groups + b] = ScaleExponent(q.d);
      bias[t * groups + b] = -kWeightOffset<D> * q.sum;
    }
  }
}

// ---- GEMV: 8 rows in the lanes ----

// out[i] = sum of the 8 lanes of v[i].
__m256i SumLanes8(const __m256i v[8]) {
  const __m256i a0 = _mm256_hadd_epi32(v[0], v[1]);
  const __m256i a1 = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i a2 = _mm256_hadd_epi32(v[4], v[5]);
  const __m256i a3 = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i b0 = _mm256_hadd_epi32(a0, a1);  // [v0..v3 lanes 0-3 | v0..v3 lanes 4-7]
  const __m256i b1 = _mm256_hadd_epi32(a2, a3);  // the same for v4..v7
  return _mm256_add_epi32(_mm256_permute2x128_si256(b0, b1, 0x20),
                          _mm256_permute2x128_si256(b0, b1, 0x31));
}

// Two full blocks b, b + 1 of a row in one zmm, as LoadWeightBlock gives each in a ymm.
template <DType D>
__m512i LoadWeightPair(const uint8_t* row, int64_t b) {
  if constexpr (D == DType::kI8) {
    return _mm512_xor_si512(_mm512_loadu_si512(row + b * kBlock),
                            _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    // 128-bit lanes: block b's 16 bytes twice, then block b + 1's twice; the second copy of each
    // shifted right by 4 for the high nibbles.
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * (kBlock / 2)));
    const __m512i z = _mm512_castsi256_si512(v);
    const __m512i lanes = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(1, 1, 0, 0));
    const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0, 4, 4, 4, 4);
    return _mm512_and_si512(_mm512_srlv_epi32(lanes, shift), _mm512_set1_epi8(0x0f));
  }
}

// p[i]: 16 partial sums of row i, lanes 0-7 block b, 8-15 block b + 1. Returns lanes 0-7 = the
// 8 rows' dots of block b, lanes 8-15 those of block b + 1 (exact: integer adds).
__m512i SumLanes8x2(const __m512i p[8]) {
  __m512i a[4];  // a[k], 128-bit lane L: p[2k] and p[2k + 1] folded to 2 sums each
  for (int k = 0; k < 4; ++k) {
    a[k] = _mm512_add_epi32(_mm512_unpacklo_epi32(p[2 * k], p[2 * k + 1]),
                            _mm512_unpackhi_epi32(p[2 * k], p[2 * k + 1]));
  }
  // c0, lane L: the sums of p[0..3] over the 4 dwords of lane L; c1 the same for p[4..7].
  const __m512i c0 =
      _mm512_add_epi32(_mm512_unpacklo_epi64(a[0], a[1]), _mm512_unpackhi_epi64(a[0], a[1]));
  const __m512i c1 =
      _mm512_add_epi32(_mm512_unpacklo_epi64(a[2], a[3]), _mm512_unpackhi_epi64(a[2], a[3]));
  // Lanes 0, 1 hold block b, lanes 2, 3 block b + 1.
  const __m512i g = _mm512_add_epi32(_mm512_shuffle_i32x4(c0, c1, _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_i32x4(c0, c1, _MM_SHUFFLE(3, 1, 3, 1)));
  // g: [rows 0-3 of b, rows 0-3 of b + 1, rows 4-7 of b, rows 4-7 of b + 1]
  return _mm512_shuffle_i32x4(g, g, _MM_SHUFFLE(3, 1, 2, 0));
}

struct RowsActs {
  const uint8_t* codes;  // [T, groups * 32]
  const float* log2_d;   // [T, groups]: log2 of each block's d_x
  const int32_t* bias;   // [T, groups]
  int64_t groups;
};

RowsActs ViewRowsLayout(const uint8_t* buf, int64_t T, int64_t groups) {
  const float* log2_d = reinterpret_cast<const float*>(buf + T * groups * kBlock);
  return {buf, log2_d, reinterpret_cast<const int32_t*>(log2_d + T * groups), groups};
}

// y[t0 + t, r0 + i] for t < NT, i < 8, r0 + i < row_end (rows past row_end repeat the last row
// and are not stored).
template <DType D, int NT>
void GemvTile(const RowsActs& a, int64_t t0, const WeightView& w, int64_t r0, int64_t row_end,
              float* y) {
  const int64_t groups = a.groups;
  const int64_t full_groups = w.cols / kBlock;
  const uint8_t* wrow[kGemvRows];
  const float* srow[kGemvRows];
  alignas(64) int64_t scale_offset[kGemvRows];
  for (int i = 0; i < kGemvRows; ++i) {
    const int64_t r = std::min(r0 + i, row_end - 1);
    wrow[i] = static_cast<const uint8_t*>(w.data) + r * RowBytes<D>(w.cols);
    srow[i] = w.scale + r * groups;  // d_w[r, :]
    scale_offset[i] = r * groups;
  }
  alignas(64) float dws[8 * kGemvRows];  // d_w of the 8 rows at blocks b & ~7 .. (b & ~7) + 7
  const __m512i scale_index = _mm512_load_si512(scale_offset);
  const uint8_t* xq[NT];
  const float* log2_dx[NT];
  const int32_t* bias[NT];
  for (int t = 0; t < NT; ++t) {
    xq[t] = a.codes + (t0 + t) * groups * kBlock;  // q_x[t0 + t, :]
    log2_dx[t] = a.log2_d + (t0 + t) * groups;
    bias[t] = a.bias + (t0 + t) * groups;
  }
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  const auto block = [&](int64_t b, auto tail) {
    constexpr bool kTail = decltype(tail)::value;
    const int64_t n = w.cols - b * kBlock;
    __m256i wu[kGemvRows];
    for (int i = 0; i < kGemvRows; ++i) wu[i] = LoadWeightBlock<D, kTail>(wrow[i], b, n);
    const __m256 dw = _mm512_i64gather_ps(scale_index, w.scale + b, 4);  // d_w[r0:r0+8, b]
    for (int t = 0; t < NT; ++t) {
      const __m256i xv = _mm256_load_si256(reinterpret_cast<const __m256i*>(xq[t] + b * kBlock));
      __m256i p[kGemvRows];
      for (int i = 0; i < kGemvRows; ++i)
        p[i] = _mm256_dpbusd_epi32(_mm256_setzero_si256(), wu[i], xv);
      const __m256i isum = _mm256_add_epi32(SumLanes8(p), _mm256_set1_epi32(bias[t][b]));
      const __m256 scaled =
          _mm256_scalef_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(log2_dx[t][b]));
      acc[t] = _mm256_fmadd_ps(scaled, dw, acc[t]);
    }
  };
  // Pairs of full blocks: one zmm per row and token feeds 2 blocks (half the loads and vpdpbusd
  // of single blocks, and a cheaper reduction). Each row still adds block b, then b + 1.
  const __m512i pair_index = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const int64_t paired = full_groups & ~int64_t{1};
  // Rows lie back to back: the same blocks of the rows about kGemvAheadBytes on (and the next
  // tile's scales) are requested from DRAM while this tile is summed.
  const int64_t tile_bytes = kGemvRows * RowBytes<D>(w.cols);
  const int64_t ahead =
      tile_bytes * std::max<int64_t>(1, (kGemvAheadBytes + tile_bytes - 1) / tile_bytes);
  for (int64_t b = 0; b < paired; b += 2) {
    __m512i wu[kGemvRows];
    for (int i = 0; i < kGemvRows; ++i) {
      PrefetchL2At(wrow[i], ahead + b * RowBytes<D>(kBlock));
      wu[i] = LoadWeightPair<D>(wrow[i], b);
    }
    if (b % 16 == 0)
      for (int i = 0; i < kGemvRows; ++i)
        PrefetchAt(w.scale, 4 * ((r0 + kGemvRows + i) * groups + b));
    if (b % 8 == 0) TransposeScales8(srow, b, std::min<int64_t>(8, groups - b), dws);
    const __m512 dw = _mm512_load_ps(dws + (b % 8) * kGemvRows);  // d_w[r0:r0+8, b : b+2]
    for (int t = 0; t < NT; ++t) {
      const __m512i xv = _mm512_loadu_si512(xq[t] + b * kBlock);  // 32-byte aligned
      __m512i p[kGemvRows];
      for (int i = 0; i < kGemvRows; ++i)
        p[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wu[i], xv);
      // [bias_b x 8 | bias_b+1 x 8] and the same for d_x
      const __m512i bias2 = _mm512_permutexvar_epi32(
          pair_index,
          _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bias[t] + b))));
      const __m512 log2_dx2 = _mm512_permutexvar_ps(
          pair_index, _mm512_castps128_ps512(_mm_castsi128_ps(
                          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(log2_dx[t] + b)))));
      const __m512 f =
          _mm512_scalef_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(SumLanes8x2(p), bias2)), log2_dx2);
      acc[t] = _mm256_fmadd_ps(_mm512_castps512_ps256(f), _mm512_castps512_ps256(dw), acc[t]);
      acc[t] = _mm256_fmadd_ps(_mm512_extractf32x8_ps(f, 1), _mm512_extractf32x8_ps(dw, 1), acc[t]);
    }
  }
  for (int64_t b = paired; b < full_groups; ++b) block(b, std::false_type{});
  if (full_groups < groups) block(full_groups, std::true_type{});
  const __mmask8 valid = static_cast<__mmask8>((1u << std::min<int64_t>(8, row_end - r0)) - 1u);
  for (int t = 0; t < NT; ++t) _mm256_mask_storeu_ps(y + (t0 + t) * w.rows + r0, valid, acc[t]);
}

// ---- GEMV on tiled rows (ops/row_tiles.h): 16 rows in the lanes ----

// y[t0 + t, r] for t < NT and the rows r in [lo, hi) of tile `tile`. Per block, one 64-byte load
// per dword of the 16 rows (q8_0: codes + 128 by an xor; q4_0: split into low nibbles, against
// the token's even-column dword s, and high nibbles, against its odd-column dword 4 + s: x is in
// nibble order), and per token 8 vpdpbusd on broadcast activation dwords give the 16 rows' exact
// block dots in the lanes, summed in the same order as the twin.
// The tile's weights are read front to back with no software requests: the hardware prefetchers
// follow that one stream best. Against requesting the lines kGemvAheadBytes on into the L2, as
// before (into the L1 as well had been slower still), tokens alternating in one process, either
// role, 2 threads: bench-medium q4_0 tg64 6.2-7.2 % less time a token, q8_0 tg128 26-27 %,
// bench-small q4_0 tg128 3.2-7.5 %. The scales (a second, smaller stream) are still requested:
// without those as well, q4_0 took 0-2.6 % more (4 runs).
// Except q4_0's lines, requested kQ4TileAheadBytes ahead into the L1: q4_0 spends about twice the
// instructions a byte that q8_0 does, so the out-of-order window reaches half as far ahead, and
// the hardware prefetchers alone left it short, most where the stream restarts at every expert's
// 0.5 MB matrix. matmul_bench BM_ExpertsVsRead's first form (16 experts' gate/up from DRAM, 2
// threads, against a 64 MiB read probe in the same iteration), quiet host: 0.77-0.86 -> 0.86-0.91
// of the probe; one 37 MB matrix 0.88-0.92 -> 0.92-1.01 (q8_0 reaches 1.0-1.1 without; requests
// slowed it). bench-medium q4_0 tg64, tokens alternating between both in one process, 16 runs each
// way: quiet host (126-135 tok/s) 1.9 % less time a token, busy host (90-108) 0.7 %; 30 of 32
// faster.
// kF16: the tile's scales are f16 (WeightView::f16_tile_scales).
template <DType D, int NT, bool kF16>
void GemvTile16(const RowsActs& a, int64_t t0, const WeightView& w, int64_t tile, int64_t lo,
                int64_t hi, float* y) {
  constexpr int64_t kSteps = kTileSteps<D>;
  const int64_t groups = a.groups;
  const uint8_t* base = static_cast<const uint8_t*>(w.data) + tile * kRowTile * RowBytes<D>(w.cols);
  const float* scale = w.scale + tile * kRowTile * groups;            // [groups][16]
  const uint16_t* scale16 = kF16 ? TileScalesF16(w, tile) : nullptr;  // [groups][16]
  const uint8_t* xq[NT];
  const float* log2_dx[NT];
  const int32_t* bias[NT];
  for (int t = 0; t < NT; ++t) {
    xq[t] = a.codes + (t0 + t) * groups * kBlock;
    log2_dx[t] = a.log2_d + (t0 + t) * groups;
    bias[t] = a.bias + (t0 + t) * groups;
  }
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  for (int64_t b = 0; b < groups; ++b) {
    const uint8_t* wb = base + b * kSteps * 64;
    // The scales kGemvAheadBytes of weights ahead: one line holds 2 groups' f16 (1 f32).
    // bench-medium tg256, 2 threads, tokens alternating with and without it in one process (so
    // both see the same host): q4_0 1.6 and 4.8 %, q8_0 1.8 and 2.1 % less time per token.
    if (!kF16 || b % 2 == 0) {
      constexpr int64_t kAheadGroups = kGemvAheadBytes / (kSteps * 64);
      if constexpr (kF16)
        PrefetchL2At(scale16, (b + kAheadGroups) * kRowTile * 2);
      else
        PrefetchL2At(scale, (b + kAheadGroups) * kRowTile * 4);
    }
    __m512i wu[8];  // wu[s] pairs with the token's dword s of the block
    for (int64_t s = 0; s < kSteps; ++s) {
      if constexpr (D == DType::kU8) PrefetchAt(wb, kQ4TileAheadBytes + s * 64);
      const __m512i v = _mm512_loadu_si512(wb + s * 64);
      if constexpr (D == DType::kI8) {
        wu[s] = _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
      } else {
        wu[s] = _mm512_and_si512(v, low4);
        wu[s + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      }
    }
    // d_w of the 16 rows, block b
    const __m512 dw = kF16 ? _mm512_cvtph_ps(_mm256_loadu_si256(
                                 reinterpret_cast<const __m256i*>(scale16 + b * kRowTile)))
                           : _mm512_loadu_ps(scale + b * kRowTile);
    // The token's dwords broadcast inside the vpdpbusd (DpbusdBroadcast): as separate
    // vpbroadcastd (GCC does not fold them) they took vector pipe slots beside the nibble
    // splitting. matmul_bench BM_MatMulTiled 2048x2048 T=1 from the L2/L3, one thread, old / new us
    // (two runs each): q8_0 61.5, 57.4 / 52.1, 51.7; q4_0 42.0, 56.0 / 36.2, 36.4.
    for (int t = 0; t < NT; ++t) {
      const uint8_t* xd = xq[t] + b * kBlock;
      __m512i s0 = _mm512_set1_epi32(bias[t][b]), s1 = _mm512_setzero_si512();
      for (int s = 0; s < 8; s += 2) {
        s0 = DpbusdBroadcast(s0, wu[s], xd + 4 * s);
        s1 = DpbusdBroadcast(s1, wu[s + 1], xd + 4 * s + 4);
      }
      // float(isum) d_x by vscalefps (exact; it runs beside vpdpbusd, vmulps competes with it),
      // then one fma with d_w.
      const __m512 f = _mm512_scalef_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)),
                                        _mm512_set1_ps(log2_dx[t][b]));
      acc[t] = _mm512_fmadd_ps(f, dw, acc[t]);
    }
  }
  const int64_t first = tile * kRowTile;
  const __mmask16 valid =
      static_cast<__mmask16>(((1u << (hi - first)) - 1u) & ~((1u << (lo - first)) - 1u));
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * w.rows + first, valid, acc[t]);
}

// Calls tile(std::integral_constant<int, NT>, t0) over T tokens in runs of up to kGemvTokens.
template <typename Fn>
void ForTokenRuns(int64_t T, Fn&& tile) {
  int64_t t0 = 0;
  for (; t0 + kGemvTokens <= T; t0 += kGemvTokens)
    tile(std::integral_constant<int, kGemvTokens>{}, t0);
  switch (T - t0) {
    case 1:
      return tile(std::integral_constant<int, 1>{}, t0);
    case 2:
      return tile(std::integral_constant<int, 2>{}, t0);
    case 3:
      return tile(std::integral_constant<int, 3>{}, t0);
    default:
      return;
  }
}

// ForTokenRuns with runs of 8 first, for tiled rows: each run unpacks a tile's weights once. One
// core, 512x2048 (the tiles' remainders and T < 16 take this path): q4_0 T = 8 392-446 -> 441-501,
// T = 15 422-429 -> 433-456 Gop/s, q8_0 alike; faster in 18 of 20 interleaved runs over T = 8..40.
template <typename Fn>
void ForTokenRuns8(int64_t T, Fn&& tile) {
  int64_t t0 = 0;
  for (; t0 + 8 <= T; t0 += 8) tile(std::integral_constant<int, 8>{}, t0);
  ForTokenRuns(T - t0, [&](auto nt, int64_t t) { tile(nt, t0 + t); });
}

template <DType D>
void GemvRows(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
              int64_t row_end, float* y) {
  const RowsActs a = ViewRowsLayout(buf, T, QuantGroups(w.cols, kBlock));
  int64_t r = row_begin;
  if (w.row_tiles != 0) {
    const int64_t tiled_end = std::min(row_end, w.rows / kRowTile * kRowTile);
    while (r < tiled_end) {
      const int64_t tile = r / kRowTile, hi = std::min(tiled_end, (tile + 1) * kRowTile);
      ForTokenRuns8(T, [&](auto nt, int64_t t0) {
        if (w.f16_tile_scales)
          GemvTile16<D, decltype(nt)::value, true>(a, t0, w, tile, r, hi, y);
        else
          GemvTile16<D, decltype(nt)::value, false>(a, t0, w, tile, r, hi, y);
      });
      r = hi;
    }
  }
  // Row-major rows (all of an untiled weight, those past the last tile of a tiled one).
  for (int64_t r0 = r; r0 < row_end; r0 += kGemvRows) {
    ForTokenRuns(T, [&](auto nt, int64_t t0) {
      GemvTile<D, decltype(nt)::value>(a, t0, w, r0, row_end, y);
    });
  }
}

}  // namespace

void QuantizeActBlocks(const float* x, int64_t cols, int8_t* q, float* d, int32_t* sum) {
  const int64_t groups = QuantGroups(cols, kBlock);
  for (int64_t b = 0; b < groups; ++b) {
    const QuantizedBlock qb = QuantizeBlock(x + b * kBlock, std::min(kBlock, cols - b * kBlock));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kBlock), qb.codes);
    d[b] = qb.d;
    sum[b] = qb.sum;
  }
}

// buf: the first PrefillTokens(T, w) tokens in the tile layout, then the rest in the GEMV's
// (Int8ActBytes(tiled tokens) bytes in: a whole number of tiles, 64-byte aligned).
void QuantizeActsInt8(const ActSource& a, int64_t T, const WeightView& w, uint8_t* buf) {
  const int64_t tiled = PrefillTokens(T, w), rest = T - tiled;
  if (tiled > 0) QuantizeTilesInt8(a, tiled, w.cols, w.dtype, buf);
  if (rest == 0) return;
  uint8_t* rest_buf = buf + Int8ActBytes(tiled, w.cols);
  const ActSource rest_a = SourceFrom(a, tiled);
  w.dtype == DType::kI8 ? QuantizeRowsLayout<DType::kI8>(rest_a, rest, w.cols, rest_buf)
                        : QuantizeRowsLayout<DType::kU8>(rest_a, rest, w.cols, rest_buf);
}

// PrefillTokens(T, w) tiles every whole tile of T >= 16 tokens, so a piece of whole tiles is tiled
// as a whole layout tiles it, and a last piece of 16 + rest tokens leaves the same rest to the
// GEMV's layout (or pads the same last tile).
int64_t Int8LayoutTileTokens(const WeightView& w) {
  return QuantGroups(w.cols, kBlock) > kMaxPanelGroups ? 0 : 16;
}

void MatMulRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y) {
  if (T <= 0 || row_begin >= row_end) return;
  const int64_t tiled = PrefillTokens(T, w), rest = T - tiled;
  if (tiled > 0) PrefillRowsInt8(buf, tiled, w, row_begin, row_end, y);
  if (rest == 0) return;
  const uint8_t* rest_buf = buf + Int8ActBytes(tiled, w.cols);
  float* rest_y = y + tiled * w.rows;
  w.dtype == DType::kI8 ? GemvRows<DType::kI8>(rest_buf, rest, w, row_begin, row_end, rest_y)
                        : GemvRows<DType::kU8>(rest_buf, rest, w, row_begin, row_end, rest_y);
}

}  // namespace dsv3::ops::avx512
