// AVX2 int8-activation MatMul for q8_0 (kI8) and q4_0 (kU8) weights (ops/int8_dot.h for the
// arithmetic, which this kernel reproduces bit for bit).
//
// Included by exactly two files, each defining DSV3_INT8_NAMESPACE and DSV3_INT8_VNNI first:
// avx2_int8_matmul.cpp (avx2) and avxvnni_int8_matmul.cpp (avxvnni, compiled with AVX-VNNI, for
// CPUs with AVX2 and AVX-VNNI but no AVX-512, e.g. Intel's client cores from Alder Lake on). The
// copies differ only in prefill: with VNNI its micro-tile is PrefillMicroTileShared (vpdpbusd on
// ymm; the same integer sums), and q8_0 takes it too. The GEMV kernels stay on vpmaddubsw in both:
// there vpdpbusd's dependent accumulator chains ran slower (bench-medium, DSV3_ISA=avx2, 3
// interleaved runs: q4_0 tg64 74 vs 84 tok/s; q8_0 pp512, measured before its prefill took the
// tiles, 120 vs 151).
//
// vpmaddubsw multiplies unsigned by signed bytes and adds pairs with int16 saturation, so the
// operands are split to keep every pair sum within int16:
//  - q8_0: |w| (unsigned, <= 128) times sign(w) * x (in [-127, 127]): a pair is at most
//    2 * 128 * 127 = 32512 < 32767. (x + 128 times w could reach 2 * 255 * 127 and saturate.)
//  - q4_0: the stored nibble (code + 8, <= 15) times x: at most 2 * 15 * 127 = 3810; the dot then
//    owes 8 * sum(q_x), stored by the quantizer as a per-block bias.
// vpmaddwd against ones widens the pairs to int32 (8 partial sums of 4 products per block).
//
// Decode (and q8_0 at every T without VNNI): 8 rows in the lanes of a ymm, up to 4 tokens per tile.
// Per block, each row's partials go through a transposing horizontal add into one vector of 8 exact
// block dots, then the f32 step. Each weight block is loaded once per tile and reused by its
// tokens. Rows in 16-row tiles (ops/row_tiles.h; model loads tile q4_0 on AVX2) take GemvTile16
// instead: each line holds one dword of 16 rows, so the products land in the rows' lanes with no
// horizontal sums.
//
// q4_0 prefill (T >= kPrefillMinT; q8_0 too with VNNI): 8 tokens in the lanes. Panels of 8 rows
// are unpacked once (from half a tile by an 8x8 dword transpose when q4_0 rows are tiled);
// per block, a row's dword of 4 nibbles is broadcast against the 4 codes of each of 8 tokens, and
// the 8 vpmaddubsw results of a block are added in int16 before one vpmaddwd: each is at most
// 2 * 15 * 127 = 3810 in magnitude, so 8 of them (30480) cannot overflow. No horizontal sums.
// With VNNI, q8_0 weights enter the panel as code + 128 (unsigned) against signed x, whose
// per-token bias is then -128 * sum(q_x), as q4_0's is -8 * sum(q_x).
#pragma once

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "ops/int8_dot.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/isa/transpose8x8.h"
#include "ops/kernels_internal.h"
#include "ops/row_tiles.h"

