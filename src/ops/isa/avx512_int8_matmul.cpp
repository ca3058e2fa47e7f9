// AVX-512 VNNI int8-activation MatMul for q8_0 (kI8) and q4_0 (kU8) weights (ops/int8_dot.h for
// the arithmetic, which every kernel here reproduces bit for bit).
//
// vpdpbusd multiplies unsigned bytes by signed bytes. x keeps its signed codes; the weights are
// made unsigned: q8_0 codes + 128 (an xor with 0x80), q4_0 nibbles as stored (code + 8). The dot
// then owes offset * sum(q_x) per block (offset 128 or 8), which the quantizer stores next to x as
// a negative "bias" that starts each block's int32 accumulator. All of it is exact integer math.
//
// Two kernel shapes:
//  - GEMV (T < kPrefillMinT): 8 rows in the lanes. Per pair of blocks, each row's 64 weight bytes
//    meet the token's 64 x codes in one zmm vpdpbusd (16 partial sums), and a transposing
//    reduction turns the 8 rows' partials into the 8 rows' exact dots of both blocks. Weights
//    stream once per tile of up to 4 tokens; decode is bandwidth-bound, so the shuffles are free.
//  - Packed prefill tiles (T >= kPrefillMinT): 16 tokens in the lanes of a zmm. x is quantized
//    into tiles of 16 tokens whose 4-byte column groups are interleaved ([step][token][4 bytes]),
//    so a broadcast dword of weights times one x vector feeds 16 tokens' block dots at once.
//    8 rows are first unpacked into a panel of unsigned bytes (L1/L2) reused by every token tile;
//    micro-tiles of 4 rows x 32 tokens (8 rows x 16 for a lone tile) keep 8 independent
//    accumulator chains: per block 8 vpdpbusd per chain and 3 other vector ops (cvt, scale, fma).
#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include "ops/int8_dot.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/isa/transpose8x8.h"
#include "ops/kernels_internal.h"
#include "ops/row_tiles.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int64_t kBlock = kInt8Block;
constexpr int64_t kPrefillMinT = 8;
constexpr int64_t kTileTokens = 16;
// One block of one token tile: codes [8 steps][16 tokens][4 bytes], d [16] f32, bias [16] int32.
constexpr int64_t kTileCodeBytes = 8 * kTileTokens * 4;
constexpr int64_t kTileBlockBytes = kTileCodeBytes + 2 * kTileTokens * 4;
constexpr int kPanelRows = 8;
// Panel of 8 unpacked rows on the stack: 576 blocks = 18432 columns (DeepSeek-V3's widest rows,
// 144 KiB); wider weights take the GEMV kernel at every T.
constexpr int64_t kMaxPanelGroups = 576;
constexpr int kGemvRows = 8;
constexpr int kGemvTokens = 4;
// The row-major GEMV prefetches this far ahead (whole row tiles, at least one): a DRAM latency's
// worth of one core's bandwidth with margin. One tile was too close for short rows (a 512-column
// q4_0 tile is 2 KB): matmul_bench 131072x512 T=1, mean of 6 interleaved runs, q4_0 1 thread 21.4
// -> 26.0, q8_0 2 threads 63.3 -> 79.8 GB/s; 16 KB was no better than 8.
constexpr int64_t kGemvAheadBytes = 8192;

template <DType D>
constexpr int32_t kWeightOffset = D == DType::kI8 ? 128 : 8;

template <DType D>
constexpr int64_t RowBytes(int64_t cols) {
  return D == DType::kI8 ? cols : (cols + 1) / 2;
}

