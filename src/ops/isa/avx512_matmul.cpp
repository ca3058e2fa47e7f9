// AVX-512 MatMul (compiled with AVX-512 flags; reached only through ops/matmul.cpp's dispatch).
//
// Two shapes of kernel, chosen by T only (never by the row range, so thread splits cannot change
// results; tiled BF16/FP8 weights, ops/bf16_tiles.h, take the bf16-dot form only for ranges
// starting on a tile, which every thread split's 64-row chunks do):
// - T < kMinPackedT (decode, small expert batches): dot-product form. A tile of rows x tokens
//   streams each weight row once, converting 16 weights per load to f32 and accumulating 16-lane
//   partial dots that are reduced at the end. Bandwidth-bound; the weights are touched exactly
//   once.
// - T >= kMinPackedT (prefill): outer-product form, as in BLAS. Blocks of W [kMc rows, kKc cols]
//   are converted to f32 (FP8 block scale applied) and transposed into a panel [kKc][32 rows];
//   blocks of x are transposed into [kKc][kNt tokens]. The micro-kernel keeps a 32-row x kNt-token
//   tile of y in 24 registers and does 2*kNt FMAs per column against 2 panel loads and kNt
//   broadcasts, so it runs near the FMA peak with the panel in L1/L2.
#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#include "ops/bf16_tiles.h"
#include "ops/isa/avx512_fp8_f16.h"
#include "ops/isa/avx512_gemm_tile.h"
#include "ops/isa/avx512_transpose16.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/kernels_internal.h"
#include "util/dtype.h"

namespace dsv3::ops::avx512 {

namespace {

// From this many tokens the packed form wins (measured on Zen 5, bench/matmul_bench): below it
// the cost of converting and transposing W into panels is not yet repaid. FP8 crosses earlier
// because its dot form pays the block-scale flushes per token tile.
template <DType D>
constexpr int64_t kMinPackedT = D == DType::kF8E4M3 ? 16 : 32;
constexpr int64_t kKc = 256;           // columns per packed block
constexpr int64_t kMc = 64;            // rows per packed block (two 32-row strips)
constexpr int64_t kStrip = kTileRows;  // rows per micro-kernel tile (two vectors)
constexpr int kNt = kTileTokens;       // tokens per micro-kernel tile
constexpr int64_t kTb = 192;           // tokens per x block (a multiple of kNt)
constexpr int kDirectNt = 3;           // tokens per dot-product tile
// e4m3 bits shifted into an f16 read as e4m3 * 2^-8 (see Fp8ToF32); the 2^8 is folded into the
// block scale, which stays exact because it is a power of two.
constexpr float kFp8Rescale = 256.0f;

__mmask16 TailMask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1u);
}

float ReduceAdd(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 weights W[row, c .. c+16) as f32 (FP8: times 2^-8, unscaled). `row` points at the row start.
template <DType D>
__m512 LoadWeights(const uint8_t* row, int64_t c) {
  if constexpr (D == DType::kF32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + c);
  } else if constexpr (D == DType::kF16) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * c)));
  } else if constexpr (D == DType::kBF16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * c));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return Fp8ToF32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c)));
  }
}

// As LoadWeights, lanes outside `m` zero; masked-off bytes are never read.
template <DType D>
__m512 LoadWeightsMasked(const uint8_t* row, int64_t c, __mmask16 m) {
  if constexpr (D == DType::kF32) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + c);
  } else if constexpr (D == DType::kF16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row + 2 * c));
  } else if constexpr (D == DType::kBF16) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, row + 2 * c);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    return Fp8ToF32(_mm_maskz_loadu_epi8(m, row + c));
  }
}

// Bytes of one stored weight (F32, F16/BF16, FP8).
template <DType D>
constexpr int64_t kWeightBytes = D == DType::kF32      ? 4
                                 : D == DType::kF8E4M3 ? 1
                                                       : 2;

template <DType D>
const uint8_t* RowPtr(const WeightView& w, int64_t r) {
  return static_cast<const uint8_t*>(w.data) + r * w.cols * kWeightBytes<D>;
}

// ---------------------------------------------------------------------------------------------
// Dot-product form (small T).

// y[t0 + j, r + i] for i < MR, j < NT. FP8: each column block's partial dot is scaled once.
// Requests into the cache as it goes: the same columns `ahead` bytes further on (two tiles of
// rows on), and its own rows' columns `own_ahead` bytes on (into the L1); 0 for none.
// Decoding (NT = 1) requests the lines two tiles on into the L2 only: two 8-row tiles are 32-128
// KB for 2048 columns (FP8 to F32), as much as the L1 or more, so into the L1 they evicted lines
// before their use. Row-major weights (`--load mmap`, which skips the tiling), tokens alternating
// in one process (4 runs, either role): bench-medium BF16 tg32 17-19 % less time a token, FP8
// 15-18 %; matmul_bench BM_GemvVsRead BF16 (weights untiled) 0.61-0.62 -> 0.85-0.86 of the read
// probe on 1 thread, 0.68-0.85 -> 0.93-0.98 on 2.
template <int NT>
inline void RequestTilesOn(const uint8_t* row, int64_t offset) {
  if constexpr (NT == 1)
    PrefetchL2At(row, offset);
  else
    PrefetchAt(row, offset);
}