namespace dsv3::ops::DSV3_INT8_NAMESPACE {

namespace {

constexpr bool kVnni = DSV3_INT8_VNNI;

constexpr int64_t kBlock = kInt8Block;
constexpr int kTileRows = 8;
constexpr int kTileTokens = 4;
constexpr int64_t kPrefillMinT = 8;
constexpr int64_t kLaneTokens = 8;  // prefill: tokens per tile, one per 32-bit lane
// One block of one prefill tile: codes [8 steps][8 tokens][4 bytes], d [8] f32, bias [8] int32.
constexpr int64_t kTileCodeBytes = 8 * kLaneTokens * 4;
constexpr int64_t kTileBlockBytes = kTileCodeBytes + 2 * kLaneTokens * 4;
constexpr int kPanelRows = 8;
// Panel of 8 unpacked rows on the stack: 576 blocks = 18432 columns (144 KiB; PrefillRows' frame
// is ~160 KiB for q4_0, ~306 KiB for q8_0 with its copied tiled rows); wider rows take the
// row kernel at every T.
constexpr int64_t kMaxPanelGroups = 576;

template <DType D>
constexpr int32_t kWeightOffset = D == DType::kI8 ? 0 : 8;
// The prefill tiles' offset: their q8_0 weights (VNNI copy only) are unsigned, code + 128.
template <DType D>
constexpr int32_t kTileWeightOffset = D == DType::kI8 ? 128 : 8;

template <DType D>
constexpr int64_t RowBytes(int64_t cols) {
  return D == DType::kI8 ? cols : (cols + 1) / 2;
}

// ---- Activation quantisation ----

struct QuantizedBlock {
  __m256i codes;  // 32 int8 codes, natural column order
  float d;
  int32_t sum;
};

int32_t HorizontalSum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

uint32_t HorizontalMaxU32(__m256i v) {
  __m128i s = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_max_epu32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_max_epu32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(s));
}

// x [n], n <= 32, as scalar::QuantizeActBlocks quantizes one block. Inlined: as a call it
// returned through memory and cleared the upper registers on every block.
[[gnu::always_inline]] inline QuantizedBlock QuantizeBlock(const float* x, int64_t n) {
  __m256 v[4];
  for (int k = 0; k < 4; ++k) {
    if (n >= 8 * (k + 1)) {
      v[k] = _mm256_loadu_ps(x + 8 * k);
    } else if (n <= 8 * k) {
      v[k] = _mm256_setzero_ps();
    } else {
      // vmaskmovps reads only the lanes whose mask is set, so nothing past x[n) is touched.
      const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256i mask =
          _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int32_t>(n - 8 * k)), lane);
      v[k] = _mm256_maskload_ps(x + 8 * k, mask);
    }
  }
  // max |x| on the bit patterns, as the scalar twin does (NaN > inf > finite).
  const __m256i abs_bits = _mm256_set1_epi32(0x7fffffff);
  __m256i a = _mm256_and_si256(_mm256_castps_si256(v[0]), abs_bits);
  for (int k = 1; k < 4; ++k)
    a = _mm256_max_epu32(a, _mm256_and_si256(_mm256_castps_si256(v[k]), abs_bits));
  const uint32_t amax_bits = HorizontalMaxU32(a);
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  QuantizedBlock out{_mm256_setzero_si256(), Int8ActScale(amax), 0};
  if (!(out.d > 0.0f && out.d <= std::numeric_limits<float>::max())) return out;
  // vdivps is correctly rounded and vcvtps2dq rounds to nearest even (the default MXCSR mode),
  // as std::nearbyint(x / d) does in the scalar twin.
  const __m256 d = _mm256_set1_ps(out.d);
  const __m256i lim = _mm256_set1_epi32(127), neg_lim = _mm256_set1_epi32(-127);
  __m256i q[4];
  __m256i total = _mm256_setzero_si256();
  for (int k = 0; k < 4; ++k) {
    q[k] = _mm256_cvtps_epi32(_mm256_div_ps(v[k], d));
    q[k] = _mm256_min_epi32(_mm256_max_epi32(q[k], neg_lim), lim);
    total = _mm256_add_epi32(total, q[k]);
  }
  out.sum = HorizontalSum(total);
  // packs work per 128-bit lane: the bytes come out as dwords [q0a q1a q2a q3a | q0b q1b q2b q3b]
  // (a = elements 0-3, b = 4-7 of each vector); one dword permutation restores column order.
  const __m256i bytes =
      _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
  out.codes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  return out;
}

// Block b of token t of a (cols columns): read from a.xq, or quantized from x here (the same bits).
[[gnu::always_inline]] inline QuantizedBlock ActBlock(const ActSource& a, int64_t t, int64_t b,
                                                      int64_t cols) {
  if (a.xq != nullptr) {
    const int64_t i = SourceRow(a, t) * QuantGroups(cols, kBlock) + b;  // its row, block b
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq->q + i * kBlock)), a.xq->d[i],
            a.xq->sum[i]};
  }
  return QuantizeBlock(ActRow(a, t, cols) + b * kBlock, std::min(kBlock, cols - b * kBlock));
}