int32_t LoadDword(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

bool UsePrefill(int64_t T, int64_t cols) {
  return T >= kPrefillMinT && QuantGroups(cols, kBlock) <= kMaxPanelGroups;
}

// ---- Activation quantisation ----

struct QuantizedBlock {
  __m256i codes;  // 32 int8 codes, natural column order
  float d;
  int32_t sum;
};

// x [n], n <= 32, as scalar::QuantizeActBlocks quantizes one block. Inlined: as a call it
// returned through memory and cleared the upper registers on every block.
[[gnu::always_inline]] inline QuantizedBlock QuantizeBlock(const float* x, int64_t n) {
  __m512 lo, hi;
  if (n == kBlock) {
    lo = _mm512_loadu_ps(x);
    hi = _mm512_loadu_ps(x + 16);
  } else {
    const __mmask16 m0 = static_cast<__mmask16>(n >= 16 ? 0xffffu : (1u << n) - 1u);
    const __mmask16 m1 = static_cast<__mmask16>(n <= 16 ? 0u : (1u << (n - 16)) - 1u);
    lo = _mm512_maskz_loadu_ps(m0, x);
    hi = _mm512_maskz_loadu_ps(m1, x + 16);
  }
  // max |x| on the bit patterns, as the scalar twin does (NaN > inf > finite).
  const __m512i abs_bits = _mm512_set1_epi32(0x7fffffff);
  const __m512i a = _mm512_max_epu32(_mm512_and_si512(_mm512_castps_si512(lo), abs_bits),
                                     _mm512_and_si512(_mm512_castps_si512(hi), abs_bits));
  const uint32_t amax_bits = _mm512_reduce_max_epu32(a);
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  QuantizedBlock out{_mm256_setzero_si256(), amax / 127.0f, 0};
  if (!(out.d > 0.0f && out.d <= std::numeric_limits<float>::max())) return out;
  // vdivps is correctly rounded and vcvtps2dq rounds to nearest even (the default MXCSR mode),
  // as std::nearbyint(x / d) does in the scalar twin.
  const __m512 d = _mm512_set1_ps(out.d);
  const __m512i lim = _mm512_set1_epi32(127), neg_lim = _mm512_set1_epi32(-127);
  __m512i q0 = _mm512_cvtps_epi32(_mm512_div_ps(lo, d));
  __m512i q1 = _mm512_cvtps_epi32(_mm512_div_ps(hi, d));
  q0 = _mm512_min_epi32(_mm512_max_epi32(q0, neg_lim), lim);
  q1 = _mm512_min_epi32(_mm512_max_epi32(q1, neg_lim), lim);
  out.sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
  out.codes = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(q0)),
                                      _mm512_cvtepi32_epi8(q1), 1);
  return out;
}

// Natural order -> the order q4_0 bytes unpack to: even columns 0, 2, .., 30, then odd 1, .., 31.
__m256i ToNibbleOrder(__m256i v) {
  const __m256i evens_then_odds =
      _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12,
                       14, 1, 3, 5, 7, 9, 11, 13, 15);
  v = _mm256_shuffle_epi8(v, evens_then_odds);                  // per 128-bit lane: evens, odds
  return _mm256_permute4x64_epi64(v, _MM_SHUFFLE(3, 1, 2, 0));  // evens of both lanes first
}

// GEMV layout: codes [T, groups * 32] (block order of the weights), d [T, groups],
// bias [T, groups] = -offset * sum.
template <DType D>
void QuantizeRowsLayout(const float* x, const int32_t* rows, int64_t T, int64_t cols,
                        uint8_t* buf) {
  const int64_t groups = QuantGroups(cols, kBlock);
  float* d = reinterpret_cast<float*>(buf + T * groups * kBlock);
  int32_t* bias = reinterpret_cast<int32_t*>(d + T * groups);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < groups; ++b) {
      const QuantizedBlock q =
          QuantizeBlock(ActRow(x, rows, t, cols) + b * kBlock, std::min(kBlock, cols - b * kBlock));
      const __m256i codes = D == DType::kU8 ? ToNibbleOrder(q.codes) : q.codes;
      _mm256_store_si256(reinterpret_cast<__m256i*>(buf + (t * groups + b) * kBlock), codes);
      d[t * groups + b] = q.d;
      bias[t * groups + b] = -kWeightOffset<D> * q.sum;
    }
  }
}