template <DType D, int MR, int NT>
void DotTile(const float* x, int64_t t0, const WeightView& w, int64_t r, float* y, int64_t ahead,
             int64_t own_ahead) {
  constexpr bool kFp8 = D == DType::kF8E4M3;
  const int64_t cols = w.cols;
  const int64_t block_cols = kFp8 ? w.block_cols : cols;
  const int64_t scale_cols = kFp8 ? (cols + block_cols - 1) / block_cols : 0;
  const uint8_t* wrow[MR];
  const float* srow[MR];
  for (int i = 0; i < MR; ++i) {
    wrow[i] = RowPtr<D>(w, r + i);
    srow[i] = kFp8 ? w.scale + ((r + i) / w.block_rows) * scale_cols : nullptr;
  }
  const float* xrow[NT];
  for (int j = 0; j < NT; ++j) xrow[j] = x + (t0 + j) * cols;  // x[t0 + j, :]
  constexpr int64_t kBytes = kWeightBytes<D>;

  __m512 acc[MR][NT];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t b0 = 0; b0 < cols; b0 += block_cols) {
    const int64_t b1 = std::min(cols, b0 + block_cols);
    __m512 part[MR][NT];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NT; ++j) part[i][j] = _mm512_setzero_ps();
    int64_t c = b0;
    if constexpr (kFp8 && NT == 1) {
      // Decode: 32 FP8 weights per step, converted together and prefetched once per 64 bytes
      // (16 at a time, the FP8 GEMV was bound by its instruction count: matmul_bench
      // 12288x7168 T=1 44-45 -> 45-50 GB/s). Each lane adds its columns in the same order.
      // (The tiled kernels' line decoding, ops/isa/avx512_fp8_lines.h, with x permuted to the
      // lines' column order, was slower here: BM_Bf16Tiles FP8 row_major_us 512x2048 T=1 26-28
      // -> 33-34 us, 2048x2048 102-104 -> 132-136, T=4 64-74 -> 82-94, against this binary.)
      for (; c + 32 <= b1; c += 32) {
        const __m512 x0 = _mm512_loadu_ps(xrow[0] + c), x1 = _mm512_loadu_ps(xrow[0] + c + 16);
        for (int i = 0; i < MR; ++i) {
          if (c % 64 == 0) {
            if (ahead != 0) RequestTilesOn<NT>(wrow[i], c + ahead);
            if (own_ahead != 0) PrefetchAt(wrow[i], c + own_ahead);
          }
          __m512 w0, w1;
          Fp8ToF32x2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wrow[i] + c)), &w0, &w1);
          part[i][0] = _mm512_fmadd_ps(w0, x0, part[i][0]);
          part[i][0] = _mm512_fmadd_ps(w1, x1, part[i][0]);
        }
      }
    }
    for (; c + 16 <= b1; c += 16) {
      __m512 xv[NT];
      for (int j = 0; j < NT; ++j) xv[j] = _mm512_loadu_ps(xrow[j] + c);
      for (int i = 0; i < MR; ++i) {
        // The same columns two tiles ahead (rows lie back to back): DRAM requests for the next
        // tiles are in flight while this one is summed (two tiles measured a little better).
        if (ahead != 0) RequestTilesOn<NT>(wrow[i], c * kBytes + ahead);
        if (own_ahead != 0) PrefetchAt(wrow[i], c * kBytes + own_ahead);
        const __m512 wv = LoadWeights<D>(wrow[i], c);
        for (int j = 0; j < NT; ++j) part[i][j] = _mm512_fmadd_ps(wv, xv[j], part[i][j]);
      }
    }
    if (c < b1) {
      const __mmask16 m = TailMask(b1 - c);
      __m512 xv[NT];
      for (int j = 0; j < NT; ++j) xv[j] = _mm512_maskz_loadu_ps(m, xrow[j] + c);
      for (int i = 0; i < MR; ++i) {
        const __m512 wv = LoadWeightsMasked<D>(wrow[i], c, m);
        for (int j = 0; j < NT; ++j) part[i][j] = _mm512_fmadd_ps(wv, xv[j], part[i][j]);
      }
    }
    if constexpr (kFp8) {
      for (int i = 0; i < MR; ++i) {
        const __m512 s = _mm512_set1_ps(srow[i][b0 / block_cols] * kFp8Rescale);
        for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_fmadd_ps(part[i][j], s, acc[i][j]);
      }
    } else {
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NT; ++j) acc[i][j] = part[i][j];  // one block: the whole row
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NT; ++j) y[(t0 + j) * w.rows + r + i] = ReduceAdd(acc[i][j]);
}

template <DType D, int MR>
void DotTileTokens(const float* x, int64_t t0, int64_t nt, const WeightView& w, int64_t r,
                   float* y) {
  static_assert(kDirectNt == 3);
  const int64_t ahead = 2 * MR * w.cols * kWeightBytes<D>;
  switch (nt) {
    case 1:
      return DotTile<D, MR, 1>(x, t0, w, r, y, ahead, 0);
    case 2:
      return DotTile<D, MR, 2>(x, t0, w, r, y, ahead, 0);
    default:
      return DotTile<D, MR, 3>(x, t0, w, r, y, ahead, 0);
  }
}

