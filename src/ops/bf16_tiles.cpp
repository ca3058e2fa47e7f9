#include "ops/bf16_tiles.h"

#include <cstring>
#include <vector>

namespace dsv3::ops {

bool CanTileBf16Rows(const WeightView& w) {
  return w.dtype == DType::kBF16 && w.cols > 0 && w.cols % 2 == 0 && w.rows >= kBf16Tile &&
         w.row_tiles == 0 && w.data != nullptr;
}

int64_t Bf16TiledRows(const WeightView& w) {
  return w.row_tiles == kBf16Tile && w.dtype == DType::kBF16 ? w.rows / kBf16Tile * kBf16Tile : 0;
}

const uint32_t* Bf16TilePairs(const WeightView& w, int64_t tile, int64_t pair) {
  // tile t: [cols / 2][32] dwords from dword t * 32 * cols / 2
  return static_cast<const uint32_t*>(w.data) + (tile * (w.cols / 2) + pair) * kBf16Tile;
}

void TileBf16Rows(WeightView* w, void* data) {
  const int64_t pairs = w->cols / 2, tiles = w->rows / kBf16Tile;
  std::vector<uint32_t> rows(static_cast<size_t>(kBf16Tile * pairs));  // one tile, row-major
  for (int64_t t = 0; t < tiles; ++t) {
    uint32_t* tile = static_cast<uint32_t*>(data) + t * kBf16Tile * pairs;
    std::memcpy(rows.data(), tile, rows.size() * sizeof(uint32_t));
    for (int64_t i = 0; i < kBf16Tile; ++i)
      for (int64_t j = 0; j < pairs; ++j)  // pair j of row i -> [j][i]
        tile[j * kBf16Tile + i] = rows[static_cast<size_t>(i * pairs + j)];
  }
  w->row_tiles = kBf16Tile;
}

void CopyBf16Row(const WeightView& w, int64_t r, int64_t first, int64_t n, uint16_t* out) {
  const uint16_t* data = static_cast<const uint16_t*>(w.data);
  if (r >= Bf16TiledRows(w)) {
    std::memcpy(out, data + r * w.cols + first, static_cast<size_t>(n) * sizeof(uint16_t));
    return;
  }
  // Row i of tile t: column c is half c % 2 of pair c / 2, at halves (c / 2) * 64 + 2 i + c % 2.
  const uint16_t* tile = data + r / kBf16Tile * kBf16Tile * w.cols + r % kBf16Tile * 2;
  for (int64_t c = first; c < first + n; ++c) out[c - first] = tile[c / 2 * 64 + c % 2];
}

}  // namespace dsv3::ops