// Natural order -> the order q4_0 bytes unpack to: even columns 0, 2, .., 30, then odd 1, .., 31.
__m256i ToNibbleOrder(__m256i v) {
  const __m256i evens_then_odds =
      _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12,
                       14, 1, 3, 5, 7, 9, 11, 13, 15);
  v = _mm256_shuffle_epi8(v, evens_then_odds);
  return _mm256_permute4x64_epi64(v, _MM_SHUFFLE(3, 1, 2, 0));
}

// q8_0 takes the prefill tiles only with VNNI: vpmaddubsw would saturate on its code + 128 weights.
template <DType D>
bool UsePrefill(int64_t T, int64_t cols) {
  return (D == DType::kU8 || kVnni) && T >= kPrefillMinT &&
         QuantGroups(cols, kBlock) <= kMaxPanelGroups;
}

// Layout: codes [T, groups * 32] (block order of the weights), d [T, groups],
// bias [T, groups] = -offset * sum.
template <DType D>
void QuantizeRowsLayout(const ActSource& a, int64_t T, int64_t cols, uint8_t* buf) {
  const int64_t groups = QuantGroups(cols, kBlock);
  float* d = reinterpret_cast<float*>(buf + T * groups * kBlock);
  int32_t* bias = reinterpret_cast<int32_t*>(d + T * groups);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < groups; ++b) {
      const QuantizedBlock q = ActBlock(a, t, b, cols);
      const __m256i codes = D == DType::kU8 ? ToNibbleOrder(q.codes) : q.codes;
      _mm256_store_si256(reinterpret_cast<__m256i*>(buf + (t * groups + b) * kBlock), codes);
      d[t * groups + b] = q.d;
      bias[t * groups + b] = -kWeightOffset<D> * q.sum;
    }
  }
}

// Prefill layout: tiles of 8 tokens, tile k at buf + k * groups * kTileBlockBytes, block b of it
// at + b * kTileBlockBytes. Tokens past T are zero (codes, d and bias), so they compute zeros.
template <DType D>
void QuantizeTileLayout(const ActSource& a, int64_t T, int64_t cols, uint8_t* buf) {
  const int64_t groups = QuantGroups(cols, kBlock);
  const int64_t tile_bytes = groups * kTileBlockBytes;
  const int64_t tiles = (T + kLaneTokens - 1) / kLaneTokens;
  if (T % kLaneTokens != 0) std::memset(buf + (tiles - 1) * tile_bytes, 0, tile_bytes);
  // Per block, the tile's 8 tokens at once: their codes (8 dwords each) transposed to the 8
  // steps' rows, 32 bytes per step, instead of 8 dword stores per token.
  for (int64_t t0 = 0; t0 < T; t0 += kLaneTokens) {
    const int64_t n = std::min<int64_t>(kLaneTokens, T - t0);
    uint8_t* tile = buf + (t0 / kLaneTokens) * tile_bytes;
    for (int64_t b = 0; b < groups; ++b) {
      uint8_t* block = tile + b * kTileBlockBytes;
      __m256 v[8];
      for (int64_t i = 0; i < 8; ++i) {
        if (i >= n) {
          v[i] = _mm256_setzero_ps();
          continue;
        }
        const QuantizedBlock q = ActBlock(a, t0 + i, b, cols);
        v[i] = _mm256_castsi256_ps(D == DType::kU8 ? ToNibbleOrder(q.codes) : q.codes);
        const int32_t bias = -kTileWeightOffset<D> * q.sum;
        std::memcpy(block + kTileCodeBytes + i * 4, &q.d, 4);
        std::memcpy(block + kTileCodeBytes + kLaneTokens * 4 + i * 4, &bias, 4);
      }
      Transpose8x8(v);  // v[s]: dword s of the 8 tokens
      for (int64_t step = 0; step < 8; ++step)
        _mm256_storeu_ps(reinterpret_cast<float*>(block + step * kLaneTokens * 4), v[step]);
    }
  }
}

// ---- Kernel ----

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

