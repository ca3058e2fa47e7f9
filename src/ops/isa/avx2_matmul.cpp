// AVX2+FMA MatMul (compiled with -mavx2 -mfma -mf16c; reached only through ops/matmul.cpp's
// dispatch). Two forms, chosen by T only (never by the row range, so thread splits cannot change
// results):
// - T < kMinPackedT (FP8 pair tiles: kMinPackedFp8Tiles): dot-product form. A tile of kMr rows
//   x up to kNt tokens streams the weight rows once, converts 8 weights per load to f32 and keeps
//   8-lane partial dots in registers, reduced once per output (pair tiles: avx2_bf16_tiles.cpp).
// - T >= kMinPackedT (prefill): outer-product form, as the AVX-512 one. Blocks of W [kMc rows,
//   kKc cols] are converted to f32 (FP8 block scale applied, one rounding) and transposed into a
//   panel [kKc][16 rows]; blocks of x into [kKc][6 tokens]. The micro-kernel keeps 16 rows x 6
//   tokens of y in 12 registers: 12 FMAs per column against 2 panel loads and 6 broadcasts.
#include <algorithm>
#include <cstring>

#include "ops/bf16_tiles.h"
#include "ops/isa/avx2_fp8_f16.h"
#include "ops/isa/avx2_gemm_tile.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/isa/transpose8x8.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int kMr = 4;  // rows per tile
constexpr int kNt = 2;  // tokens per tile: 4 x 2 accumulators + x, w and 4 scales fit 16 ymm
// Token block: as many x rows as fit in ~256 KB of L2.
constexpr int64_t kTokenBlockBytes = 256 * 1024;
// Outer-product form from this many tokens (matmul_bench on Zen 5, avx2: at T = 16 the dot form
// is as fast or faster), panels of kStrip rows, kPackNt tokens per micro-kernel tile
// (ops/isa/avx2_gemm_tile.h).
constexpr int64_t kMinPackedT = 32;
// On FP8 pair tiles from 16: their dot form (avx2_bf16_tiles.cpp) decodes each line again for
// every pair of tokens. One thread, 512x2048 from the L2, packed form from 8 against the dot form,
// us (Zen 4): FP8 tiles T=8 383/332, 12 410/513, 16 526/541, 24 626/954; BF16 tiles T=8 372/265,
// 12 426/320, 16 450/501, 24 618/619, but bench-medium BF16 pp24 (DSV3_ISA=avx2, 2 threads) lost
// 12-15 % with packing from 16 (one window, 2 runs), so BF16 keeps 32. bench-medium FP8 under
// DSV3_ISA=avx2, runs alternating (busy host): pp16 65-88 -> 68-101 tok/s, pp24 82-97 -> 93-103.
constexpr int64_t kMinPackedFp8Tiles = 16;
constexpr int64_t kMc = 64;   // rows per packed block (four strips)
constexpr int64_t kTb = 192;  // tokens per x block (a multiple of kPackNt)
// e4m3 bits shifted into an f16 read as e4m3 * 2^-8 (see Fp8ToF32); the 2^8 is folded into the
// block scale, which stays exact because it is a power of two.
constexpr float kFp8Rescale = 256.0f;

template <DType D>
constexpr int64_t kBytes = D == DType::kF32      ? 4
                           : D == DType::kF8E4M3 ? 1
                                                 : 2;

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 8 weights starting at `p` as f32 (FP8: times 2^-8, unscaled).
template <DType D>
__m256 LoadWeights(const uint8_t* p) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  } else if constexpr (D == DType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else if constexpr (D == DType::kBF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return Fp8ToF32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
}

// n < 8 weights (zero beyond n) without reading past the end: AVX2 has no byte-masked loads.
template <DType D>
__m256 LoadWeightsTail(const uint8_t* p, int64_t n) {
  alignas(32) uint8_t buf[32] = {};
  std::memcpy(buf, p, static_cast<size_t>(n * kBytes<D>));
  return LoadWeights<D>(buf);
}

__m256 LoadTail(const float* p, int64_t n) {
  alignas(32) float buf[8] = {};
  std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(float));
  return _mm256_load_ps(buf);
}

template <DType D>
const uint8_t* RowPtr(const WeightView& w, int64_t r) {
  return static_cast<const uint8_t*>(w.data) + r * w.cols * kBytes<D>;
}