template <DType D>
void MatMulDot(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
               float* y) {
  constexpr int kMr = 4;
  int64_t r = row_begin;
  // One token (decode): tiles of 8 rows, twice the independent accumulator chains and row
  // streams of a 4-row tile (each row's sums as before, so the same bits). bench-medium tg,
  // 2 threads, tokens alternating with 4-row tiles in one process: BF16 7-8 %, FP8 (its BF16
  // lm_head included) 8.6-11.5 % less time per token in 3 of 3 runs each; 12 rows was slower.
  if (T == 1) {
    const int64_t two_tiles = 2 * 8 * w.cols * kWeightBytes<D>;
    // The tile two on is requested only within the range (beyond it the rows are another
    // thread's, or no product's); the range's first two tiles, which no earlier tile requested,
    // request their own rows 1 KB ahead. bench-medium q4_0 decode, its BF16 router (64 x 2048, 32
    // rows a thread) timed in tokens alternating with the old requests: 11.3-12.8 -> 10.0-11.6 us
    // a layer, 0.4-1 % less time a token; BF16 level (+-0.4 %).
    constexpr int64_t kOwnAhead = 1024;
    for (; r + 8 <= row_end; r += 8) {
      const int64_t ahead = r + 24 <= row_end ? two_tiles : 0;
      const int64_t own = r < row_begin + 16 ? kOwnAhead : 0;
      DotTile<D, 8, 1>(x, 0, w, r, y, ahead, own);
    }
  }
  // Token tiles innermost: the few rows of a tile stay in cache while every token passes.
  for (; r + kMr <= row_end; r += kMr)
    for (int64_t t0 = 0; t0 < T; t0 += kDirectNt)
      DotTileTokens<D, kMr>(x, t0, std::min<int64_t>(kDirectNt, T - t0), w, r, y);
  for (; r < row_end; ++r)
    for (int64_t t0 = 0; t0 < T; t0 += kDirectNt)
      DotTileTokens<D, 1>(x, t0, std::min<int64_t>(kDirectNt, T - t0), w, r, y);
}

// ---------------------------------------------------------------------------------------------
// Outer-product form (larger T).

// panel: [ceil(nrows / 32)][kc][32] = W[r0 + row, c0 + c] dequantised (FP8: times its block
// scale, one rounding) and transposed; rows past nrows are zero.
template <DType D>
void PackWeights(const WeightView& w, int64_t r0, int64_t nrows, int64_t c0, int64_t kc,
                 float* panel) {
  constexpr bool kFp8 = D == DType::kF8E4M3;
  constexpr int64_t kBytes = kWeightBytes<D>;
  const int64_t bc = kFp8 ? w.block_cols : 1;
  const int64_t scale_cols = kFp8 ? (w.cols + bc - 1) / bc : 0;
  for (int64_t first = 0; first < nrows; first += 16) {
    float* dst = panel + (first / kStrip) * kc * kStrip + first % kStrip;
    const int64_t valid = std::min<int64_t>(nrows - first, 16);
    // Per-row pointers hoisted out of the column loop (no divisions per element).
    const uint8_t* wrow[16];
    const float* srow[16];
    for (int64_t i = 0; i < valid; ++i) {
      wrow[i] = RowPtr<D>(w, r0 + first + i);
      srow[i] = kFp8 ? w.scale + ((r0 + first + i) / w.block_rows) * scale_cols : nullptr;
    }
    for (int64_t cb = 0; cb < kc; cb += 16) {
      const int64_t n = std::min<int64_t>(16, kc - cb);
      const __mmask16 m = TailMask(n);
      const int64_t c = c0 + cb;
      // FP8: the block index of each of the 16 columns (usually all the same block).
      const int64_t blk0 = kFp8 ? c / bc : 0;
      const bool one_block = !kFp8 || blk0 == (c + n - 1) / bc;
      alignas(64) int32_t lane_block[16];
      if (!one_block)
        for (int64_t l = 0; l < 16; ++l)
          lane_block[l] = static_cast<int32_t>((c + std::min(l, n - 1)) / bc);
      __m512 v[16];
      for (int64_t i = 0; i < 16; ++i) {
        if (i >= valid) {
          v[i] = _mm512_setzero_ps();
          continue;
        }
        // The same columns 16 rows on, packed next (rows lie back to back): their DRAM reads
        // overlap this group's conversion instead of stalling the next one.
        PrefetchAt(wrow[i], (16 * w.cols + c) * kBytes);
        v[i] = n == 16 ? LoadWeights<D>(wrow[i], c) : LoadWeightsMasked<D>(wrow[i], c, m);
        if constexpr (kFp8) {
          const __m512 s = one_block
                               ? _mm512_set1_ps(srow[i][blk0])
                               : _mm512_i32gather_ps(_mm512_load_si512(lane_block), srow[i], 4);
          v[i] = _mm512_mul_ps(v[i], _mm512_mul_ps(s, _mm512_set1_ps(kFp8Rescale)));
        }
      }
      Transpose16x16(v);
      for (int64_t j = 0; j < n; ++j) _mm512_store_ps(dst + (cb + j) * kStrip, v[j]);
    }
  }
}