// Block b of a row as the bytes the dot uses: q8_0 codes (natural order), q4_0 nibbles in nibble
// order. kTail: the row's partial last block of n columns goes through a zero-padded copy, so
// nothing past the row is read.
template <DType D, bool kTail>
__m256i LoadWeightBlock(const uint8_t* row, int64_t b, int64_t n) {
  constexpr int64_t kBytes = D == DType::kI8 ? kBlock : kBlock / 2;
  const uint8_t* p = row + b * kBytes;
  alignas(32) uint8_t padded[kBlock];
  if constexpr (kTail) {
    std::memset(padded, 0, sizeof(padded));
    std::memcpy(padded, p, static_cast<size_t>(D == DType::kI8 ? n : (n + 1) / 2));
    p = padded;
  }
  if constexpr (D == DType::kI8) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  } else {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m256i both = _mm256_srlv_epi32(_mm256_broadcastsi128_si256(v),
                                           _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
  }
}

// 8 partial sums of 4 products of one block: w (as LoadWeightBlock gives it) times x codes.
template <DType D>
__m256i BlockPartials(__m256i w, __m256i x) {
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (D == DType::kI8) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)),
                             ones);
  } else {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones);
  }
}

struct RowsActs {
  const uint8_t* codes;  // [T, groups * 32]
  const float* d;        // [T, groups]
  const int32_t* bias;   // [T, groups]
  int64_t groups;
};

// y[t0 + t, r0 + i] for t < NT, i < 8, r0 + i < row_end (rows past row_end repeat the last row
// and are not stored). One token (decode) uses each decoded weight block once, straight from its
// register; more tokens stage the 8 decoded blocks in L1 and reuse them.
template <DType D, int NT>
void Tile(const RowsActs& a, int64_t t0, const WeightView& w, int64_t r0, int64_t row_end,
          float* y) {
  const int64_t groups = a.groups;
  const uint8_t* wrow[kTileRows];
  const float* srow[kTileRows];
  for (int i = 0; i < kTileRows; ++i) {
    const int64_t r = std::min(r0 + i, row_end - 1);
    wrow[i] = static_cast<const uint8_t*>(w.data) + r * RowBytes<D>(w.cols);
    srow[i] = w.scale + r * groups;
  }
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  alignas(32) uint8_t wblock[NT > 1 ? kTileRows : 1][kBlock];  // the 8 rows' block, decoded once
  alignas(32) float dws[8 * kTileRows];  // d_w of the 8 rows at blocks b & ~7 .. (b & ~7) + 7
  // Rows lie back to back: the same block of the rows 8 KB on (whole tiles, at least one), and
  // the next tile's scales every 16 blocks, are requested from DRAM while this tile is summed
  // (one line per 64 bytes of each row). The rows' lines into the L2 only: 8-16 KB ahead into the
  // L1 evicted lines before their use. bench-medium `--load mmap` (row-major weights) tg32,
  // tokens alternating in one process (4 runs): q8_0 25-27 % less time a token, q4_0 19-21 %.
  const int64_t tile_bytes = kTileRows * RowBytes<D>(w.cols);
  const int64_t ahead = tile_bytes * std::max<int64_t>(1, (8192 + tile_bytes - 1) / tile_bytes);
  constexpr int64_t kBlocksPerLine = 64 / RowBytes<D>(kBlock);
  const auto block = [&](int64_t b, auto tail) {
    constexpr bool kTail = decltype(tail)::value;
    const int64_t n = w.cols - b * kBlock;
    __m256i wv[kTileRows];
    for (int i = 0; i < kTileRows; ++i) {
      if (b % kBlocksPerLine == 0) PrefetchL2At(wrow[i], ahead + b * RowBytes<D>(kBlock));
      if (b % 16 == 0) PrefetchAt(srow[i], 4 * (kTileRows * groups + b));
      wv[i] = LoadWeightBlock<D, kTail>(wrow[i], b, n);
      if constexpr (NT > 1) _mm256_store_si256(reinterpret_cast<__m256i*>(wblock[i]), wv[i]);
    }
    if (b % 8 == 0) TransposeScales8(srow, b, std::min<int64_t>(8, groups - b), dws);
    const __m256 dw = _mm256_load_ps(dws + (b % 8) * kTileRows);  // d_w[r0:r0+8, b]
    for (int t = 0; t < NT; ++t) {
      const int64_t xi = (t0 + t) * groups + b;  // block b of token t0 + t
      const __m256i xv = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.codes + xi * kBlock));
      __m256i p[kTileRows];
      for (int i = 0; i < kTileRows; ++i) {
        if constexpr (NT > 1)
          p[i] =
              BlockPartials<D>(_mm256_load_si256(reinterpret_cast<const __m256i*>(wblock[i])), xv);
        else
          p[i] = BlockPartials<D>(wv[i], xv);
      }
      const __m256i isum = _mm256_add_epi32(SumLanes8(p), _mm256_set1_epi32(a.bias[xi]));
      const __m256 scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(a.d[xi]));
      acc[t] = _mm256_fmadd_ps(scaled, dw, acc[t]);
    }
  };
  const int64_t full_groups = w.cols / kBlock;
  for (int64_t b = 0; b < full_groups; ++b) block(b, std::false_type{});
  if (full_groups < groups) block(full_groups, std::true_type{});
  const int64_t valid = std::min<int64_t>(kTileRows, row_end - r0);
  for (int t = 0; t < NT; ++t) {
    float* out = y + (t0 + t) * w.rows + r0;  // y[t0 + t, r0 : r0 + valid]
    if (valid == kTileRows) {
      _mm256_storeu_ps(out, acc[t]);
    } else {
      alignas(32) float lanes[kTileRows];
      _mm256_store_ps(lanes, acc[t]);
      std::memcpy(out, lanes, static_cast<size_t>(valid) * sizeof(float));
    }
  }
}