// Prefill layout: tiles of 16 tokens, tile k at buf + k * groups * kTileBlockBytes, block b of it
// at + b * kTileBlockBytes. Tokens past T are zero (codes, d and bias), so they compute zeros.
template <DType D>
void QuantizeTileLayout(const float* x, const int32_t* rows, int64_t T, int64_t cols,
                        uint8_t* buf) {
  const int64_t groups = QuantGroups(cols, kBlock);
  const int64_t tile_bytes = groups * kTileBlockBytes;
  const int64_t tiles = (T + kTileTokens - 1) / kTileTokens;
  if (T % kTileTokens != 0) std::memset(buf + (tiles - 1) * tile_bytes, 0, tile_bytes);
  // Per block, 8 tokens at a time: their codes (8 dwords each) are transposed to the 8 steps'
  // rows of those tokens, 32 bytes per step, instead of scattering each token's dwords.
  for (int64_t t0 = 0; t0 < T; t0 += 8) {
    const int64_t n = std::min<int64_t>(8, T - t0);
    uint8_t* tile = buf + (t0 / kTileTokens) * tile_bytes;
    const int64_t lane0 = t0 % kTileTokens;  // 0 or 8
    for (int64_t b = 0; b < groups; ++b) {
      uint8_t* block = tile + b * kTileBlockBytes;
      __m256 v[8];
      for (int64_t i = 0; i < 8; ++i) {
        if (i >= n) {
          v[i] = _mm256_setzero_ps();
          continue;
        }
        const QuantizedBlock q = QuantizeBlock(ActRow(x, rows, t0 + i, cols) + b * kBlock,
                                               std::min(kBlock, cols - b * kBlock));
        v[i] = _mm256_castsi256_ps(D == DType::kU8 ? ToNibbleOrder(q.codes) : q.codes);
        const int32_t bias = -kWeightOffset<D> * q.sum;
        std::memcpy(block + kTileCodeBytes + (lane0 + i) * 4, &q.d, 4);
        std::memcpy(block + kTileCodeBytes + kTileTokens * 4 + (lane0 + i) * 4, &bias, 4);
      }
      Transpose8x8(v);                          // v[s]: dword s of the 8 tokens
      for (int64_t step = 0; step < 8; ++step)  // block[step][lane0 .. lane0 + 7]
        _mm256_storeu_ps(reinterpret_cast<float*>(block + step * 64 + lane0 * 4), v[step]);
    }
  }
}

// ---- Weights as unsigned bytes ----

// A q4_0 block's 32 unsigned codes in nibble order from its 16 stored bytes: both halves hold
// the bytes, the high half shifted right by 4 brings the high nibbles down (bits crossing into a
// neighbour byte are masked off).
__m256i NibbleBlock(__m128i v) {
  const __m256i both =
      _mm256_srlv_epi32(_mm256_broadcastsi128_si256(v), _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// Block b of a row: 32 unsigned bytes (q8_0: code + 128, natural order; q4_0: nibbles in nibble
// order). kTail: the row's partial last block of n columns; bytes past the row are not read and
// give weight code 0 (x is 0 there too).
template <DType D, bool kTail>
__m256i LoadWeightBlock(const uint8_t* row, int64_t b, int64_t n) {
  if constexpr (D == DType::kI8) {
    const uint8_t* p = row + b * kBlock;
    const __m256i v = kTail ? _mm256_maskz_loadu_epi8((__mmask32{1} << n) - 1, p)
                            : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80)));
  } else {
    const uint8_t* p = row + b * (kBlock / 2);
    const __m128i v =
        kTail ? _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << ((n + 1) / 2)) - 1u), p)
              : _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return NibbleBlock(v);
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
  const float* d;        // [T, groups]
  const int32_t* bias;   // [T, groups]
  int64_t groups;
};

RowsActs ViewRowsLayout(const uint8_t* buf, int64_t T, int64_t groups) {
  const float* d = reinterpret_cast<const float*>(buf + T * groups * kBlock);
  return {buf, d, reinterpret_cast<const int32_t*>(d + T * groups), groups};
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
  const float* dx[NT];
  const int32_t* bias[NT];
  for (int t = 0; t < NT; ++t) {
    xq[t] = a.codes + (t0 + t) * groups * kBlock;  // q_x[t0 + t, :]
    dx[t] = a.d + (t0 + t) * groups;
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
      const __m256 s = _mm256_mul_ps(_mm256_set1_ps(dx[t][b]), dw);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), s, acc[t]);
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
      PrefetchAt(wrow[i], ahead + b * RowBytes<D>(kBlock));
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
      const __m512 dx2 = _mm512_permutexvar_ps(
          pair_index, _mm512_castps128_ps512(_mm_castsi128_ps(
                          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(dx[t] + b)))));
      const __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(SumLanes8x2(p), bias2));
      const __m512 sc = _mm512_mul_ps(dx2, dw);
      acc[t] = _mm256_fmadd_ps(_mm512_castps512_ps256(f), _mm512_castps512_ps256(sc), acc[t]);
      acc[t] = _mm256_fmadd_ps(_mm512_extractf32x8_ps(f, 1), _mm512_extractf32x8_ps(sc, 1), acc[t]);
    }
  }
  for (int64_t b = paired; b < full_groups; ++b) block(b, std::false_type{});
  if (full_groups < groups) block(full_groups, std::true_type{});
  const __mmask8 valid = static_cast<__mmask8>((1u << std::min<int64_t>(8, row_end - r0)) - 1u);
  for (int t = 0; t < NT; ++t) _mm256_mask_storeu_ps(y + (t0 + t) * w.rows + r0, valid, acc[t]);
}

