#include "ops/row_tiles.h"

#include <cstring>
#include <vector>

#include "ops/quant.h"

namespace dsv3::ops {

namespace {

bool Tiled(const WeightView& w, int64_t r) {
  return w.row_tiles == kRowTile && r < w.rows / kRowTile * kRowTile;
}

}  // namespace

bool CanTileRows(const WeightView& w) {
  return (w.dtype == DType::kI8 || w.dtype == DType::kU8) && w.group_size == 32 && w.cols > 0 &&
         w.cols % 32 == 0 && w.rows >= kRowTile && w.row_tiles == 0 && w.data != nullptr &&
         w.scale != nullptr;
}

int64_t StoredRowBytes(const WeightView& w) {
  return w.dtype == DType::kU8 ? Q4RowBytes(w.cols) : w.cols;
}

WeightView Int8RowRange(const WeightView& w, int64_t first, int64_t n) {
  WeightView v = w;
  v.rows = n;
  v.data = static_cast<const uint8_t*>(w.data) + first * StoredRowBytes(w);
  v.scale = w.scale + first * QuantGroups(w.cols, w.group_size);
  return v;
}

void TileRows(WeightView* w, void* data, float* scale) {
  const int64_t row_bytes = StoredRowBytes(*w), dwords = row_bytes / 4;
  const int64_t groups = QuantGroups(w->cols, w->group_size);
  std::vector<uint8_t> rows(static_cast<size_t>(kRowTile * row_bytes));
  std::vector<float> scales(static_cast<size_t>(kRowTile * groups));
  for (int64_t t = 0; t < w->rows / kRowTile; ++t) {
    uint8_t* tile = static_cast<uint8_t*>(data) + t * kRowTile * row_bytes;
    float* tile_scale = scale + t * kRowTile * groups;
    std::memcpy(rows.data(), tile, rows.size());
    std::memcpy(scales.data(), tile_scale, scales.size() * sizeof(float));
    for (int64_t i = 0; i < kRowTile; ++i) {
      for (int64_t j = 0; j < dwords; ++j)  // dword j of row i -> [j][i]
        std::memcpy(tile + (j * kRowTile + i) * 4, rows.data() + i * row_bytes + j * 4, 4);
      for (int64_t g = 0; g < groups; ++g)
        tile_scale[g * kRowTile + i] = scales[static_cast<size_t>(i * groups + g)];
    }
  }
  w->row_tiles = kRowTile;
}

void CopyRowBytes(const WeightView& w, int64_t r, int64_t first, int64_t n, uint8_t* out) {
  const uint8_t* data = static_cast<const uint8_t*>(w.data);
  const int64_t row_bytes = StoredRowBytes(w);
  if (!Tiled(w, r)) {
    std::memcpy(out, data + r * row_bytes + first, static_cast<size_t>(n));
    return;
  }
  // Row i of tile t: byte k is byte k % 4 of dword k / 4, at (k / 4) * 64 + 4 i.
  const uint8_t* tile = data + r / kRowTile * kRowTile * row_bytes + r % kRowTile * 4;
  for (int64_t k = first; k < first + n; ++k) out[k - first] = tile[k / 4 * 64 + k % 4];
}

float GroupScale(const WeightView& w, int64_t r, int64_t g) {
  const int64_t groups = QuantGroups(w.cols, w.group_size);
  if (!Tiled(w, r)) return w.scale[r * groups + g];
  return w.scale[r / kRowTile * kRowTile * groups + g * kRowTile + r % kRowTile];
}

}  // namespace dsv3::ops