int32_t LoadDword(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---- GEMV on tiled rows (ops/row_tiles.h): 16 rows in the lanes of two ymm ----

// y[t0 + t, r] for t < NT and the rows r in [lo, hi) of tile `tile`. Per stored dword s of a
// block, one 64-byte line holds it for the 16 rows (rows 0-7 in the low 32 bytes, 8-15 in the
// high), and per token vpmaddubsw against the token's broadcast dword gives each row's products
// in its lane, so no horizontal sums. q8_0: |w| times sign(w) * x as in BlockPartials, widened
// to int32 per step; q4_0: the low nibbles against the token's dword s and the high ones against
// dword 4 + s (x in nibble order), summed in int16 over the block's 4 steps (8 pair sums of at
// most 2 * 15 * 127 = 3810 a lane: 30480 < 32767) and widened once. Exact integer dots, then per
// block the same f32 step as Tile (the scalar twin's bits). kF16: the tile's scales are f16.
template <DType D, int NT, bool kF16>
void GemvTile16(const RowsActs& a, int64_t t0, const WeightView& w, int64_t tile, int64_t lo,
                int64_t hi, float* y) {
  constexpr int64_t kSteps = D == DType::kI8 ? 8 : 4;  // stored dwords of a row's block
  const int64_t groups = a.groups;
  const uint8_t* base = static_cast<const uint8_t*>(w.data) + tile * kRowTile * RowBytes<D>(w.cols);
  const float* scale = w.scale + tile * kRowTile * groups;            // [groups][16]
  const uint16_t* scale16 = kF16 ? TileScalesF16(w, tile) : nullptr;  // [groups][16]
  const uint8_t* xq[NT];
  for (int t = 0; t < NT; ++t) xq[t] = a.codes + (t0 + t) * groups * kBlock;
  const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < groups; ++b) {
    const uint8_t* wb = base + b * kSteps * 64;
    __m256i sum[NT][2];  // q8_0: int32 sums; q4_0: int16 sums
    for (int t = 0; t < NT; ++t) sum[t][0] = sum[t][1] = _mm256_setzero_si256();
    // The scales 8 KB of weights ahead: one line holds 2 groups' f16 (1 f32). As on AVX-512:
    // bench-medium q4_0 tg256, tokens alternating in one process, 1.3 and 2.8 %. The weights
    // themselves are not requested (as on AVX-512, the hardware prefetchers follow the tile's one
    // stream): bench-medium tg64 on AVX2, tokens alternating in one process, either role: q4_0
    // 4.4-4.9 % less time a token than with their lines 8 KB on requested into the L2, q8_0 level.
    if (!kF16 || b % 2 == 0) {
      constexpr int64_t kAheadGroups = 8192 / (kSteps * 64);
      if constexpr (kF16)
        PrefetchL2At(scale16, (b + kAheadGroups) * kRowTile * 2);
      else
        PrefetchL2At(scale, (b + kAheadGroups) * kRowTile * 4);
    }
    for (int64_t s = 0; s < kSteps; ++s) {
      for (int h = 0; h < 2; ++h) {
        const __m256i v =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + s * 64 + 32 * h));
        if constexpr (D == DType::kI8) {
          const __m256i mag = _mm256_abs_epi8(v);
          for (int t = 0; t < NT; ++t) {
            const __m256i xb = _mm256_set1_epi32(LoadDword(xq[t] + b * kBlock + 4 * s));
            sum[t][h] = _mm256_add_epi32(
                sum[t][h],
                _mm256_madd_epi16(_mm256_maddubs_epi16(mag, _mm256_sign_epi8(xb, v)), ones));
          }
        } else {
          const __m256i wl = _mm256_and_si256(v, low4);
          const __m256i wh = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
          for (int t = 0; t < NT; ++t) {
            const uint8_t* xd = xq[t] + b * kBlock;
            const __m256i pl = _mm256_maddubs_epi16(wl, _mm256_set1_epi32(LoadDword(xd + 4 * s)));
            const __m256i ph =
                _mm256_maddubs_epi16(wh, _mm256_set1_epi32(LoadDword(xd + 16 + 4 * s)));
            sum[t][h] = _mm256_add_epi16(sum[t][h], _mm256_add_epi16(pl, ph));
          }
        }
      }
    }
    __m256 dw[2];  // d_w of rows 0-7 and 8-15, block b
    for (int h = 0; h < 2; ++h) {
      dw[h] = kF16 ? _mm256_cvtph_ps(_mm_loadu_si128(
                         reinterpret_cast<const __m128i*>(scale16 + b * kRowTile + 8 * h)))
                   : _mm256_loadu_ps(scale + b * kRowTile + 8 * h);
    }
    for (int t = 0; t < NT; ++t) {
      const int64_t xi = (t0 + t) * groups + b;  // block b of token t0 + t
      const __m256 dx = _mm256_set1_ps(a.d[xi]);
      const __m256i bias = _mm256_set1_epi32(a.bias[xi]);
      for (int h = 0; h < 2; ++h) {
        const __m256i isum = D == DType::kI8 ? sum[t][h] : _mm256_madd_epi16(sum[t][h], ones);
        const __m256 scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(isum, bias)), dx);
        acc[t][h] = _mm256_fmadd_ps(scaled, dw[h], acc[t][h]);
      }
    }
  }
  const int64_t first = tile * kRowTile;
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int h = 0; h < 2; ++h) {
    // Lanes of rows in [lo, hi): first + 8 h + lane >= lo and < hi.
    const __m256i row = _mm256_add_epi32(lane, _mm256_set1_epi32(static_cast<int>(8 * h)));
    const __m256i mask = _mm256_and_si256(
        _mm256_cmpgt_epi32(row, _mm256_set1_epi32(static_cast<int>(lo - first) - 1)),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(hi - first)), row));
    for (int t = 0; t < NT; ++t)
      _mm256_maskstore_ps(y + (t0 + t) * w.rows + first + 8 * h, mask, acc[t][h]);
  }
}