template <DType D>
void MatMulPacked(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                  int64_t row_end, float* y) {
  // 64 KB + 192 KB of stack: bounded, no allocation on the hot path, and kTb large enough that
  // re-packing W per token block stays a small part of prefill.
  alignas(64) float panel[kMc * kKc];
  alignas(64) float xpanel[kTb * kKc];
  const int64_t cols = w.cols;
  for (int64_t tb0 = 0; tb0 < T; tb0 += kTb) {
    const int64_t tbn = std::min(kTb, T - tb0);
    for (int64_t kc0 = 0; kc0 < cols; kc0 += kKc) {
      const int64_t kc = std::min(kKc, cols - kc0);
      PackTokens(x, cols, tb0, tbn, kc0, kc, xpanel);
      for (int64_t mc0 = row_begin; mc0 < row_end; mc0 += kMc) {
        const int64_t mn = std::min(kMc, row_end - mc0);
        PackWeights<D>(w, mc0, mn, kc0, kc, panel);
        for (int64_t s = 0; s * kStrip < mn; ++s) {
          const int64_t valid = std::min(kStrip, mn - s * kStrip);
          const __mmask16 m0 = TailMask(std::min<int64_t>(valid, 16));
          const __mmask16 m1 = TailMask(std::max<int64_t>(valid - 16, 0));
          for (int64_t t0 = 0; t0 < tbn; t0 += kNt) {
            const int64_t nt = std::min<int64_t>(kNt, tbn - t0);
            // y[tb0 + t0 .., mc0 + 32 s ..]
            kMicroKernelsF32[nt - 1](panel + s * kc * kStrip, xpanel + (t0 / kNt) * kc * kNt, kc,
                                     y + (tb0 + t0) * w.rows + mc0 + s * kStrip, w.rows, m0, m1,
                                     kc0 > 0);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Opt-in BF16 x BF16 form (KernelContext::bf16_dot): the outer-product form on column pairs.
// vdpbf16ps multiplies 16 lanes of bf16 pairs and adds both products to an f32 lane, so a panel
// lane holds W[r, c] and W[r, c+1] (the pair as it lies in memory) and x is broadcast as a pair.

constexpr int64_t kKcPairs = 256;  // column pairs per packed block (512 columns)
// From this many tokens the bf16-dot path runs packed (below it, the exact dot-product form):
// its packing is a 32-bit transpose with no conversion, so it pays off earlier than the f32 form
// (matmul_bench 512x2048: T = 8 196 vs 157 GFLOP/s, T = 4 90-112 vs 135-140).
constexpr int64_t kMinPackedBf16Dot = 8;

// 16 column pairs (W[r, c + 2p], W[r, c + 2p + 1]) of a row as bf16, one pair per 32-bit lane;
// columns past ncols (< 32) zero and unread. FP8: each e4m3 value becomes the bf16 of
// e4m3 * 2^-8, which is exact (e4m3 has 4 significant bits; bf16 has 8 and a wider exponent
// range); the block scale (times 2^8) is applied to each column block's sums by the micro-kernel.
// The bf16 is built from the byte's bits: a normal e4m3 (exponent e >= 1, mantissa m) is
// 2^(e - 7) * 1.m, so times 2^-8 its bf16 has exponent field e + 112 and mantissa m << 4, that is
// (byte & 0x7f) << 4 plus 112 << 7; a subnormal m * 2^-9 (zero at m = 0) is looked up in an
// 8-entry table; the sign is the byte's. The NaN codes 0x7F/0xFF give +-1.875 (480 * 2^-8), as
// Fp8ToF32 decodes them. Against Fp8ToF32 and a narrowing of its f32s (the same bits, 16 against
// ~8 operations per 32 weights), bench-medium FP8 --bf16-dot pp512, forwards alternating in one
// process: 2.6-3.5 % less time (a control run with both sides equal: -1.0 to +0.3 %). Now 5
// (the constant for each word looked up where the exponent is zero, one ternary-logic op):
// 2 threads from the L2/L3, 512x2048 T = 64 389-399 -> 349-358 us, 2048x512 345-384 -> 347-369,
// 2048x2048 T = 512 11.7-11.9 -> 11.3-11.9 ms; pp512 forwards alternating, either role (busy
// host, 4 runs of 4): 0.5 % more to 3.6 % less time, 1.3 % less on average.
template <DType D>
__m512 LoadBf16Pairs(const uint8_t* row, int64_t c, int64_t ncols) {
  const __mmask32 m = ncols >= 32 ? ~__mmask32{0} : (__mmask32{1} << ncols) - 1;
  if constexpr (D == DType::kBF16) {
    return _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(m, row + 2 * c));
  } else {
    const __m512i b = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, row + c));  // sign-extended
    // b << 4 holds the sign at bit 15 and the 7 exponent+mantissa bits at 10..4; (b << 4) &
    // 0x87f0 ^ c gives each word's bf16: c = 112 << 7 for a normal code (the exponent's + 112,
    // an xor as the bits are clear), and for a zero-exponent code m (0 .. 7, looked up by b's 5
    // low bits) c = (m << 4) ^ bf16(m * 2^-17), which clears m << 4 and puts the table's value.
    // words 0..7: (m << 4) ^ bf16 of m * 2^-17 (the subnormal m * 2^-9 times 2^-8)
    const __m512i fix = _mm512_setr_epi32(0x37100000, 0x37f037a0, 0x38703840, 0x38103820, 0, 0, 0,
                                          0, 0, 0, 0, 0, 0, 0, 0, 0);
    const __mmask32 exponent_zero = _mm512_testn_epi16_mask(b, _mm512_set1_epi16(0x78));
    const __m512i c =
        _mm512_mask_permutexvar_epi16(_mm512_set1_epi16(112 << 7), exponent_zero, b, fix);
    // (a & b) ^ c
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(
        _mm512_slli_epi16(b, 4), _mm512_set1_epi16(static_cast<short>(0x87f0)), c, 0x6A));
  }
}

// panel: [ceil(nrows / 32)][ceil(kc / 2)][32] pairs (W[r, c0 + 2p], W[r, c0 + 2p + 1]) as bf16
// (BF16 or FP8 weights, LoadBf16Pairs); c0 even.
template <DType D>
void PackWeightsPairs(const WeightView& w, int64_t r0, int64_t nrows, int64_t c0, int64_t kc,
                      uint32_t* panel) {
  constexpr int64_t kBytes = D == DType::kBF16 ? 2 : 1;
  const int64_t kp = (kc + 1) / 2;
  for (int64_t first = 0; first < nrows; first += 16) {
    uint32_t* dst = panel + (first / kStrip) * kp * kStrip + first % kStrip;
    const int64_t valid = std::min<int64_t>(nrows - first, 16);
    for (int64_t pb = 0; pb < kp; pb += 16) {
      const int64_t ncols = std::min<int64_t>(32, kc - 2 * pb);
      __m512 v[16];
      for (int64_t i = 0; i < 16; ++i) {
        if (i >= valid) {
          v[i] = _mm512_setzero_ps();
          continue;
        }
        const uint8_t* row = RowPtr<D>(w, r0 + first + i);
        // The same columns 16 rows on, packed next (as in PackWeights).
        PrefetchAt(row, (16 * w.cols + c0 + 2 * pb) * kBytes);
        v[i] = LoadBf16Pairs<D>(row, c0 + 2 * pb, ncols);
      }
      Transpose16x16(v);  // moves 32-bit pairs; the bits are never read as f32
      const int64_t np = std::min<int64_t>(16, kp - pb);
      for (int64_t p = 0; p < np; ++p)
        _mm512_store_si512(dst + (pb + p) * kStrip, _mm512_castps_si512(v[p]));
    }
  }
}

// xpanel: [ceil(nt / kNt)][ceil(kc / 2)][kNt] pairs of x rounded to bf16 (the odd tail padded 0)
// by vcvtne2ps2bf16: nearest even as F32ToBf16 rounds, NaN made quiet, and subnormal x (below
// 2^-126, whose products no f32 sum of this path would keep anyway) flushed to zero, where
// F32ToBf16 keeps them. One instruction per 32 values instead of ~20 integer operations: bench-
// medium FP8 --bf16-dot pp512, forwards alternating in one process, 0.2 % slower to 3.4 % faster
// in 5 runs (1.7 % on average; a control with both sides equal moved -1.0 to +0.3 %).
// Per group of kNt tokens, 16 pairs (32 columns) of each token are rounded and narrowed into one
// vector, and a 16x16 transpose turns them into 16 pair-columns of the group's tokens. Token t is
// row t of x, or row x_rows[t] where x_rows is given.
void PackXBf16(const float* x, const int32_t* x_rows, int64_t cols, int64_t t0, int64_t nt,
               int64_t c0, int64_t kc, uint32_t* xpanel) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t g = 0; g * kNt < nt; ++g) {
    const int64_t valid = std::min<int64_t>(kNt, nt - g * kNt);
    uint32_t* dst = xpanel + g * kp * kNt;
    const float* src[kNt];  // x[token t0 + g kNt + i, c0:c0 + kc]
    for (int64_t i = 0; i < valid; ++i) {
      const int64_t t = t0 + g * kNt + i;
      src[i] = x + (x_rows != nullptr ? int64_t{x_rows[t]} : t) * cols + c0;
    }
    for (int64_t pb = 0; pb < kp; pb += 16) {
      const int64_t ncols = std::min<int64_t>(32, kc - 2 * pb);
      const __mmask16 m0 = TailMask(ncols), m1 = TailMask(std::max<int64_t>(ncols - 16, 0));
      __m512 v[16];
      for (int64_t i = 0; i < 16; ++i) {
        if (i >= valid) {
          v[i] = _mm512_setzero_ps();
          continue;
        }
        const float* row = src[i] + 2 * pb;
        // vcvtne2ps2bf16: 32 floats to bf16 in column order (the second operand's 16 first), so
        // word 2p is the low half of pair p's dword (little-endian).
        v[i] = _mm512_castsi512_ps(reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(
            _mm512_maskz_loadu_ps(m1, row + 16), _mm512_maskz_loadu_ps(m0, row))));
      }
      Transpose16x16(v);  // moves 32-bit pairs; the bits are never read as f32
      const int64_t np = std::min<int64_t>(16, kp - pb);
      for (int64_t p = 0; p < np; ++p)
        _mm512_mask_storeu_epi32(dst + (pb + p) * kNt, TailMask(kNt), _mm512_castps_si512(v[p]));
    }
  }
}

