#include "ops/row_tiles.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/quant.h"
#include "util/dtype.h"

namespace dsv3::ops {

namespace {

bool Tiled(const WeightView& w, int64_t r) {
  return w.row_tiles == kRowTile && r < w.rows / kRowTile * kRowTile;
}

// The f16 bits of v when v is exactly an f16 value, else kNotF16. On the bits: zero; a normal f16
// (biased f32 exponent 113 .. 142, i.e. -14 .. 15) whose low 13 mantissa bits are zero; or an f16
// subnormal k * 2^-24 (exponent 103 .. 112, i.e. -24 .. -15) whose bits below 2^-24 are zero.
// f32 subnormals, values out of range, inf and NaN are not.
constexpr uint32_t kNotF16 = 0x10000;
uint32_t F16BitsIfExact(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const uint32_t sign = (u >> 16) & 0x8000u, magnitude = u & 0x7fffffffu;
  const uint32_t e = magnitude >> 23, full = 0x800000u | (u & 0x7fffffu);
  if (magnitude == 0) return sign;
  if (e >= 113 && e <= 142)
    return (full & 0x1fffu) == 0 ? sign | (e - 112) << 10 | (full & 0x7fffffu) >> 13 : kNotF16;
  if (e < 103 || e > 112) return kNotF16;
  const uint32_t shift = 126 - e;  // bits of full below 2^-24
  return (full & ((1u << shift) - 1u)) == 0 ? sign | full >> shift : kNotF16;
}

// bits[i] = the f16 bits of scale[i] for i < n where each is zero or a normal f16 value, and
// returns true; false where some is not (bits then incomplete). No branch and fixed shifts, so
// the compiler vectorizes it: a model has tens of millions of scales, and a call per scale with a
// branch per case was a quarter of bench-medium q4_0's load (f16 subnormals are rare enough for
// F16BitsIfExact).
bool NormalF16Bits(const float* scale, int64_t n, uint16_t* bits) {
  uint32_t other = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, scale + i, 4);
    const uint32_t magnitude = u & 0x7fffffffu;
    const uint32_t normal = static_cast<uint32_t>((magnitude >> 23) - 113 <= 142 - 113) &
                            static_cast<uint32_t>((u & 0x1fffu) == 0);
    other |= static_cast<uint32_t>(magnitude != 0) & (normal ^ 1u);
    const uint32_t f16 = magnitude == 0 ? 0 : (magnitude >> 13) - (112u << 10);
    bits[i] = static_cast<uint16_t>(((u >> 16) & 0x8000u) | f16);
  }
  return other == 0;
}

// bits[i] = the f16 bits of scale[i] for i < n when every one is exactly an f16 value (then
// true), else false.
bool ExactF16Bits(const float* scale, int64_t n, uint16_t* bits) {
  if (NormalF16Bits(scale, n, bits)) return true;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t f16 = F16BitsIfExact(scale[i]);
    if (f16 == kNotF16) return false;
    bits[i] = static_cast<uint16_t>(f16);
  }
  return true;
}

// Whether every one of scale[0, n) is exactly an f16 value (bits: scratch for a run).
bool AllExactF16(const float* scale, int64_t n, std::vector<uint16_t>& bits) {
  const auto run = static_cast<int64_t>(bits.size());
  for (int64_t i0 = 0; i0 < n; i0 += run)
    if (!ExactF16Bits(scale + i0, std::min(run, n - i0), bits.data())) return false;
  return true;
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
  std::vector<uint16_t> bits(static_cast<size_t>(tile_scales));    // a tile's f16 scales
  const bool f16 = AllExactF16(scale, tiles * tile_scales, bits);  // then held as f16
  // One tile's rows copied SpreadRowStride apart, the tile then written front to back (it was
  // written row by row, a dword every 64 bytes): 4096x7168 q8_0 15.1 -> 6.6 ms, q4_0 11.3 -> 5.0
  // ms; 4096x2048 4.2 -> 3.4, 2.7 -> 1.4. The scales' f16 checks, then a third of what was left,
  // vectorized (NormalF16Bits; still twice a scale, before and while writing): 4096x7168 q8_0 7.0
  // -> 4.2-6.3 ms, q4_0 5.3-5.5 -> 2.6-3.0; 4096x2048 2.1-2.3 -> 1.5-1.9, 1.3-1.6 -> 0.6-0.7
  // (throwaway harness, best of 5, binaries alternating); bench-medium q4_0's load 0.95-1.07 ->
  // 0.59-0.78 s of CPU.
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
    // [16 rows][groups] -> [groups][16 rows]. The f16 halves of tile t end before tile t + 1's
    // floats begin, so writing them in tile order never overwrites a scale not yet read.
    if (f16) ExactF16Bits(scales.data(), tile_scales, bits.data());  // all exact: checked above
    for (int64_t i = 0; i < kRowTile; ++i) {
      for (int64_t g = 0; g < groups; ++g) {
        const size_t from = static_cast<size_t>(i * groups + g);
        if (f16)
          std::memcpy(halves + 2 * (t * tile_scales + g * kRowTile + i), &bits[from], 2);
        else
          tile_scale[g * kRowTile + i] = scales[from];
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
