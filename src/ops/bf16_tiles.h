// BF16 and FP8 weights in the bf16-dot kernel's panel layout (WeightView::row_tiles ==
// kBf16Tile).
//
// Rows [0, rows / 32 * 32) lie in tiles of 32 rows. Tile t takes the bytes rows 32 t .. 32 t + 31
// took row-major (32 * cols * e bytes from byte 32 t * cols * e, e the element's bytes: 2 for
// BF16, 1 for FP8) and holds them pair-major: the column pair (2 j, 2 j + 1) of the 32 rows
// together, 32 * 2e bytes with row 32 t + i's two values at byte 2e * i, for j = 0 .. cols / 2 - 1.
// Rows past the last whole tile stay row-major, where they were. The bytes themselves are
// unchanged, only their order (an FP8 weight's block scales neither move nor change).
//
// A BF16 tile is the panel the AVX-512 bf16-dot micro-kernel multiplies (avx512_matmul.cpp: 32
// rows' pairs in two vectors per column pair), so a prefill product reads it in place instead of
// transposing each 32-row strip into a panel first (a MoE expert, whose few dozen tokens repay
// that transpose worst, spent about a fifth of its time packing); an FP8 tile is converted into
// that panel with no transpose. The AVX-512 exact kernels read tiles natively too (16 rows' pairs
// a vector: decode and the few-token products, avx512_bf16_tiles.cpp), and so do AVX2's (8 rows'
// pairs a vector, avx2_bf16_tiles.cpp; its packed form, avx2_matmul.cpp); every other reader (the
// scalar reference, DequantizeRow, AccumulateRows, the scalar ISA) reads tiles through
// CopyTiledRow. Model::Load tiles a model's BF16 and FP8 product matrices (those the int8 path
// would tile) when the bf16-dot path will run them on AVX-512, and on AVX2
// (LoadOptions::tile_bf16_rows).
#pragma once

#include <cstdint>

#include "ops/matmul.h"

namespace dsv3::ops {

inline constexpr int64_t kBf16Tile = 32;

// Whether w can be tiled: BF16, or FP8 whose scale blocks hold whole pairs (even block_cols); an
// even number of columns (whole pairs), at least one whole tile, row-major now.
bool CanTilePairRows(const WeightView& w);

// Reorders w's bytes in place (data must be w.data, writable) and sets w->row_tiles. Requires
// CanTilePairRows(*w).
void TilePairRows(WeightView* w, void* data);

// Rows of w in whole tiles (0 for a row-major weight).
int64_t PairTiledRows(const WeightView& w);

// The 32 rows' pairs of tile `tile` from column pair `pair` on: [pairs][32] pairs (BF16: dwords;
// FP8: 2 bytes each).
const uint8_t* TilePairs(const WeightView& w, int64_t tile, int64_t pair);

// An FP8 tiled weight's zero-exponent line flags (WeightView::fp8_line_flags): tile t's line j
// (its 32 rows' column pair j, 64 bytes: TilePairs(w, t, j)) is bit j % 64 of word
// t * Fp8LineFlagWords(w.cols) + j / 64, set when one of its bytes is a zero-exponent code (zero
// or subnormal, (code & 0x78) == 0). Words a tile of a matrix with `cols` columns takes (inline:
// the decode kernel asks once a tile):
inline int64_t Fp8LineFlagWords(int64_t cols) {
  return (cols / 2 + 63) / 64;
}

// Words the flags of every whole tile of w (tiled) take: PairTiledRows(w) / 32 tiles of
// Fp8LineFlagWords(w.cols).
int64_t Fp8LineFlagsSize(const WeightView& w);

// Writes the flags of every whole tile of w (FP8, tiled) to flags[0, Fp8LineFlagsSize(w)).
void MarkFp8ZeroExponentLines(const WeightView& w, uint64_t* flags);

// out[0, n e) = the bytes of W[r, first .. first + n) as stored row-major, for either layout.
void CopyTiledRow(const WeightView& w, int64_t r, int64_t first, int64_t n, uint8_t* out);

}  // namespace dsv3::ops