// ---- GEMV on tiled rows (ops/row_tiles.h): 16 rows in the lanes ----

// Dwords of one row's block: q8_0 8 (32 codes), q4_0 4 (32 nibbles).
template <DType D>
constexpr int64_t kTileSteps = D == DType::kI8 ? 8 : 4;

// y[t0 + t, r] for t < NT and the rows r in [lo, hi) of tile `tile`. Per block, one 64-byte load
// per dword of the 16 rows (q8_0: codes + 128 by an xor; q4_0: split into low nibbles, against
// the token's even-column dword s, and high nibbles, against its odd-column dword 4 + s: x is in
// nibble order), and per token 8 vpdpbusd on broadcast activation dwords give the 16 rows' exact
// block dots in the lanes, summed in the same order as the twin.
// The weights kGemvAheadBytes on are prefetched into the L2 only: into the L1 as well (as GemvTile
// does) slowed the DRAM stream (one thread, 2 MiB pages, a bench-medium MoE layer's 8 experts a
// round from 64: 28.5-31.7 GB/s, 33.1-34.6 with no prefetch at all), while no prefetch at all
// slowed matrices that partly stay in the L3 (12288x7168). bench-medium q4_0 tg64, 2 threads, 6
// interleaved rounds: L1 108 tok/s median, none 116, L2 116; bench-small q4_0: 597, 563, 626.
template <DType D, int NT>
void GemvTile16(const RowsActs& a, int64_t t0, const WeightView& w, int64_t tile, int64_t lo,
                int64_t hi, float* y) {
  constexpr int64_t kSteps = kTileSteps<D>;
  const int64_t groups = a.groups;
  const uint8_t* base = static_cast<const uint8_t*>(w.data) + tile * kRowTile * RowBytes<D>(w.cols);
  const float* scale = w.scale + tile * kRowTile * groups;  // [groups][16]
  const uint8_t* xq[NT];
  const float* dx[NT];
  const int32_t* bias[NT];
  for (int t = 0; t < NT; ++t) {
    xq[t] = a.codes + (t0 + t) * groups * kBlock;
    dx[t] = a.d + (t0 + t) * groups;
    bias[t] = a.bias + (t0 + t) * groups;
  }
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  for (int64_t b = 0; b < groups; ++b) {
    const uint8_t* wb = base + b * kSteps * 64;
    for (int64_t s = 0; s < kSteps; ++s) PrefetchL2At(wb, kGemvAheadBytes + s * 64);
    __m512i wu[8];  // wu[s] pairs with the token's dword s of the block
    for (int64_t s = 0; s < kSteps; ++s) {
      const __m512i v = _mm512_loadu_si512(wb + s * 64);
      if constexpr (D == DType::kI8) {
        wu[s] = _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
      } else {
        wu[s] = _mm512_and_si512(v, low4);
        wu[s + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
      }
    }
    const __m512 dw = _mm512_loadu_ps(scale + b * kRowTile);  // d_w of the 16 rows, block b
    for (int t = 0; t < NT; ++t) {
      const uint8_t* xd = xq[t] + b * kBlock;
      __m512i s0 = _mm512_set1_epi32(bias[t][b]), s1 = _mm512_setzero_si512();
      for (int s = 0; s < 8; s += 2) {
        s0 = _mm512_dpbusd_epi32(s0, wu[s], _mm512_set1_epi32(LoadDword(xd + 4 * s)));
        s1 = _mm512_dpbusd_epi32(s1, wu[s + 1], _mm512_set1_epi32(LoadDword(xd + 4 * s + 4)));
      }
      const __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
      acc[t] = _mm512_fmadd_ps(f, _mm512_mul_ps(_mm512_set1_ps(dx[t][b]), dw), acc[t]);
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

template <DType D>
void GemvRows(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
              int64_t row_end, float* y) {
  const RowsActs a = ViewRowsLayout(buf, T, QuantGroups(w.cols, kBlock));
  int64_t r = row_begin;
  if (w.row_tiles != 0) {
    const int64_t tiled_end = std::min(row_end, w.rows / kRowTile * kRowTile);
    while (r < tiled_end) {
      const int64_t tile = r / kRowTile, hi = std::min(tiled_end, (tile + 1) * kRowTile);
      ForTokenRuns(T, [&](auto nt, int64_t t0) {
        GemvTile16<D, decltype(nt)::value>(a, t0, w, tile, r, hi, y);
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

// ---- Prefill: 16 tokens in the lanes ----

// Block b of tiled row r as LoadWeightBlock gives it: the row's dwords gathered from the tile.
template <DType D>
__m256i LoadTiledBlock(const WeightView& w, int64_t r, int64_t b) {
  const uint8_t* p = static_cast<const uint8_t*>(w.data) +
                     r / kRowTile * kRowTile * RowBytes<D>(w.cols) + b * kTileSteps<D> * 64 +
                     r % kRowTile * 4;
  const int* dwords = reinterpret_cast<const int*>(p);
  if constexpr (D == DType::kI8) {
    const __m256i v =
        _mm256_i32gather_epi32(dwords, _mm256_setr_epi32(0, 64, 128, 192, 256, 320, 384, 448), 1);
    return _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80)));
  } else {
    return NibbleBlock(_mm_i32gather_epi32(dwords, _mm_setr_epi32(0, 64, 128, 192), 1));
  }
}

// panel [groups][8 rows][32]: the rows' blocks as unsigned bytes, written in order (block-major)
// so the stores stream instead of striding across the panel.
template <DType D>
void PackPanel(const WeightView& w, const int64_t* rows, uint8_t* panel) {
  const int64_t groups = QuantGroups(w.cols, kBlock);
  const int64_t full_groups = w.cols / kBlock;
  const int64_t tiled_end = w.row_tiles != 0 ? w.rows / kRowTile * kRowTile : 0;
  const uint8_t* src[kPanelRows];
  for (int i = 0; i < kPanelRows; ++i)
    src[i] = static_cast<const uint8_t*>(w.data) + rows[i] * RowBytes<D>(w.cols);
  for (int64_t b = 0; b < full_groups; ++b) {
    for (int i = 0; i < kPanelRows; ++i) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(panel + (b * kPanelRows + i) * kBlock),
                         rows[i] < tiled_end ? LoadTiledBlock<D>(w, rows[i], b)
                                             : LoadWeightBlock<D, false>(src[i], b, kBlock));
    }
  }
  if (full_groups < groups) {
    for (int i = 0; i < kPanelRows; ++i) {
      _mm256_store_si256(
          reinterpret_cast<__m256i*>(panel + (full_groups * kPanelRows + i) * kBlock),
          LoadWeightBlock<D, true>(src[i], full_groups, w.cols - full_groups * kBlock));
    }
  }
}

// PackPanel for rows r0 .. r0 + 7 that are half a tile (r0 % 8 == 0, all tiled): per block the
// half's 32 bytes of each tile dword are an 8x8 dword matrix [dword][row], transposed to rows
// (q4_0: two blocks' 4 dwords per transpose).
template <DType D>
void PackTiledPanel(const WeightView& w, int64_t r0, uint8_t* panel) {
  const int64_t groups = w.cols / kBlock;
  const uint8_t* half = static_cast<const uint8_t*>(w.data) +
                        r0 / kRowTile * kRowTile * RowBytes<D>(w.cols) + r0 % kRowTile * 4;
  const auto load = [&](int64_t step) {  // dword `step` of the row (all blocks) for the 8 rows
    return _mm256_castsi256_ps(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + step * 64)));
  };
  const auto store = [&](int64_t b, int i, __m256i v) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(panel + (b * kPanelRows + i) * kBlock), v);
  };
  for (int64_t b = 0; b < groups; b += D == DType::kI8 ? 1 : 2) {
    __m256 v[8];
    if constexpr (D == DType::kI8) {
      for (int s = 0; s < 8; ++s) v[s] = load(b * 8 + s);
    } else {
      const bool pair = b + 1 < groups;
      for (int s = 0; s < 4; ++s) {
        v[s] = load(b * 4 + s);
        v[s + 4] = pair ? load((b + 1) * 4 + s) : _mm256_setzero_ps();
      }
    }
    Transpose8x8(v);  // v[i]: row i's dwords
    for (int i = 0; i < kPanelRows; ++i) {
      const __m256i row = _mm256_castps_si256(v[i]);
      if constexpr (D == DType::kI8) {
        store(b, i, _mm256_xor_si256(row, _mm256_set1_epi8(static_cast<char>(0x80))));
      } else {
        store(b, i, NibbleBlock(_mm256_castsi256_si128(row)));
        if (b + 1 < groups) store(b + 1, i, NibbleBlock(_mm256_extracti128_si256(row, 1)));
      }
    }
  }
}