// Rows [row_begin, row_end) of the tiled rows of w (all below the last whole tile), T tokens
// in runs of up to kTileTokens.
template <DType D>
void TiledRows(const RowsActs& a, int64_t T, const WeightView& w, int64_t row_begin,
               int64_t row_end, float* y) {
  for (int64_t r = row_begin; r < row_end;) {
    const int64_t tile = r / kRowTile, hi = std::min(row_end, (tile + 1) * kRowTile);
    const auto run = [&](auto nt, int64_t t0) {
      constexpr int kNt = decltype(nt)::value;
      if (w.f16_tile_scales)
        GemvTile16<D, kNt, true>(a, t0, w, tile, r, hi, y);
      else
        GemvTile16<D, kNt, false>(a, t0, w, tile, r, hi, y);
    };
    int64_t t0 = 0;
    for (; t0 + kTileTokens <= T; t0 += kTileTokens)
      run(std::integral_constant<int, kTileTokens>{}, t0);
    switch (T - t0) {
      case 1:
        run(std::integral_constant<int, 1>{}, t0);
        break;
      case 2:
        run(std::integral_constant<int, 2>{}, t0);
        break;
      case 3:
        run(std::integral_constant<int, 3>{}, t0);
        break;
      default:
        break;
    }
    r = hi;
  }
}

