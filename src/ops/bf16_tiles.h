// BF16 weights in the bf16-dot kernel's panel layout (WeightView::row_tiles == kBf16Tile).
//
// Rows [0, rows / 32 * 32) lie in tiles of 32 rows. Tile t takes the bytes rows 32 t .. 32 t + 31
// took row-major (32 * cols * 2 bytes from byte 32 t * cols * 2) and holds them pair-major: the
// column pair (2 j, 2 j + 1) of the 32 rows together, 128 bytes with row 32 t + i's two bf16 at
// byte 4 i, for j = 0 .. cols / 2 - 1. Rows past the last whole tile stay row-major, where they
// were. The bytes themselves are unchanged, only their order.
//
// That is the panel the AVX-512 bf16-dot micro-kernel multiplies (avx512_matmul.cpp: 32 rows'
// pairs in two vectors per column pair), so a prefill product reads a tiled weight in place
// instead of transposing each 32-row strip into a panel first: a MoE expert, whose few dozen
// tokens repay that transpose worst, spent about a fifth of its time packing. The AVX-512 exact
// kernel reads tiles natively too (16 rows' pairs a vector, even and odd columns summed apart:
// decode and the few-token products); every other reader (the scalar reference, DequantizeRow,
// AccumulateRows, other ISAs) reads tiles through CopyBf16Row.
// Model::Load tiles a model's BF16 product matrices (those the int8 path would tile) only when
// the bf16-dot path will run them on AVX-512 (LoadOptions::tile_bf16_rows).
#pragma once

#include <cstdint>

#include "ops/matmul.h"

namespace dsv3::ops {

inline constexpr int64_t kBf16Tile = 32;

// Whether w can be tiled: BF16, an even number of columns (whole pairs), at least one whole tile,
// row-major now.
bool CanTileBf16Rows(const WeightView& w);

// Reorders w's bytes in place (data must be w.data, writable) and sets w->row_tiles. Requires
// CanTileBf16Rows(*w).
void TileBf16Rows(WeightView* w, void* data);

// Rows of w in whole tiles (0 for a row-major weight).
int64_t Bf16TiledRows(const WeightView& w);

// The 32 rows' pairs of tile `tile` from column pair `pair` on: [pairs][32] dwords.
const uint32_t* Bf16TilePairs(const WeightView& w, int64_t tile, int64_t pair);

// out[0, n) = the bf16 bits of W[r, first .. first + n), for either layout.
void CopyBf16Row(const WeightView& w, int64_t r, int64_t first, int64_t n, uint16_t* out);

}  // namespace dsv3::ops