// Decode (one token) with FP8 weights: y[t0, r + i] for i < MR. Each column block's partial dot
// is scaled once (as the AVX-512 kernel does; DotTile's token pairs scale each weight, so a lone
// token of a larger T rounds slightly differently) and 16 weights are converted per step, half the
// instructions of DotTile's per-weight scaling (matmul_bench 12288x7168 T=1, 2 threads: 20-23 ->
// 26-31 GB/s).
template <int MR>
void DotTileFp8Decode(const float* x, int64_t t0, const WeightView& w, int64_t r, float* y) {
  const int64_t cols = w.cols, block_cols = w.block_cols;
  const int64_t scale_cols = (cols + block_cols - 1) / block_cols;
  const uint8_t* wrow[MR];
  const float* srow[MR];
  for (int i = 0; i < MR; ++i) {
    wrow[i] = RowPtr<DType::kF8E4M3>(w, r + i);
    srow[i] = w.scale + ((r + i) / w.block_rows) * scale_cols;
  }
  const float* xrow = x + t0 * cols;    // x[t0, :]
  const int64_t ahead = 2 * MR * cols;  // two tiles of rows on (rows lie back to back)
  __m256 acc[MR];
  for (int i = 0; i < MR; ++i) acc[i] = _mm256_setzero_ps();
  for (int64_t b0 = 0; b0 < cols; b0 += block_cols) {
    const int64_t b1 = std::min(cols, b0 + block_cols);
    __m256 part[MR];
    for (int i = 0; i < MR; ++i) part[i] = _mm256_setzero_ps();
    int64_t c = b0;
    for (; c + 16 <= b1; c += 16) {
      const __m256 x0 = _mm256_loadu_ps(xrow + c), x1 = _mm256_loadu_ps(xrow + c + 8);
      for (int i = 0; i < MR; ++i) {
        if (c % 64 == 0) PrefetchL2At(wrow[i], c + ahead);  // into the L2: see DotTile
        __m256 w0, w1;
        Fp8ToF32x2(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wrow[i] + c)), &w0, &w1);
        part[i] = _mm256_fmadd_ps(w0, x0, part[i]);
        part[i] = _mm256_fmadd_ps(w1, x1, part[i]);
      }
    }
    for (; c < b1; c += 8) {
      const int64_t n = std::min<int64_t>(8, b1 - c);
      const __m256 xv = n == 8 ? _mm256_loadu_ps(xrow + c) : LoadTail(xrow + c, n);
      for (int i = 0; i < MR; ++i) {
        const __m256 wv = n == 8 ? LoadWeights<DType::kF8E4M3>(wrow[i] + c)
                                 : LoadWeightsTail<DType::kF8E4M3>(wrow[i] + c, n);
        part[i] = _mm256_fmadd_ps(wv, xv, part[i]);
      }
    }
    for (int i = 0; i < MR; ++i) {
      const __m256 s = _mm256_set1_ps(srow[i][b0 / block_cols] * kFp8Rescale);
      acc[i] = _mm256_fmadd_ps(part[i], s, acc[i]);
    }
  }
  for (int i = 0; i < MR; ++i) y[t0 * w.rows + r + i] = HorizontalSum(acc[i]);
}

