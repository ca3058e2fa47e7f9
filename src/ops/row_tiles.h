// The int8 kernels' tiled layout for q8_0 / q4_0 weights (WeightView::row_tiles == kRowTile).
//
// Rows [0, rows / 16 * 16) lie in tiles of 16 rows. Tile t takes the bytes rows 16 t .. 16 t + 15
// took row-major (16 * row_bytes from byte 16 t * row_bytes) and holds them dword-major: dword j
// of the 16 rows together, 64 bytes with row 16 t + i at byte 4 i, for j = 0 .. row_bytes / 4 - 1.
// Its group scales take the rows' 16 * groups floats and hold them group-major ([group][16 rows]).
// Rows past the last whole tile stay row-major, where they were. When every scale of the tiled
// rows is exactly an f16 value (dsv3 quantize writes them so), the tiles' scales are held as f16
// instead (f16_tile_scales): tile t's [group][16] halves at halves + t * 16 * groups from the
// start of the scale buffer, the same numbers in half the bytes (a q4_0 decode reads 18 bytes a
// block instead of 20).
//
// So one 64-byte load holds the same 4 bytes (4 q8_0 codes, or 8 q4_0 nibbles) of 16 rows, and
// one vpdpbusd multiplies them by 4 broadcast activation bytes: 16 rows' partial dots in the lanes
// with no reduction across lanes (the row-major GEMV sums 8 rows' partials per block with
// shuffles, which bounded it by instructions: ~60 G weights/s per core from cache for either
// format). The bytes themselves are unchanged (codes as stored), only their order.
//
// The int8 path's AVX-512 and AVX2 kernels read tiles natively (AVX2: 8 rows a ymm, two per
// line; its q4_0 prefill unpacks half a tile into its row panel with an 8x8 dword transpose);
// every other reader of a tiled view (the scalar int8 kernels, the f32 path, DequantizeRow,
// AccumulateRows) takes the scalar reference, which reads it through the accessors below.
// Model::Load tiles a model's matrix weights only when the int8 path will run them on AVX-512 or
// AVX2 (LoadOptions::tile_int8_rows).
#pragma once

#include <cstdint>

#include "ops/matmul.h"

namespace dsv3::ops {

inline constexpr int64_t kRowTile = 16;

// Whether w can be tiled: q8_0 or q4_0, groups of 32, whole groups (cols % 32 == 0, so a group is
// whole dwords of a row), at least one whole tile, row-major now.
bool CanTileRows(const WeightView& w);

// Reorders w's bytes and scales in place (data and scale must be w.data and w.scale, writable)
// and sets w->row_tiles (and w->f16_tile_scales when every tiled row's scale is exact in f16).
// Requires
// CanTileRows(*w).
void TileRows(WeightView* w, void* data, float* scale);

// Bytes of one stored row (q8_0: cols; q4_0: ceil(cols / 2)).
int64_t StoredRowBytes(const WeightView& w);

// The row stride of a copy of rows of row_bytes each whose columns are then read across the rows
// (the tiling at load): an odd number of 64-byte lines, so that the lines of 64 consecutive rows
// at one column fall into 64 different cache sets (a row length a multiple of 4 KB put them all
// in one).
inline int64_t SpreadRowStride(int64_t row_bytes) {
  const int64_t lines = (row_bytes + 63) / 64;
  return (lines % 2 == 0 ? lines + 1 : lines) * 64;
}

// Whether rows [first, first + n) of a q8_0 / q4_0 weight can be a weight of their own: any rows
// of a row-major weight; of a tiled one, whole tiles (first and n multiples of 16, within the
// tiled rows) or rows past the last whole tile.
bool Int8RowRangeFits(const WeightView& w, int64_t first, int64_t n);

// Those rows as a weight of their own (requires Int8RowRangeFits): its data and scales start at
// row `first`; rows past the last tile make a row-major weight.
WeightView Int8RowRange(const WeightView& w, int64_t first, int64_t n);

// Whether Int8RowRange(w, first, n) fits and keeps w's tiling, so activations laid out for w
// (LayOutInt8, the kernels' own layouts) serve the range as they serve w: any rows of a
// row-major weight, whole tiles of a tiled one.
bool Int8RowRangeSharesLayout(const WeightView& w, int64_t first, int64_t n);

// out[0, n) = bytes [first, first + n) of row r as stored row-major, for either layout.
void CopyRowBytes(const WeightView& w, int64_t r, int64_t first, int64_t n, uint8_t* out);

// The scale of row r, group g, for either layout.
float GroupScale(const WeightView& w, int64_t r, int64_t g);

// Tiled weights with f16_tile_scales: the [group][16] f16 scales of tile `tile`.
const uint16_t* TileScalesF16(const WeightView& w, int64_t tile);

}  // namespace dsv3::ops