// y[t0 + j, r:r + 32] (+)= the tile's sums over kp column pairs. scale: nullptr, or per-row
// multipliers of each block of block_pairs column pairs (32 floats a block: FP8 block scales)
// applied to the block's sums before they are added. Each block's scaled sums are added to those
// before it in order, y (when accumulating) first. prefetch[0 .. prefetch_count), count <= kp:
// lines requested into the L2, one per column pair.
// The same operations as one call per block, but the sums so far wait in `partial` (contiguous,
// in L1) between blocks instead of in y, whose token rows lie w.rows floats apart (8 KB for 2048
// rows: every line of the tile in the same two L1 sets). FP8 as one call per 128-column block had
// spent a quarter of its micro-kernel time adding to y (perf annotate, 2048x2048 T=512). The
// token loops are unrolled so the accumulators live in registers only (without, GCC also kept
// them on the stack, zeroing 24 of them there each block): bench-medium FP8 pp512 1.4-12 % less
// forward time in 5 runs alternating in one process, BF16 level.
template <int NT>
void MicroKernelBf16(const uint32_t* panel, const uint32_t* xpanel, int64_t kp, int64_t block_pairs,
                     float* y, int64_t ldy, __mmask16 m0, __mmask16 m1, bool accumulate,
                     const float* scale, const uint8_t* const* prefetch, int64_t prefetch_count) {
  alignas(64) float partial[NT][kStrip];
  // y's lines requested into the L2 now, for the adds and stores at the end (y's token rows
  // alias, so they are seldom still cached: the adds had waited on the L3). bench-medium pp512,
  // forwards alternating in one process (3 runs each): BF16 3.8-7.1 %, FP8 3.6-9.2 % less time;
  // into the L1 instead: slower than into the L2 in 4 of 4.
#pragma GCC unroll 16
  for (int j = 0; j < NT; ++j) {
    _mm_prefetch(reinterpret_cast<const char*>(y + j * ldy), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(y + j * ldy + 16), _MM_HINT_T1);
  }
  for (int64_t p0 = 0; p0 < kp; p0 += block_pairs) {
    const int64_t p1 = std::min(kp, p0 + block_pairs);
    __m512 acc[NT][2];
#pragma GCC unroll 16
    for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    for (int64_t p = p0; p < p1; ++p) {
      if (p < prefetch_count) _mm_prefetch(reinterpret_cast<const char*>(prefetch[p]), _MM_HINT_T1);
      // Unaligned loads: a tiled weight (ops/bf16_tiles.h) is its own panel, wherever it lies.
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(panel + p * kStrip);
      const __m512bh w1 = (__m512bh)_mm512_loadu_si512(panel + p * kStrip + 16);
      const uint32_t* xp = xpanel + p * kNt;
#pragma GCC unroll 16
      for (int j = 0; j < NT; ++j) {
        const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(xp[j]));
        acc[j][0] = _mm512_dpbf16_ps(acc[j][0], w0, b);
        acc[j][1] = _mm512_dpbf16_ps(acc[j][1], w1, b);
      }
    }
    if (scale != nullptr) {
      const float* s = scale + (p0 / block_pairs) * kStrip;
      const __m512 s0 = _mm512_load_ps(s), s1 = _mm512_load_ps(s + 16);
#pragma GCC unroll 16
      for (int j = 0; j < NT; ++j) {
        acc[j][0] = _mm512_mul_ps(acc[j][0], s0);
        acc[j][1] = _mm512_mul_ps(acc[j][1], s1);
      }
    }
    const bool first = p0 == 0, last = p1 == kp;
#pragma GCC unroll 16
    for (int j = 0; j < NT; ++j) {
      float* yj = y + j * ldy;  // y[t0 + j, r:r + 32]
      if (!first) {
        acc[j][0] = _mm512_add_ps(acc[j][0], _mm512_load_ps(partial[j]));
        acc[j][1] = _mm512_add_ps(acc[j][1], _mm512_load_ps(partial[j] + 16));
      } else if (accumulate) {
        acc[j][0] = _mm512_add_ps(acc[j][0], _mm512_maskz_loadu_ps(m0, yj));
        acc[j][1] = _mm512_add_ps(acc[j][1], _mm512_maskz_loadu_ps(m1, yj + 16));
      }
      if (last) {
        _mm512_mask_storeu_ps(yj, m0, acc[j][0]);
        _mm512_mask_storeu_ps(yj + 16, m1, acc[j][1]);
      } else {
        _mm512_store_ps(partial[j], acc[j][0]);
        _mm512_store_ps(partial[j] + 16, acc[j][1]);
      }
    }
  }
}