// y[t0 + j, r + i] for i < MR, j < NT. FP8: weights are multiplied by their block scale (one
// rounding) before the FMA, which needs fewer registers than per-block partial sums.
template <DType D, int MR, int NT>
void DotTile(const float* x, int64_t t0, const WeightView& w, int64_t r, float* y) {
  if constexpr (D == DType::kF8E4M3 && NT == 1) return DotTileFp8Decode<MR>(x, t0, w, r, y);
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
  const int64_t ahead = MR * cols * kBytes<D>;

  __m256 acc[MR][NT];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t b0 = 0; b0 < cols; b0 += block_cols) {
    const int64_t b1 = std::min(cols, b0 + block_cols);
    __m256 s[MR];
    if constexpr (kFp8) {
      for (int i = 0; i < MR; ++i) s[i] = _mm256_set1_ps(srow[i][b0 / block_cols] * kFp8Rescale);
    }
    int64_t c = b0;
    for (; c + 8 <= b1; c += 8) {
      __m256 xv[NT];
      for (int j = 0; j < NT; ++j) xv[j] = _mm256_loadu_ps(xrow[j] + c);
      for (int i = 0; i < MR; ++i) {
        // The same columns of the next tile's rows (rows lie back to back) are requested from
        // DRAM while this tile is summed: decoding (NT = 1) into the L2 only. A 6-row tile of
        // 2048 BF16 columns is 24 KB, most of the L1, and requested into it the lines evicted
        // others before their use. Row-major weights (`--load mmap`), tokens alternating in one
        // process, 4 runs: bench-medium BF16 tg32 39-43 % less time a token; FP8
        // (DotTileFp8Decode, two 4-row tiles on) 12-14 %.
        if constexpr (NT == 1)
          PrefetchL2At(wrow[i], c * kBytes<D> + ahead);
        else
          PrefetchAt(wrow[i], c * kBytes<D> + ahead);
        __m256 wv = LoadWeights<D>(wrow[i] + c * kBytes<D>);
        if constexpr (kFp8) wv = _mm256_mul_ps(wv, s[i]);
        for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
      }
    }
    if (c < b1) {
      __m256 xv[NT];
      for (int j = 0; j < NT; ++j) xv[j] = LoadTail(xrow[j] + c, b1 - c);
      for (int i = 0; i < MR; ++i) {
        __m256 wv = LoadWeightsTail<D>(wrow[i] + c * kBytes<D>, b1 - c);
        if constexpr (kFp8) wv = _mm256_mul_ps(wv, s[i]);
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

// ---- Outer-product form ----

// PackWeights (below) for BF16 in pair tiles: 8 rows' column pair (2 j, 2 j + 1) is one load of
// their dwords, whose low halves are column 2 j for the 8 rows and high halves column 2 j + 1, so
// no transpose. Rows not in an 8-row group of the tiles (a range off 8-row bounds, rows past the
// last tile) are copied out one by one (CopyTiledRow reads either layout).
void PackTiledBf16(const WeightView& w, int64_t r0, int64_t nrows, int64_t c0, int64_t kc,
                   float* panel) {
  const int64_t tiled = PairTiledRows(w);
  const int64_t padded = (nrows + kStrip - 1) / kStrip * kStrip;
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t first = 0; first < padded; first += 8) {
    float* dst = panel + (first / kStrip) * kc * kStrip + first % kStrip;
    const int64_t r = r0 + first, valid = std::clamp<int64_t>(nrows - first, 0, 8);
    if (valid == 8 && r % 8 == 0 && r + 8 <= tiled && c0 % 2 == 0) {
      // [pairs][32] dwords from column pair c0 / 2, these 8 rows' at offset 0
      const uint32_t* p =
          reinterpret_cast<const uint32_t*>(TilePairs(w, r / kBf16Tile, c0 / 2)) + r % kBf16Tile;
      for (int64_t cb = 0; cb < kc; cb += 2) {
        const __m256i v =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + (cb / 2) * kBf16Tile));
        _mm256_store_ps(dst + cb * kStrip, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
        if (cb + 1 < kc)
          _mm256_store_ps(dst + (cb + 1) * kStrip, _mm256_castsi256_ps(_mm256_and_si256(v, high)));
      }
      continue;
    }
    for (int64_t i = 0; i < 8; ++i) {
      uint16_t bits[kKc] = {};  // row r + i's columns [c0, c0 + kc), zero past nrows
      if (i < valid) CopyTiledRow(w, r + i, c0, kc, reinterpret_cast<uint8_t*>(bits));
      // The bf16 bits as the high half of an f32 (here, not util/dtype.h's inline Bf16ToF32: an
      // out-of-line copy of it compiled with AVX2 could be the one the linker keeps).
      for (int64_t cb = 0; cb < kc; ++cb) {
        const uint32_t u = static_cast<uint32_t>(bits[cb]) << 16;
        std::memcpy(&dst[cb * kStrip + i], &u, 4);
      }
    }
  }
}

// PackWeights (below) for FP8 in pair tiles: 8 rows' column pair is 16 bytes (row i's even and
// odd column at 2 i, 2 i + 1), shuffled into the 8 even then the 8 odd columns and converted as
// the row-major form converts them, then each row's block scale applied (the pair lies in one
// block: block_cols is even): the same panel values. Rows not in an 8-row group of the tiles are
// copied out one by one and converted as rows.
void PackTiledFp8(const WeightView& w, int64_t r0, int64_t nrows, int64_t c0, int64_t kc,
                  float* panel) {
  const int64_t tiled = PairTiledRows(w), bc = w.block_cols;
  const int64_t scale_cols = (w.cols + bc - 1) / bc;
  const int64_t padded = (nrows + kStrip - 1) / kStrip * kStrip;
  const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  for (int64_t first = 0; first < padded; first += 8) {
    float* dst = panel + (first / kStrip) * kc * kStrip + first % kStrip;
    const int64_t r = r0 + first, valid = std::clamp<int64_t>(nrows - first, 0, 8);
    const float* srow[8];  // each row's block scales
    for (int64_t i = 0; i < valid; ++i) srow[i] = w.scale + ((r + i) / w.block_rows) * scale_cols;
    const auto scales = [&](int64_t c) {  // row i's scale for column c * 2^8 in lane i
      alignas(32) float s[8] = {};
      for (int64_t i = 0; i < valid; ++i) s[i] = srow[i][c / bc] * kFp8Rescale;
      return _mm256_load_ps(s);
    };
    if (valid == 8 && r % 8 == 0 && r + 8 <= tiled && c0 % 2 == 0) {
      // [pairs][64] bytes from column pair c0 / 2, these 8 rows' at offset 0
      const uint8_t* p = TilePairs(w, r / kBf16Tile, c0 / 2) + r % kBf16Tile * 2;
      __m256 s = scales(c0);
      for (int64_t cb = 0; cb < kc; cb += 2) {
        if (cb > 0 && (c0 + cb) % bc == 0) s = scales(c0 + cb);
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + (cb / 2) * 64));
        __m256 even, odd;
        Fp8ToF32x2(_mm_shuffle_epi8(v, split), &even, &odd);
        _mm256_store_ps(dst + cb * kStrip, _mm256_mul_ps(even, s));
        if (cb + 1 < kc) _mm256_store_ps(dst + (cb + 1) * kStrip, _mm256_mul_ps(odd, s));
      }
      continue;
    }
    alignas(32) uint8_t bytes[8][kKc + 8] = {};  // the rows' columns [c0, c0 + kc), zero past nrows
    for (int64_t i = 0; i < valid; ++i) CopyTiledRow(w, r + i, c0, kc, bytes[i]);
    for (int64_t cb = 0; cb < kc; cb += 8) {
      const int64_t n = std::min<int64_t>(8, kc - cb);
      __m256 v[8];
      for (int64_t i = 0; i < 8; ++i) {
        v[i] = LoadWeights<DType::kF8E4M3>(bytes[i] + cb);
        if (i >= valid) continue;
        alignas(32) float s[8];  // each column's block scale
        for (int64_t l = 0; l < 8; ++l)
          s[l] = srow[i][(c0 + cb + std::min(l, n - 1)) / bc] * kFp8Rescale;
        v[i] = _mm256_mul_ps(v[i], _mm256_load_ps(s));
      }
      Transpose8x8(v);
      for (int64_t j = 0; j < n; ++j) _mm256_store_ps(dst + (cb + j) * kStrip, v[j]);
    }
  }
}

