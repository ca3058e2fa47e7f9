// AVX-512 VNNI int8 prefill: 16 tokens in the lanes of a zmm (the file header of
// avx512_int8_matmul.cpp has the arithmetic; ops/int8_dot.h the reference it reproduces).
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "ops/isa/avx512_int8_blocks.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/isa/transpose8x8.h"
#include "ops/kernels_internal.h"
#include "ops/row_tiles.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int64_t kTileTokens = 16;
// One block of one token tile: codes [8 steps][16 tokens][4 bytes], log2 d [16] f32 (d is a power
// of two: Int8ActScale), bias [16] int32.
constexpr int64_t kTileCodeBytes = 8 * kTileTokens * 4;
constexpr int64_t kTileBlockBytes = kTileCodeBytes + 2 * kTileTokens * 4;
constexpr int kPanelRows = 8;
// q4_0 tile halves feeding at most this many token tiles are read in place (the nibbles split in
// registers); more token tiles amortize an unpacked copy better. One core, 512x2048: in place
// +0.5-5 % at T = 16..64, -2-3 % at 128 and 512; bench-medium q4_0 pp512 faster in 4 of 6
// interleaved runs, pp128 in 6 of 8.
constexpr int64_t kNibblesMaxTiles = 4;

// Prefill layout: tiles of 16 tokens, tile k at buf + k * groups * kTileBlockBytes, block b of it
// at + b * kTileBlockBytes. Tokens past T are zero (codes, log2 d and bias): their lanes compute
// 0, never stored. Codes are signed, with the bias the unsigned weights owe (-offset * sum).
template <DType D>
void QuantizeTileLayout(const ActSource& a, int64_t T, int64_t cols, uint8_t* buf) {
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
        const QuantizedBlock q = ActBlock(a, t0 + i, b, cols);
        // q4_0 codes in nibble order, q8_0 in column order.
        v[i] = _mm256_castsi256_ps(D == DType::kU8 ? ToNibbleOrder(q.codes) : q.codes);
        const int32_t bias = -kWeightOffset<D> * q.sum;
        const float log2_d = ScaleExponent(q.d);
        std::memcpy(block + kTileCodeBytes + (lane0 + i) * 4, &log2_d, 4);
        std::memcpy(block + kTileCodeBytes + kTileTokens * 4 + (lane0 + i) * 4, &bias, 4);
      }
      Transpose8x8(v);                          // v[s]: dword s of the 8 tokens
      for (int64_t step = 0; step < 8; ++step)  // block[step][lane0 .. lane0 + 7]
        _mm256_storeu_ps(reinterpret_cast<float*>(block + step * 64 + lane0 * 4), v[step]);
    }
  }
}

// ---- Prefill: 16 tokens in the lanes ----
//
// The micro-kernel reads weights as [block][8 steps][rows][4 bytes] with a step stride of 32
// bytes (a panel of 8 rows packed on the stack) or 64 (rows read in place from their tile, whose
// steps hold 16 rows; q4_0's 4 steps of packed nibbles, split with an and and a shift). Weights
// are unsigned, as in the GEMV: q8_0 codes + 128 (packed so in a panel; read in place, each
// broadcast dword xored with 0x80), q4_0 nibbles (code + 8); x keeps its signed codes and its
// per-token bias (-offset * sum) starts each block's accumulators. With x unsigned instead (q8_0
// read as stored), each panel first summed its rows' codes per block for a per-row bias: that
// pass read the panel's weights cold (7 % of the kernel's samples at 64 tokens), where the xor
// runs beside vpdpbusd. One core, tiled q8_0 at T = 64, both kernels alternating in one process
// (x laid out once): 128x512 2-4 % less time, 2048x2048 4-5 %, 2048x512 -1 to 4 % (2 runs).

template <int64_t kStride>
constexpr int64_t kBlockStride = 8 * kStride;  // bytes of one block of a weight panel