using MicroKernelBf16Fn = void (*)(const uint32_t*, const uint32_t*, int64_t, int64_t, float*,
                                   int64_t, __mmask16, __mmask16, bool, const float*,
                                   const uint8_t* const*, int64_t);

template <int... Ns>
constexpr auto MakeMicroKernelsBf16(std::integer_sequence<int, Ns...>) {
  return std::array<MicroKernelBf16Fn, sizeof...(Ns)>{&MicroKernelBf16<Ns + 1>...};
}
constexpr auto kMicroKernelsBf16 = MakeMicroKernelsBf16(std::make_integer_sequence<int, kNt>{});

// FP8 weights on this path: a packed block holds whole column blocks of the scale grid (each
// block's sums are scaled once), so the block width must be even (pairs never straddle two
// blocks) and fit; at most kMaxScaleBlocks of them a packed block.
constexpr int64_t kMaxScaleBlocks = 8;
bool Fp8PacksAsBf16(const WeightView& w) {
  return w.block_cols > 0 && w.block_cols % 2 == 0 && w.block_cols <= 2 * kKcPairs;
}

// The cache lines of W's rows [r0, r0 + rows), columns [c0, c0 + ncols) (the panel
// PackWeightsPairs packs from them), row by row; returns their count.
template <DType D>
int64_t PanelLines(const WeightView& w, int64_t r0, int64_t rows, int64_t c0, int64_t ncols,
                   const uint8_t** lines) {
  constexpr int64_t kBytes = D == DType::kBF16 ? 2 : 1;
  int64_t n = 0;
  for (int64_t r = r0; r < r0 + rows; ++r) {
    const uint8_t* first = RowPtr<D>(w, r) + c0 * kBytes;
    const uintptr_t end = reinterpret_cast<uintptr_t>(first + ncols * kBytes);
    for (uintptr_t line = reinterpret_cast<uintptr_t>(first) & ~uintptr_t{63}; line < end;
         line += 64)
      lines[n++] = reinterpret_cast<const uint8_t*>(line);
  }
  return n;
}

// The lines of a tiled weight's panel (ops/bf16_tiles.h): rows [r0, r0 + rows) (r0 on a tile),
// columns [c0, c0 + ncols) (c0 even), strip by strip; returns their count.
int64_t TiledPanelLines(const WeightView& w, int64_t r0, int64_t rows, int64_t c0, int64_t ncols,
                        const uint8_t** lines) {
  int64_t n = 0;
  for (int64_t r = r0; r < r0 + rows; r += kStrip) {
    const uint8_t* first = TilePairs(w, r / kBf16Tile, c0 / 2);
    const uintptr_t end =
        reinterpret_cast<uintptr_t>(TilePairs(w, r / kBf16Tile, (c0 + ncols) / 2));
    for (uintptr_t line = reinterpret_cast<uintptr_t>(first) & ~uintptr_t{63}; line < end;
         line += 64)
      lines[n++] = reinterpret_cast<const uint8_t*>(line);
  }
  return n;
}