// panel: [ceil(nrows / 16)][kc][16] = W[r0 + row, c0 + c] dequantised (FP8: times its block
// scale, one rounding, as the dot form) and transposed; rows past nrows are zero.
template <DType D>
void PackWeights(const WeightView& w, int64_t r0, int64_t nrows, int64_t c0, int64_t kc,
                 float* panel) {
  if (D == DType::kBF16 && w.row_tiles != 0) return PackTiledBf16(w, r0, nrows, c0, kc, panel);
  if (D == DType::kF8E4M3 && w.row_tiles != 0) return PackTiledFp8(w, r0, nrows, c0, kc, panel);
  constexpr bool kFp8 = D == DType::kF8E4M3;
  const int64_t bc = kFp8 ? w.block_cols : 1;
  const int64_t scale_cols = kFp8 ? (w.cols + bc - 1) / bc : 0;
  // Whole strips: the zero rows of a last, partial strip are multiplied (and never stored).
  const int64_t padded = (nrows + kStrip - 1) / kStrip * kStrip;
  for (int64_t first = 0; first < padded; first += 8) {
    float* dst = panel + (first / kStrip) * kc * kStrip + first % kStrip;
    const int64_t valid = std::clamp<int64_t>(nrows - first, 0, 8);
    const uint8_t* wrow[8];
    const float* srow[8];
    for (int64_t i = 0; i < valid; ++i) {
      wrow[i] = RowPtr<D>(w, r0 + first + i);
      srow[i] = kFp8 ? w.scale + ((r0 + first + i) / w.block_rows) * scale_cols : nullptr;
    }
    for (int64_t cb = 0; cb < kc; cb += 8) {
      const int64_t n = std::min<int64_t>(8, kc - cb);
      const int64_t c = c0 + cb;
      __m256 v[8];
      for (int64_t i = 0; i < 8; ++i) {
        if (i >= valid) {
          v[i] = _mm256_setzero_ps();
          continue;
        }
        // The same columns 8 rows on, packed next (rows lie back to back).
        PrefetchAt(wrow[i], (8 * w.cols + c) * kBytes<D>);
        const uint8_t* p = wrow[i] + c * kBytes<D>;
        v[i] = n == 8 ? LoadWeights<D>(p) : LoadWeightsTail<D>(p, n);
        if constexpr (kFp8) {
          if (c / bc == (c + n - 1) / bc) {  // the usual case: all 8 columns in one block
            v[i] = _mm256_mul_ps(v[i], _mm256_set1_ps(srow[i][c / bc] * kFp8Rescale));
          } else {
            alignas(32) float s[8];  // each column's block scale
            for (int64_t l = 0; l < 8; ++l)
              s[l] = srow[i][(c + std::min(l, n - 1)) / bc] * kFp8Rescale;
            v[i] = _mm256_mul_ps(v[i], _mm256_load_ps(s));
          }
        }
      }
      Transpose8x8(v);
      for (int64_t j = 0; j < n; ++j) _mm256_store_ps(dst + (cb + j) * kStrip, v[j]);
    }
  }
}