// Block b of tiled row r as LoadWeightBlock gives it: the row's dwords gathered from the tile.
template <DType D>
__m256i LoadTiledBlock(const WeightView& w, int64_t r, int64_t b) {
  const uint8_t* p = static_cast<const uint8_t*>(w.data) +
                     r / kRowTile * kRowTile * RowBytes<D>(w.cols) + b * kTileSteps<D> * 64 +
                     r % kRowTile * 4;
  const int* dwords = reinterpret_cast<const int*>(p);
  if constexpr (D == DType::kI8) {
    return _mm256_xor_si256(
        _mm256_i32gather_epi32(dwords, _mm256_setr_epi32(0, 64, 128, 192, 256, 320, 384, 448), 1),
        _mm256_set1_epi8(static_cast<char>(0x80)));
  } else {
    return NibbleBlock(_mm_i32gather_epi32(dwords, _mm_setr_epi32(0, 64, 128, 192), 1));
  }
}

// panel [groups][8 steps][8 rows][4] for any 8 rows: per block the rows' 8 dwords transposed to
// steps. The general path: row ranges off 8-row bounds, untiled weights, rows past the tiles.
template <DType D>
void PackPanel(const WeightView& w, const int64_t* rows, uint8_t* panel) {
  const int64_t groups = QuantGroups(w.cols, kBlock);
  const int64_t full_groups = w.cols / kBlock;
  const int64_t tiled_end = w.row_tiles != 0 ? w.rows / kRowTile * kRowTile : 0;
  const uint8_t* src[kPanelRows];
  for (int i = 0; i < kPanelRows; ++i)
    src[i] = static_cast<const uint8_t*>(w.data) + rows[i] * RowBytes<D>(w.cols);
  for (int64_t b = 0; b < groups; ++b) {
    __m256 v[8];
    for (int i = 0; i < kPanelRows; ++i) {
      const __m256i block = rows[i] < tiled_end ? LoadTiledBlock<D>(w, rows[i], b)
                            : b < full_groups
                                ? LoadWeightBlock<D, false>(src[i], b, kBlock)
                                : LoadWeightBlock<D, true>(src[i], b, w.cols - b * kBlock);
      v[i] = _mm256_castsi256_ps(block);
    }
    Transpose8x8(v);  // v[s]: dword s of the 8 rows
    for (int s = 0; s < 8; ++s)
      _mm256_store_ps(reinterpret_cast<float*>(panel + b * kBlockStride<32> + s * 32), v[s]);
  }
}

// q4_0 rows r0 .. r0 + 7, half a tile (r0 % 8 == 0, all tiled): the tile's step s (this half's
// 32 bytes) unpacks to steps s (low nibbles) and s + 4 (high nibbles) of the panel, the order
// NibbleBlock gives a row.
void UnpackTiledHalf(const WeightView& w, int64_t r0, uint8_t* panel) {
  const int64_t groups = w.cols / kBlock;
  const uint8_t* half = static_cast<const uint8_t*>(w.data) +
                        r0 / kRowTile * kRowTile * RowBytes<DType::kU8>(w.cols) + r0 % kRowTile * 4;
  const __m256i low = _mm256_set1_epi8(0x0f);
  for (int64_t b = 0; b < groups; ++b) {
    for (int s = 0; s < 4; ++s) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(half + (b * 4 + s) * 64));
      uint8_t* out = panel + b * kBlockStride<32> + s * 32;
      _mm256_store_si256(reinterpret_cast<__m256i*>(out), _mm256_and_si256(v, low));
      _mm256_store_si256(reinterpret_cast<__m256i*>(out + 4 * 32),
                         _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
    }
  }
}