// An FP8 weight's tiled rows [r0, r0 + nrows) (r0 on a tile), columns [c0, c0 + kc) (c0 and kc
// even) as the panel PackWeightsPairs makes: each pair step's 32 rows are 64 bytes in a row, so
// they convert (LoadBf16Pairs) with no transpose.
void PackTiledFp8(const WeightView& w, int64_t r0, int64_t nrows, int64_t c0, int64_t kc,
                  uint32_t* panel) {
  const int64_t kp = kc / 2;
  for (int64_t s = 0; s * kStrip < nrows; ++s) {
    const uint8_t* src = TilePairs(w, (r0 + s * kStrip) / kBf16Tile, c0 / 2);
    uint32_t* dst = panel + s * kp * kStrip;
    for (int64_t p = 0; p < kp; ++p) {
      const __m512 rows0 = LoadBf16Pairs<DType::kF8E4M3>(src + p * 64, 0, 32);
      const __m512 rows16 = LoadBf16Pairs<DType::kF8E4M3>(src + p * 64 + 32, 0, 32);
      _mm512_store_si512(dst + p * kStrip, _mm512_castps_si512(rows0));
      _mm512_store_si512(dst + p * kStrip + 16, _mm512_castps_si512(rows16));
    }
  }
}

// BF16 weights, or FP8 weights (Fp8PacksAsBf16) whose block scales multiply each column block's
// sums: y[t, r] = sum over blocks of scale[r / br, b] * 2^8 * sum_c bf16(e4m3 * 2^-8) * bf16(x).
// While a panel is multiplied, the micro-kernels request the lines of the next one (the next
// rows of the column block, else the first rows of the next block) into the L2, so packing reads
// them from there instead of waiting on DRAM. A prefill's MoE experts (a few dozen tokens each,
// their weights streamed from DRAM) had spent 38 % of their kernel time packing panels.
// bench-medium BF16 --bf16-dot pp512, forwards alternating with and without in one process (6
// runs): the experts' weight packing 26-29 % less time, their micro-kernels 0-3 % more, forwards
// 0.4-3.0 % faster in 5 of 6 runs (1.0 % slower in one).
template <DType D>
void MatMulPackedBf16(const float* x, const int32_t* x_rows, int64_t T, const WeightView& w,
                      int64_t row_begin, int64_t row_end, float* y) {
  constexpr bool kFp8 = D == DType::kF8E4M3;
  // Tiled rows [row_begin, tiled) are read in place (BF16) or converted with no transpose (FP8),
  // row_begin on a tile (MatMulRowsBf16Dot); rows past the last tile are packed as a row-major
  // weight's.
  const int64_t tiled = PairTiledRows(w);
  // 64 KB + 192 KB of stack, as MatMulPacked, and up to 8.5 KB of line addresses.
  alignas(64) uint32_t panel[kMc * kKcPairs];
  alignas(64) uint32_t xpanel[kTb * kKcPairs];
  alignas(64) float row_scale[kMaxScaleBlocks * kStrip];  // [block][row]
  // A row's columns of one block span at most kc * bytes / 64 + 1 lines.
  const uint8_t* next_lines[kMc * (2 * kKcPairs * (kFp8 ? 1 : 2) / 64 + 1)];
  const int64_t cols = w.cols;
  // FP8: whole column blocks, as many as fit (DeepSeek-V3's 128 columns: 4 a packed block; one
  // a packed block had run bench-medium FP8 pp512 8-11 % slower, forwards alternating in one
  // process).
  const int64_t kc_step =
      kFp8 ? w.block_cols * std::min(kMaxScaleBlocks, 2 * kKcPairs / w.block_cols) : 2 * kKcPairs;
  const int64_t scale_cols = kFp8 ? (cols + w.block_cols - 1) / w.block_cols : 0;
  for (int64_t tb0 = 0; tb0 < T; tb0 += kTb) {
    const int64_t tbn = std::min(kTb, T - tb0);
    for (int64_t kc0 = 0; kc0 < cols; kc0 += kc_step) {
      const int64_t kc = std::min(kc_step, cols - kc0);
      const int64_t kp = (kc + 1) / 2;
      PackXBf16(x, x_rows, cols, tb0, tbn, kc0, kc, xpanel);
      for (int64_t mc0 = row_begin, mn = 0; mc0 < row_end; mc0 += mn) {
        const bool in_tiles = mc0 < tiled;  // blocks never straddle the last tile's end
        mn = std::min(kMc, (in_tiles ? std::min(row_end, tiled) : row_end) - mc0);
        if (!in_tiles)
          PackWeightsPairs<D>(w, mc0, mn, kc0, kc, panel);
        else if (kFp8)
          PackTiledFp8(w, mc0, mn, kc0, kc, panel);
        int64_t next_r0 = mc0 + mn, next_c0 = kc0;
        if (next_r0 >= row_end) next_r0 = row_begin, next_c0 = kc0 + kc_step;
        const int64_t next_rows =
            std::min(kMc, (next_r0 < tiled ? std::min(row_end, tiled) : row_end) - next_r0);
        const int64_t next_cols = std::min(kc_step, cols - next_c0);
        const int64_t next_count =
            next_c0 >= cols ? 0
            : next_r0 < tiled
                ? TiledPanelLines(w, next_r0, next_rows, next_c0, next_cols, next_lines)
                : PanelLines<D>(w, next_r0, next_rows, next_c0, next_cols, next_lines);
        // Spread over the panel's micro-kernel calls, at most one line per column pair.
        const int64_t calls = ((mn + kStrip - 1) / kStrip) * ((tbn + kNt - 1) / kNt);
        const int64_t per_call = (next_count + calls - 1) / calls;
        int64_t requested = 0;
        for (int64_t s = 0; s * kStrip < mn; ++s) {
          const int64_t valid = std::min(kStrip, mn - s * kStrip);
          const __mmask16 m0 = TailMask(std::min<int64_t>(valid, 16));
          const __mmask16 m1 = TailMask(std::max<int64_t>(valid - 16, 0));
          if constexpr (kFp8) {
            // scale[r / br, c / bc] * 2^8 for the strip's rows r and the column blocks c of the
            // packed block, the block row stepped: one division a strip instead of two a row
            // (bench-medium FP8 --bf16-dot pp512, forwards alternating in one process: 3.3-5.3 %
            // less time).
            const int64_t first = mc0 + s * kStrip, blocks = (kc + w.block_cols - 1) / w.block_cols;
            const float* column = w.scale + kc0 / w.block_cols;
            int64_t block_row = first / w.block_rows, next = (block_row + 1) * w.block_rows;
            for (int64_t l = 0; l < kStrip; ++l) {
              if (first + l == next) ++block_row, next += w.block_rows;
              for (int64_t b = 0; b < blocks; ++b)
                row_scale[b * kStrip + l] =
                    l < valid ? column[block_row * scale_cols + b] * kFp8Rescale : 0.0f;
            }
          }
          for (int64_t t0 = 0; t0 < tbn; t0 += kNt) {
            const int64_t nt = std::min<int64_t>(kNt, tbn - t0);
            const int64_t pf = std::min({per_call, kp, next_count - requested});
            const uint32_t* strip = in_tiles && !kFp8
                                        ? reinterpret_cast<const uint32_t*>(
                                              TilePairs(w, (mc0 + s * kStrip) / kBf16Tile, kc0 / 2))
                                        : panel + s * kp * kStrip;
            kMicroKernelsBf16[nt - 1](
                strip, xpanel + (t0 / kNt) * kp * kNt, kp, kFp8 ? w.block_cols / 2 : kp,
                y + (tb0 + t0) * w.rows + mc0 + s * kStrip, w.rows, m0, m1, kc0 > 0,
                kFp8 ? row_scale : nullptr, next_lines + requested, pf);
            requested += pf;
          }
        }
      }
    }
  }
}