template <DType D>
void MatMulPacked(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                  int64_t row_end, float* y) {
  // 64 KB + 192 KB of stack, as the AVX-512 form: no allocation on the hot path.
  alignas(32) float panel[kMc * kKc];
  alignas(32) float xpanel[kTb * kKc];
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
          for (int64_t t0 = 0; t0 < tbn; t0 += kPackNt) {
            const int64_t nt = std::min<int64_t>(kPackNt, tbn - t0);
            // y[tb0 + t0 .., mc0 + 16 s ..]
            kMicroKernels[nt - 1](panel + s * kc * kStrip, xpanel + (t0 / kPackNt) * kc * kPackNt,
                                  kc, y + (tb0 + t0) * w.rows + mc0 + s * kStrip, w.rows, valid,
                                  kc0 > 0);
          }
        }
      }
    }
  }
}

template <DType D>
void MatMulTyped(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                 float* y) {
  if (T >= (D == DType::kF8E4M3 && w.row_tiles != 0 ? kMinPackedFp8Tiles : kMinPackedT))
    return MatMulPacked<D>(x, T, w, row_begin, row_end, y);
  if ((D == DType::kBF16 || D == DType::kF8E4M3) && w.row_tiles != 0)
    return MatMulPairTiledRows(x, T, w, row_begin, row_end, y);
  const int64_t token_block =
      std::max<int64_t>(kNt, kTokenBlockBytes / (w.cols * static_cast<int64_t>(sizeof(float))));
  for (int64_t tb0 = 0; tb0 < T; tb0 += token_block) {
    const int64_t tb1 = std::min(T, tb0 + token_block);
    int64_t r = row_begin;
    // One token (decode), BF16/F16/F32 weights: tiles of 6 rows (the same per-row sums).
    // bench-medium BF16 tg64, tokens alternating with 4-row tiles in one process: 1.2-4.6 % less
    // time per token in 5 of 5 runs; 8 rows spilled (3-6 % slower); FP8 (DotTileFp8Decode, twice
    // the accumulators) unchanged with 6, so it keeps 4.
    if (T == 1 && D != DType::kF8E4M3)
      for (; r + 6 <= row_end; r += 6) DotTile<D, 6, 1>(x, tb0, w, r, y);
    // Token tiles innermost: the rows of a tile stay in cache while the block's tokens pass.
    for (; r + kMr <= row_end; r += kMr)
      for (int64_t t0 = tb0; t0 < tb1; t0 += kNt)
        DotTileTokens<D, kMr>(x, t0, std::min<int64_t>(kNt, tb1 - t0), w, r, y);
    for (; r < row_end; ++r)
      for (int64_t t0 = tb0; t0 < tb1; t0 += kNt)
        DotTileTokens<D, 1>(x, t0, std::min<int64_t>(kNt, tb1 - t0), w, r, y);
  }
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

}  // namespace dsv3::ops::avx2