// Rows r0 .. r0 + 3 (those below row_end) of 16 tokens from t0 on: acc[i] holds row i for the
// 16 tokens. A 4x4 transpose in each 128-bit lane gives every token its 4 rows, stored as 16
// contiguous bytes of y (scattering 16 tokens' strided outputs per row is far slower).
void StoreTokenTile(const __m512* acc, int64_t t0, int64_t T, const WeightView& w, int64_t r0,
                    int64_t row_end, float* y) {
  if (r0 >= row_end) return;
  const __m512 t01_lo = _mm512_unpacklo_ps(acc[0], acc[1]);  // per lane: r0 r1 of tokens 0, 1
  const __m512 t01_hi = _mm512_unpackhi_ps(acc[0], acc[1]);  // tokens 2, 3
  const __m512 t23_lo = _mm512_unpacklo_ps(acc[2], acc[3]);
  const __m512 t23_hi = _mm512_unpackhi_ps(acc[2], acc[3]);
  // by_token[k], 128-bit lane L: rows 0..3 of token 4 L + k
  const __m512 by_token[4] = {
      _mm512_shuffle_ps(t01_lo, t23_lo, 0x44), _mm512_shuffle_ps(t01_lo, t23_lo, 0xee),
      _mm512_shuffle_ps(t01_hi, t23_hi, 0x44), _mm512_shuffle_ps(t01_hi, t23_hi, 0xee)};
  const int64_t valid_rows = std::min<int64_t>(4, row_end - r0);
  const __mmask8 row_mask = static_cast<__mmask8>((1u << valid_rows) - 1u);
  const int64_t valid_tokens = std::min<int64_t>(kTileTokens, T - t0);
  alignas(64) float lanes[4][16];
  for (int k = 0; k < 4; ++k) _mm512_store_ps(lanes[k], by_token[k]);
  for (int64_t t = 0; t < valid_tokens; ++t) {
    float* out = y + (t0 + t) * w.rows + r0;  // y[t0 + t, r0 : r0 + valid_rows]
    const __m128 v = _mm_load_ps(&lanes[t % 4][(t / 4) * 4]);
    if (valid_rows == 4)
      _mm_storeu_ps(out, v);
    else
      _mm_mask_storeu_ps(out, row_mask, v);
  }
}

