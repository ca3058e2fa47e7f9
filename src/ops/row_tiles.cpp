#include "ops/row_tiles.h"

#include <cstring>
#include <vector>

#include "ops/quant.h"
#include "util/dtype.h"

namespace dsv3::ops {

namespace {

bool Tiled(const WeightView& w, int64_t r) {
  return w.row_tiles == kRowTile && r < w.rows / kRowTile * kRowTile;
}

// Whether v is exactly an f16 value, and then its bits. On the bits (a model has tens of
// millions of scales): zero; a normal f16 (exponent -14 .. 15) whose low 13 mantissa bits are
// zero; or an f16 subnormal k * 2^-24 (exponent -24 .. -15) whose bits below 2^-24 are zero.
bool ExactF16(float v, uint16_t* bits) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const uint32_t sign = (u >> 16) & 0x8000u, mantissa = u & 0x7fffffu;
  const int exponent = static_cast<int>((u >> 23) & 0xffu) - 127;
  if ((u & 0x7fffffffu) == 0) {
    *bits = static_cast<uint16_t>(sign);
    return true;
  }
  if (exponent >= -14 && exponent <= 15) {
    if ((mantissa & 0x1fffu) != 0) return false;
    *bits =
        static_cast<uint16_t>(sign | static_cast<uint32_t>(exponent + 15) << 10 | mantissa >> 13);
    return true;
  }
  if (exponent >= -24 && exponent < -14) {
    const uint32_t full = 0x800000u | mantissa;  // v = full * 2^(exponent - 23)
    const int shift = -1 - exponent;             // k = full >> shift
    if ((full & ((1u << shift) - 1u)) != 0) return false;
    *bits = static_cast<uint16_t>(sign | full >> shift);
    return true;
  }
  return false;  // f32 subnormal, out of range, inf or NaN
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

bool Int8RowRangeFits(const WeightView& w, int64_t first, int64_t n) {
  if (first < 0 || n < 1 || first + n > w.rows) return false;
  if (w.row_tiles == 0) return true;
  const int64_t tiled_rows = w.rows / kRowTile * kRowTile;
  return first >= tiled_rows ||
         (first % kRowTile == 0 && n % kRowTile == 0 && first + n <= tiled_rows);
}

bool Int8RowRangeSharesLayout(const WeightView& w, int64_t first, int64_t n) {
  return Int8RowRangeFits(w, first, n) && Int8RowRange(w, first, n).row_tiles == w.row_tiles;
}

WeightView Int8RowRange(const WeightView& w, int64_t first, int64_t n) {
  WeightView v = w;
  v.rows = n;
  v.data = static_cast<const uint8_t*>(w.data) + first * StoredRowBytes(w);
  const int64_t groups = QuantGroups(w.cols, w.group_size);
  if (!Tiled(w, first)) {  // row-major rows (of either layout): their f32 scales where they were
    v.scale = w.scale + first * groups;
    v.row_tiles = 0;
    v.f16_tile_scales = false;
  } else {  // whole tiles: tile t's scales start t * 16 * groups f32 or f16 values in
    v.scale = w.f16_tile_scales ? w.scale + first * groups / 2 : w.scale + first * groups;
  }
  return v;
}

void TileRows(WeightView* w, void* data, float* scale) {
  const int64_t row_bytes = StoredRowBytes(*w), dwords = row_bytes / 4;
  const int64_t groups = QuantGroups(w->cols, w->group_size);
  const int64_t tiles = w->rows / kRowTile, tile_scales = kRowTile * groups;
  bool f16 = true;  // every tiled scale is exactly an f16 value
  uint16_t bits;
  for (int64_t i = 0; i < tiles * tile_scales && f16; ++i) f16 = ExactF16(scale[i], &bits);
  // One tile's rows copied SpreadRowStride apart, the tile then written front to back (it was
  // written row by row, a dword every 64 bytes): 4096x7168 q8_0 15.1 -> 6.6 ms, q4_0 11.3 -> 5.0
  // ms; 4096x2048 4.2 -> 3.4, 2.7 -> 1.4 (the scales' f16 checks are now a third of what is left).
  const int64_t stride = SpreadRowStride(row_bytes);
  std::vector<uint8_t> rows(static_cast<size_t>(kRowTile * stride));
  std::vector<float> scales(static_cast<size_t>(tile_scales));
  uint8_t* halves = reinterpret_cast<uint8_t*>(scale);  // the f16 scales' bytes
  for (int64_t t = 0; t < tiles; ++t) {
    uint8_t* tile = static_cast<uint8_t*>(data) + t * kRowTile * row_bytes;
    float* tile_scale = scale + t * tile_scales;
    for (int64_t i = 0; i < kRowTile; ++i)
      std::memcpy(rows.data() + i * stride, tile + i * row_bytes, static_cast<size_t>(row_bytes));
    std::memcpy(scales.data(), tile_scale, scales.size() * sizeof(float));
    for (int64_t j = 0; j < dwords; ++j)  // dword j of row i -> [j][i]
      for (int64_t i = 0; i < kRowTile; ++i)
        std::memcpy(tile + (j * kRowTile + i) * 4, rows.data() + i * stride + j * 4, 4);
    for (int64_t i = 0; i < kRowTile; ++i) {
      for (int64_t g = 0; g < groups; ++g) {
        // The f16 halves of tile t end before tile t + 1's floats begin, so writing them in tile
        // order never overwrites a scale not yet read.
        const float v = scales[static_cast<size_t>(i * groups + g)];
        if (f16 && ExactF16(v, &bits))
          std::memcpy(halves + 2 * (t * tile_scales + g * kRowTile + i), &bits, 2);
        else
          tile_scale[g * kRowTile + i] = v;
      }
    }
  }
  w->row_tiles = kRowTile;
  w->f16_tile_scales = f16;
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
  if (w.f16_tile_scales)
    return F16ToF32(TileScalesF16(w, r / kRowTile)[g * kRowTile + r % kRowTile]);
  return w.scale[r / kRowTile * kRowTile * groups + g * kRowTile + r % kRowTile];
}

const uint16_t* TileScalesF16(const WeightView& w, int64_t tile) {
  return reinterpret_cast<const uint16_t*>(w.scale) +
         tile * kRowTile * QuantGroups(w.cols, w.group_size);
}

}  // namespace dsv3::ops