template <DType D>
void MatMulTyped(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                 float* y) {
  if ((D == DType::kBF16 || D == DType::kF8E4M3) && w.row_tiles != 0)
    MatMulPairTiledRows(x, T, w, row_begin, row_end, y);
  else if (T < kMinPackedT<D>)
    MatMulDot<D>(x, T, w, row_begin, row_end, y);
  else
    MatMulPacked<D>(x, T, w, row_begin, row_end, y);
}

}  // namespace

void MatMulRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                float* y) {
  if (w.cols == 0) {
    for (int64_t t = 0; t < T; ++t)
      std::fill(y + t * w.rows + row_begin, y + t * w.rows + row_end, 0.0f);
    return;
  }
  switch (w.dtype) {
    case DType::kF32:
      return MatMulTyped<DType::kF32>(x, T, w, row_begin, row_end, y);
    case DType::kF16:
      return MatMulTyped<DType::kF16>(x, T, w, row_begin, row_end, y);
    case DType::kBF16:
      return MatMulTyped<DType::kBF16>(x, T, w, row_begin, row_end, y);
    case DType::kF8E4M3:
      return MatMulTyped<DType::kF8E4M3>(x, T, w, row_begin, row_end, y);
    default:
      return scalar::MatMulRows(x, T, w, row_begin, row_end, y);  // fills NaN
  }
}

namespace {

// A row range of a tiled weight that does not start on a tile: the bf16-dot path reads tiles from
// their first row only, so it takes the exact path (no caller cuts one: MatMul and MatMulBatch
// cut at 64 rows).
bool OffTile(const WeightView& w, int64_t row_begin) {
  return row_begin < PairTiledRows(w) && row_begin % kBf16Tile != 0;
}

void PackedBf16Dot(const float* x, const int32_t* x_rows, int64_t T, const WeightView& w,
                   int64_t row_begin, int64_t row_end, float* y) {
  if (w.dtype == DType::kBF16)
    return MatMulPackedBf16<DType::kBF16>(x, x_rows, T, w, row_begin, row_end, y);
  MatMulPackedBf16<DType::kF8E4M3>(x, x_rows, T, w, row_begin, row_end, y);
}

}  // namespace

bool Bf16DotReadsRows(const WeightView& w, int64_t T) {
  return w.cols > 0 && T >= kMinPackedBf16Dot &&
         (w.dtype == DType::kBF16 || (w.dtype == DType::kF8E4M3 && Fp8PacksAsBf16(w)));
}

void MatMulRowsBf16Dot(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                       int64_t row_end, float* y) {
  if (!Bf16DotReadsRows(w, T) || OffTile(w, row_begin))
    return MatMulRows(x, T, w, row_begin, row_end, y);
  PackedBf16Dot(x, nullptr, T, w, row_begin, row_end, y);
}

void MatMulRowsBf16DotRows(const float* x, const int32_t* x_rows, int64_t T, const WeightView& w,
                           int64_t row_begin, int64_t row_end, float* y) {
  if (OffTile(w, row_begin)) {
    std::vector<float> gathered(static_cast<size_t>(T * w.cols));
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(x + int64_t{x_rows[t]} * w.cols, w.cols, gathered.begin() + t * w.cols);
    return MatMulRows(gathered.data(), T, w, row_begin, row_end, y);
  }
  PackedBf16Dot(x, x_rows, T, w, row_begin, row_end, y);
}

}  // namespace dsv3::ops::avx512