// Rows r0 .. r0 + 3 (those below row_end) of 16 tokens from t0 on: acc[i] holds row i for the
// 16 tokens. A 4x4 transpose in each 128-bit lane gives every token its 4 rows, stored as 16
// contiguous bytes of y (scattering 16 tokens' strided outputs per row is far slower). Inlined:
// as a call, the micro-tile spilled its accumulators to pass them and cleared the upper
// registers; bench-medium's MoE at pp512 (BM_MoePrefill), calls alternating in one process
// between both, the down projections took 1.4-2.7 % less time (3 of 3 shapes).
[[gnu::always_inline]] inline void StoreTokenTile(const __m512* acc, int64_t t0, int64_t T,
                                                  const WeightView& w, int64_t r0, int64_t row_end,
                                                  float* y) {
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
  if (valid_rows == 4 && T - t0 >= kTileTokens) {
    // A whole tile: each token's 4 rows stored straight from their 128-bit lane (vextractf32x4
    // to memory). Through the stack array below, bench-medium's down_proj shape (2048 x 512,
    // 64 tokens, one core) took 3-5 % longer in 3 of 3 alternating runs.
    float* out = y + t0 * w.rows + r0;  // y[t0 + 4 L + k, r0 : r0 + 4] from lane L of by_token[k]
    const int64_t ld = w.rows;
    for (int k = 0; k < 4; ++k) {
      _mm_storeu_ps(out + k * ld, _mm512_castps512_ps128(by_token[k]));
      _mm_storeu_ps(out + (4 + k) * ld, _mm512_extractf32x4_ps(by_token[k], 1));
      _mm_storeu_ps(out + (8 + k) * ld, _mm512_extractf32x4_ps(by_token[k], 2));
      _mm_storeu_ps(out + (12 + k) * ld, _mm512_extractf32x4_ps(by_token[k], 3));
    }
    return;
  }
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

// The weights of one panel of 8 rows as the micro-kernel reads them.
struct Panel {
  const uint8_t* w;  // block 0, step 0, row 0: [groups][8 steps][rows][4] (step stride)
  const float* dw[kPanelRows];
  int64_t scale_stride;  // dw[i][b * scale_stride] = d_w[row i, b]
};

// y for MR rows of the panel from `first_row` on (r0 = the panel's first row) and the 16 * NV
// tokens of consecutive tiles from t0 on, over all blocks: MR x NV accumulator chains (8 either
// way: 4 rows x 32 tokens for full pairs of tiles, 8 rows x 16 tokens for a lone tile).
// prefetch[0 .. prefetch_rows): lines of the next panel, touched one per block and entry so the
// next panel finds its weights in cache.
template <DType D, int64_t kStride, int MR, int NV>
[[gnu::noinline]] void PrefillMicroTile(const Panel& p, int first_row, const uint8_t* tiles,
                                        int64_t tile_bytes, int64_t groups,
                                        const uint8_t* const* prefetch, int prefetch_rows,
                                        int64_t prefetch_stride, int64_t t0, int64_t T,
                                        const WeightView& w, int64_t r0, int64_t row_end,
                                        float* y) {
  static_assert(MR % 4 == 0 && MR <= kPanelRows);
  constexpr bool kNibbles = D == DType::kU8 && kStride == 64;
  constexpr bool kSignedCodes = D == DType::kI8 && kStride == 64;  // q8_0 read in place
  __m512 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < groups; ++b) {
    for (int i = 0; i < prefetch_rows; ++i)
      _mm_prefetch(reinterpret_cast<const char*>(prefetch[i] + b * prefetch_stride), _MM_HINT_T0);
    const uint8_t* xb[NV];
    for (int j = 0; j < NV; ++j) xb[j] = tiles + j * tile_bytes + b * kTileBlockBytes;
    // kNibbles (q4_0 in its tile): [4 steps][MR rows][4 packed bytes]; else [8 steps][MR rows][4]
    const uint8_t* pw = p.w + b * (kNibbles ? 4 * kStride : kBlockStride<kStride>)+first_row * 4;
    __m512i isum[MR][NV];
    for (int j = 0; j < NV; ++j) {
      const __m512i bias = _mm512_load_si512(xb[j] + kTileCodeBytes + kTileTokens * 4);
      for (int i = 0; i < MR; ++i) isum[i][j] = bias;
    }
    if constexpr (kNibbles) {
      // Tile step s holds, per row, the nibbles x's steps s (low) and s + 4 (high) pair with. The
      // high nibbles are used in place as 16 x their value (an and, no shift): odd collects 16 x
      // their dots (below 2^19), exact multiples of 16, shifted back once per block. Against a
      // shift per row and step: one core, 512 x 2048 q4_0 at T = 32 and 64, calls alternating in
      // one process, 1-5 % faster in 5 of 6 runs (2048 x 512 level).
      const __m512i low4 = _mm512_set1_epi8(0x0f);
      const __m512i high4 = _mm512_set1_epi8(static_cast<char>(0xf0));
      __m512i odd[MR][NV];
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j) odd[i][j] = _mm512_setzero_si512();
      for (int s = 0; s < 4; ++s) {
        __m512i xlo[NV], xhi[NV];
        for (int j = 0; j < NV; ++j) {
          xlo[j] = _mm512_load_si512(xb[j] + s * 64);
          xhi[j] = _mm512_load_si512(xb[j] + (s + 4) * 64);
        }
        for (int i = 0; i < MR; ++i) {
          const __m512i packed = _mm512_set1_epi32(LoadDword(pw + s * kStride + i * 4));
          const __m512i lo = _mm512_and_si512(packed, low4);
          const __m512i hi = _mm512_and_si512(packed, high4);
          for (int j = 0; j < NV; ++j) {
            isum[i][j] = _mm512_dpbusd_epi32(isum[i][j], lo, xlo[j]);
            odd[i][j] = _mm512_dpbusd_epi32(odd[i][j], hi, xhi[j]);
          }
        }
      }
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j)
          isum[i][j] = _mm512_add_epi32(isum[i][j], _mm512_srai_epi32(odd[i][j], 4));
    } else {
      // One chain per row and token tile through the block's 8 steps (8 chains, vpdpbusd zmm
      // issuing once a cycle on Zen 4: each waits 8 cycles, past its latency). The odd steps had
      // a second set of sums, added once a block (05a21c9: +4-10 % then); on this Zen 4 host,
      // matmul_bench q8_0 one core, binaries alternating (3 runs): BM_MatMulTiled 2048x2048 T=64
      // 1552-1670 -> 1533-1631 us, T=512 12268-13457 -> 12645-12875, BM_MatMul 512x2048 T=64
      // 409-447 -> 415-446: level, so the simpler form.
      for (int s = 0; s < 8; ++s) {
        __m512i xv[NV];
        for (int j = 0; j < NV; ++j) xv[j] = _mm512_load_si512(xb[j] + s * 64);
        for (int i = 0; i < MR; ++i) {
          __m512i wv = _mm512_set1_epi32(LoadDword(pw + s * kStride + i * 4));
          if (kSignedCodes) wv = _mm512_xor_si512(wv, _mm512_set1_epi8(static_cast<char>(0x80)));
          // vpdpbusd: unsigned bytes (the weights) times signed bytes (x).
          for (int j = 0; j < NV; ++j) isum[i][j] = _mm512_dpbusd_epi32(isum[i][j], wv, xv[j]);
        }
      }
    }
    // float(isum) d_x as float(isum) 2^log2(d_x) (vscalefps: exact, and it runs beside vpdpbusd,
    // which vmulps does not), then one fma with d_w.
    for (int j = 0; j < NV; ++j) {
      const __m512 log2_dx = _mm512_load_ps(reinterpret_cast<const float*>(xb[j] + kTileCodeBytes));
      for (int i = 0; i < MR; ++i) {
        const __m512 scaled = _mm512_scalef_ps(_mm512_cvtepi32_ps(isum[i][j]), log2_dx);
        acc[i][j] = _mm512_fmadd_ps(scaled, _mm512_set1_ps(p.dw[first_row + i][b * p.scale_stride]),
                                    acc[i][j]);
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
  alignas(64) uint8_t panel_bytes[kMaxPanelGroups * kPanelRows * kBlock];
  // Scales of tiled panels as f32: gathered row-major for panels that are not half a tile (a row
  // range not on 8-row bounds), converted to [group][8] from f16 tile scales.
  alignas(64) float tiled_scales[kPanelRows * kMaxPanelGroups];
  const int64_t tiled_end = w.row_tiles != 0 ? std::min(row_end, w.rows / kRowTile * kRowTile) : 0;
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kPanelRows) {
    int64_t rows[kPanelRows];
    Panel p{panel_bytes, {}, 1};
    const uint8_t* next[kPanelRows];
    // Lines the next panel reads, one per block and entry of next[] (q8_0 has 32 bytes per row
    // and block, q4_0 16; a tile's block is one line per dword of its 16 rows).
    int64_t next_count = r0 + kPanelRows < row_end ? kPanelRows : 0;
    int64_t stride = D == DType::kI8 ? kBlock : kBlock / 2;
    for (int i = 0; i < kPanelRows; ++i) {
      rows[i] = std::min(r0 + i, row_end - 1);
      p.dw[i] = w.scale + rows[i] * groups;  // d_w[row, :]
      next[i] = data + std::min(r0 + kPanelRows + i, row_end - 1) * RowBytes<D>(w.cols);
    }
    bool in_tile = false;  // read in place from the tile (step stride 64)
    if (r0 % kPanelRows == 0 && r0 + kPanelRows <= tiled_end) {
      // The next tile's scales ([group][16], f16 or f32: 32 or 64 bytes a group) are requested
      // with this tile's first half. Read cold at the next tile's first panel, the conversion
      // below waited on memory: it was a third of PrefillRows's own time (perf, bench-medium q4_0
      // pp512). Forwards alternating with and without in one process: 0.2-1.5 % less time (3 of
      // 3), the MoE gate/up products ~1 %.
      if (r0 % kRowTile == 0 && r0 + 2 * kRowTile <= tiled_end) {
        const int64_t tile = r0 / kRowTile + 1;
        const void* next_scales =
            w.f16_tile_scales ? static_cast<const void*>(TileScalesF16(w, tile))
                              : static_cast<const void*>(w.scale + tile * kRowTile * groups);
        const int64_t bytes = groups * kRowTile * (w.f16_tile_scales ? 2 : 4);
        for (int64_t offset = 0; offset < bytes; offset += 64) PrefetchAt(next_scales, offset);
      }
      if (w.f16_tile_scales) {
        // f16 scales [group][16]: this half's 8 of each group converted to [group][8].
        const uint16_t* halves = TileScalesF16(w, r0 / kRowTile) + r0 % kRowTile;
        for (int64_t b = 0; b < groups; ++b) {
          _mm256_store_ps(tiled_scales + b * kPanelRows,
                          _mm256_cvtph_ps(_mm_loadu_si128(
                              reinterpret_cast<const __m128i*>(halves + b * kRowTile))));
        }
        for (int i = 0; i < kPanelRows; ++i) p.dw[i] = tiled_scales + i;
        p.scale_stride = kPanelRows;
      } else {
        // Half a tile: scales [group][16] with this half's 8 at r0 % 16.
        const float* tile_scale = w.scale + r0 / kRowTile * kRowTile * groups + r0 % kRowTile;
        for (int i = 0; i < kPanelRows; ++i) p.dw[i] = tile_scale + i;
        p.scale_stride = kRowTile;
      }
      if (D == DType::kI8 || tiles <= kNibblesMaxTiles) {
        p.w = data + r0 / kRowTile * kRowTile * RowBytes<D>(w.cols) + r0 % kRowTile * 4;
        in_tile = true;
      } else {
        UnpackTiledHalf(w, r0, panel_bytes);
      }
      // The tile's other half shares this half's lines. The next tile's are requested over both
      // halves, each half its lines of half the steps (before, all of them by the second half:
      // half the lead). One core, tiled q8_0 products of 64 weights in turn (read from DRAM),
      // both forms alternating in one process: 512x2048 at T = 32 12-13 % less time, T = 64 7-8 %,
      // 2048x512 at T = 64 4-5 %; q4_0 512x2048 at T = 64 and 128 level, q8_0 2048x2048 at
      // T = 192 level. (The L2 hint in place of L1: q4_0 2-3 % slower.)
      const uint8_t* next_tile = data + (r0 / kRowTile + 1) * kRowTile * RowBytes<D>(w.cols);
      const int64_t half_steps = kTileSteps<D> / 2, second = r0 % kRowTile != 0 ? half_steps : 0;
      next_count = r0 - r0 % kRowTile + 2 * kRowTile <= tiled_end ? half_steps : 0;
      for (int64_t s = 0; s < half_steps; ++s) next[s] = next_tile + (s + second) * 64;
      stride = kTileSteps<D> * 64;
    } else {
      if (r0 < tiled_end) {
        for (int i = 0; i < kPanelRows; ++i) {
          float* s = tiled_scales + i * kMaxPanelGroups;
          for (int64_t b = 0; b < groups; ++b) s[b] = GroupScale(w, rows[i], b);
          p.dw[i] = s;
        }
        next_count = 0;
      }
      PackPanel<D>(w, rows, panel_bytes);
    }
    // The next panel's lines are prefetched while this panel computes, spread over all its
    // micro-tile calls (call m takes entries [n m / calls, n (m + 1) / calls) of next[]), so the
    // next panel reads from cache and the prefetches ask no more of the memory than it keeps
    // up with.
    const int64_t calls = tiles / 2 * 2 + tiles % 2;
    int64_t call = 0;
    const auto share = [&](const uint8_t* const** first) {
      const int64_t lo = next_count * call / calls, hi = next_count * (call + 1) / calls;
      ++call;
      *first = next + lo;
      return static_cast<int>(hi - lo);
    };
    const auto run = [&](auto step_stride) {
      constexpr int64_t kStride = decltype(step_stride)::value;
      const uint8_t* const* pf = next;
      int64_t k = 0;
      for (; k + 2 <= tiles; k += 2) {
        const uint8_t* x = buf + k * tile_bytes;
        const int64_t t0 = k * kTileTokens;
        int n = share(&pf);
        PrefillMicroTile<D, kStride, 4, 2>(p, 0, x, tile_bytes, groups, pf, n, stride, t0, T, w, r0,
                                           row_end, y);
        n = share(&pf);
        PrefillMicroTile<D, kStride, 4, 2>(p, 4, x, tile_bytes, groups, pf, n, stride, t0, T, w, r0,
                                           row_end, y);
      }
      if (k < tiles) {
        const int n = share(&pf);
        PrefillMicroTile<D, kStride, 8, 1>(p, 0, buf + k * tile_bytes, tile_bytes, groups, pf, n,
                                           stride, k * kTileTokens, T, w, r0, row_end, y);
      }
    };
    if (in_tile)
      run(std::integral_constant<int64_t, 64>{});
    else
      run(std::integral_constant<int64_t, 32>{});
  }
}

}  // namespace

void QuantizeTilesInt8(const ActSource& a, int64_t T, int64_t cols, DType wdtype, uint8_t* buf) {
  wdtype == DType::kI8 ? QuantizeTileLayout<DType::kI8>(a, T, cols, buf)
                       : QuantizeTileLayout<DType::kU8>(a, T, cols, buf);
}

void PrefillRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                     int64_t row_end, float* y) {
  w.dtype == DType::kI8 ? PrefillRows<DType::kI8>(buf, T, w, row_begin, row_end, y)
                        : PrefillRows<DType::kU8>(buf, T, w, row_begin, row_end, y);
}

}  // namespace dsv3::ops::avx512