// y for MR rows of the panel from `first_row` on (r0 = the panel's first row) and the 16 * NV
// tokens of consecutive tiles from t0 on, over all blocks: MR x NV accumulator chains (8 either
// way: 4 rows x 32 tokens for full pairs of tiles, 8 rows x 16 tokens for a lone tile).
// prefetch[0 .. prefetch_rows): rows of the next panel, touched one cache line per block and row
// so the next PackPanel finds them in cache.
template <int MR, int NV>
void PrefillMicroTile(const uint8_t* panel, int first_row, const float* const* dw,
                      int64_t scale_stride, const uint8_t* tiles, int64_t tile_bytes,
                      int64_t groups, const uint8_t* const* prefetch, int prefetch_rows,
                      int64_t prefetch_stride, int64_t t0, int64_t T, const WeightView& w,
                      int64_t r0, int64_t row_end, float* y) {
  static_assert(MR % 4 == 0 && MR <= kPanelRows);
  __m512 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < groups; ++b) {
    for (int i = 0; i < prefetch_rows; ++i)
      _mm_prefetch(reinterpret_cast<const char*>(prefetch[i] + b * prefetch_stride), _MM_HINT_T0);
    const uint8_t* xb[NV];
    for (int j = 0; j < NV; ++j) xb[j] = tiles + j * tile_bytes + b * kTileBlockBytes;
    const uint8_t* pw = panel + (b * kPanelRows + first_row) * kBlock;  // [MR rows][32]
    __m512i isum[MR][NV];
    for (int j = 0; j < NV; ++j) {
      const __m512i bias = _mm512_load_si512(xb[j] + kTileCodeBytes + kTileTokens * 4);
      for (int i = 0; i < MR; ++i) isum[i][j] = bias;
    }
    for (int s = 0; s < 8; ++s) {
      __m512i xv[NV];
      for (int j = 0; j < NV; ++j) xv[j] = _mm512_load_si512(xb[j] + s * 64);
      for (int i = 0; i < MR; ++i) {
        const __m512i wv = _mm512_set1_epi32(LoadDword(pw + i * kBlock + s * 4));
        for (int j = 0; j < NV; ++j) isum[i][j] = _mm512_dpbusd_epi32(isum[i][j], wv, xv[j]);
      }
    }
    for (int j = 0; j < NV; ++j) {
      const __m512 dx = _mm512_load_ps(reinterpret_cast<const float*>(xb[j] + kTileCodeBytes));
      for (int i = 0; i < MR; ++i) {
        const __m512 s = _mm512_mul_ps(dx, _mm512_set1_ps(dw[first_row + i][b * scale_stride]));
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i][j]), s, acc[i][j]);
      }
    }
  }
  for (int j = 0; j < NV; ++j) {
    for (int i0 = 0; i0 < MR; i0 += 4) {
      const __m512 four_rows[4] = {acc[i0][j], acc[i0 + 1][j], acc[i0 + 2][j], acc[i0 + 3][j]};
      StoreTokenTile(four_rows, t0 + j * kTileTokens, T, w, r0 + first_row + i0, row_end, y);
    }
  }
}