template <DType D>
void Rows(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
          float* y) {
  const int64_t groups = QuantGroups(w.cols, kBlock);
  const float* d = reinterpret_cast<const float*>(buf + T * groups * kBlock);
  const RowsActs a{buf, d, reinterpret_cast<const int32_t*>(d + T * groups), groups};
  if (w.row_tiles != 0) {
    const int64_t tiled_end = std::min(row_end, w.rows / kRowTile * kRowTile);
    if (row_begin < tiled_end) TiledRows<D>(a, T, w, row_begin, tiled_end, y);
    row_begin = std::max(row_begin, tiled_end);  // rows past the last tile: row-major
  }
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileRows) {
    int64_t t0 = 0;
    for (; t0 + kTileTokens <= T; t0 += kTileTokens) Tile<D, kTileTokens>(a, t0, w, r0, row_end, y);
    switch (T - t0) {
      case 1:
        Tile<D, 1>(a, t0, w, r0, row_end, y);
        break;
      case 2:
        Tile<D, 2>(a, t0, w, r0, row_end, y);
        break;
      case 3:
        Tile<D, 3>(a, t0, w, r0, row_end, y);
        break;
      default:
        break;
    }
  }
}

// The prefill tiles (PackPanel .. PrefillRows), a fragment of this file kept apart for size.
#include "ops/isa/avx2_int8_prefill.inc"

}  // namespace

#if !DSV3_INT8_VNNI  // one copy is enough (the MLA's int8 quantizer; the same code in both)
void QuantizeActBlocks(const float* x, int64_t cols, int8_t* q, float* d, int32_t* sum) {
  const int64_t groups = QuantGroups(cols, kBlock);
  for (int64_t b = 0; b < groups; ++b) {
    const QuantizedBlock qb = QuantizeBlock(x + b * kBlock, std::min(kBlock, cols - b * kBlock));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + b * kBlock), qb.codes);
    d[b] = qb.d;
    sum[b] = qb.sum;
  }
}
#endif

void QuantizeActsInt8(const ActSource& a, int64_t T, const WeightView& w, uint8_t* buf) {
  const int64_t cols = w.cols;
  if (w.dtype == DType::kI8) {
    if constexpr (kVnni) {  // as MatMulRowsInt8: q8_0 tiles exist only with VNNI
      if (UsePrefill<DType::kI8>(T, cols)) return QuantizeTileLayout<DType::kI8>(a, T, cols, buf);
    }
    QuantizeRowsLayout<DType::kI8>(a, T, cols, buf);
  } else if (UsePrefill<DType::kU8>(T, cols))
    QuantizeTileLayout<DType::kU8>(a, T, cols, buf);
  else
    QuantizeRowsLayout<DType::kU8>(a, T, cols, buf);
}

void MatMulRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y) {
  if (T <= 0 || row_begin >= row_end) return;
  if (w.dtype == DType::kI8) {
    if constexpr (kVnni) {  // not instantiated without VNNI (UsePrefill is false there)
      if (UsePrefill<DType::kI8>(T, w.cols))
        return PrefillRows<DType::kI8>(buf, T, w, row_begin, row_end, y);
    }
    Rows<DType::kI8>(buf, T, w, row_begin, row_end, y);
  } else if (UsePrefill<DType::kU8>(T, w.cols))
    PrefillRows<DType::kU8>(buf, T, w, row_begin, row_end, y);
  else
    Rows<DType::kU8>(buf, T, w, row_begin, row_end, y);
}

}  // namespace dsv3::ops::DSV3_INT8_NAMESPACE