template <DType D>
void PrefillRows(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                 int64_t row_end, float* y) {
  const int64_t groups = QuantGroups(w.cols, kBlock);
  const int64_t tile_bytes = groups * kTileBlockBytes;
  const int64_t tiles = (T + kTileTokens - 1) / kTileTokens;
  const uint8_t* data = static_cast<const uint8_t*>(w.data);
  alignas(64) uint8_t panel[kMaxPanelGroups * kPanelRows * kBlock];
  // Tiled panels that are not half a tile (a row range not on 8-row bounds): their scales
  // gathered row-major.
  alignas(64) float tiled_scales[kPanelRows * kMaxPanelGroups];
  const int64_t tiled_end = w.row_tiles != 0 ? std::min(row_end, w.rows / kRowTile * kRowTile) : 0;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kPanelRows) {
    int64_t rows[kPanelRows];
    const float* dw[kPanelRows];
    const uint8_t* next[kPanelRows];
    int64_t scale_stride = 1;  // dw[i][b * scale_stride] = d_w[row i, b]
    // Lines the next panel's PackPanel reads, one per block and entry of next[] (q8_0 has 32
    // bytes per row and block, q4_0 16; a tile's block is one line per dword of its 16 rows).
    int64_t next_count = r0 + kPanelRows < row_end ? kPanelRows : 0;
    int64_t stride = D == DType::kI8 ? kBlock : kBlock / 2;
    for (int i = 0; i < kPanelRows; ++i) {
      rows[i] = std::min(r0 + i, row_end - 1);
      dw[i] = w.scale + rows[i] * groups;  // d_w[row, :]
      next[i] = data + std::min(r0 + kPanelRows + i, row_end - 1) * RowBytes<D>(w.cols);
    }
    if (r0 % kPanelRows == 0 && r0 + kPanelRows <= tiled_end) {
      // Half a tile: scales [group][16] with this half's 8 at r0 % 16.
      const float* tile_scale = w.scale + r0 / kRowTile * kRowTile * groups + r0 % kRowTile;
      for (int i = 0; i < kPanelRows; ++i) dw[i] = tile_scale + i;
      scale_stride = kRowTile;
      PackTiledPanel<D>(w, r0, panel);
      // The tile's other half shares this half's lines; the next tile's are requested.
      const uint8_t* next_tile = data + (r0 / kRowTile + 1) * kRowTile * RowBytes<D>(w.cols);
      next_count =
          r0 % kRowTile != 0 && r0 + kPanelRows + kRowTile <= tiled_end ? kTileSteps<D> : 0;
      for (int64_t s = 0; s < kTileSteps<D>; ++s) next[s] = next_tile + s * 64;
      stride = kTileSteps<D> * 64;
    } else {
      if (r0 < tiled_end) {
        for (int i = 0; i < kPanelRows; ++i) {
          float* s = tiled_scales + i * kMaxPanelGroups;
          for (int64_t b = 0; b < groups; ++b) s[b] = GroupScale(w, rows[i], b);
          dw[i] = s;
        }
        next_count = 0;
      }
      PackPanel<D>(w, rows, panel);
    }
    // The next panel's lines are prefetched while this panel computes, spread over all its
    // micro-tile calls (call m takes entries [n m / calls, n (m + 1) / calls) of next[]), so the
    // next PackPanel reads from cache and the prefetches ask no more of the memory than it keeps
    // up with.
    const int64_t calls = tiles / 2 * 2 + tiles % 2;
    int64_t call = 0;
    const auto share = [&](const uint8_t* const** first) {
      const int64_t lo = next_count * call / calls, hi = next_count * (call + 1) / calls;
      ++call;
      *first = next + lo;
      return static_cast<int>(hi - lo);
    };
    const uint8_t* const* pf = next;
    int64_t k = 0;
    for (; k + 2 <= tiles; k += 2) {
      const uint8_t* x = buf + k * tile_bytes;
      const int64_t t0 = k * kTileTokens;
      int n = share(&pf);
      PrefillMicroTile<4, 2>(panel, 0, dw, scale_stride, x, tile_bytes, groups, pf, n, stride, t0,
                             T, w, r0, row_end, y);
      n = share(&pf);
      PrefillMicroTile<4, 2>(panel, 4, dw, scale_stride, x, tile_bytes, groups, pf, n, stride, t0,
                             T, w, r0, row_end, y);
    }
    if (k < tiles) {
      const int n = share(&pf);
      PrefillMicroTile<8, 1>(panel, 0, dw, scale_stride, buf + k * tile_bytes, tile_bytes, groups,
                             pf, n, stride, k * kTileTokens, T, w, r0, row_end, y);
    }
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

void QuantizeActsInt8(const float* x, const int32_t* rows, int64_t T, int64_t cols, DType wdtype,
                      uint8_t* buf) {
  const bool prefill = UsePrefill(T, cols);
  if (wdtype == DType::kI8) {
    prefill ? QuantizeTileLayout<DType::kI8>(x, rows, T, cols, buf)
            : QuantizeRowsLayout<DType::kI8>(x, rows, T, cols, buf);
  } else {
    prefill ? QuantizeTileLayout<DType::kU8>(x, rows, T, cols, buf)
            : QuantizeRowsLayout<DType::kU8>(x, rows, T, cols, buf);
  }
}

void MatMulRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y) {
  if (T <= 0 || row_begin >= row_end) return;
  const bool prefill = UsePrefill(T, w.cols);
  if (w.dtype == DType::kI8) {
    prefill ? PrefillRows<DType::kI8>(buf, T, w, row_begin, row_end, y)
            : GemvRows<DType::kI8>(buf, T, w, row_begin, row_end, y);
  } else {
    prefill ? PrefillRows<DType::kU8>(buf, T, w, row_begin, row_end, y)
            : GemvRows<DType::kU8>(buf, T, w, row_begin, row_end, y);
  }
}

}  // namespace dsv3::ops::avx512
