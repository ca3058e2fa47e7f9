#include "ops/bf16_tiles.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/row_tiles.h"

namespace dsv3::ops {

namespace {

int64_t ElementBytes(const WeightView& w) {
  return w.dtype == DType::kBF16 ? 2 : 1;
}

// One tile: rows [32][pairs] of kPair-byte pairs (row i at rows + i * stride) to tile
// [pairs][32]. The tile is written in order; each source row's line serves 64 / kPair
// consecutive pairs, the 32 lines in different cache sets (stride: SpreadRowStride).
template <int64_t kPair>
void PairsToTile(const uint8_t* rows, int64_t stride, int64_t pairs, uint8_t* tile) {
  for (int64_t j = 0; j < pairs; ++j)
    for (int64_t i = 0; i < kBf16Tile; ++i)
      std::memcpy(tile + (j * kBf16Tile + i) * kPair, rows + i * stride + j * kPair, kPair);
}

}  // namespace

bool CanTilePairRows(const WeightView& w) {
  const bool pairs = w.dtype == DType::kBF16 ||
                     (w.dtype == DType::kF8E4M3 && w.block_cols > 0 && w.block_cols % 2 == 0);
  return pairs && w.cols > 0 && w.cols % 2 == 0 && w.rows >= kBf16Tile && w.row_tiles == 0 &&
         w.data != nullptr;
}

int64_t PairTiledRows(const WeightView& w) {
  const bool pairs = w.dtype == DType::kBF16 || w.dtype == DType::kF8E4M3;
  return w.row_tiles == kBf16Tile && pairs ? w.rows / kBf16Tile * kBf16Tile : 0;
}

const uint8_t* TilePairs(const WeightView& w, int64_t tile, int64_t pair) {
  // tile t: [cols / 2][32] pairs of 2e bytes from pair t * 32 * cols / 2
  return static_cast<const uint8_t*>(w.data) +
         (tile * (w.cols / 2) + pair) * kBf16Tile * 2 * ElementBytes(w);
}

void TilePairRows(WeightView* w, void* data) {
  const int64_t pair_bytes = 2 * ElementBytes(*w), pairs = w->cols / 2;
  const int64_t tile_bytes = kBf16Tile * pairs * pair_bytes, tiles = w->rows / kBf16Tile;
  const int64_t row_bytes = pairs * pair_bytes, stride = SpreadRowStride(row_bytes);
  std::vector<uint8_t> rows(static_cast<size_t>(kBf16Tile * stride));
  for (int64_t t = 0; t < tiles; ++t) {
    uint8_t* tile = static_cast<uint8_t*>(data) + t * tile_bytes;
    for (int64_t i = 0; i < kBf16Tile; ++i)
      std::memcpy(rows.data() + i * stride, tile + i * row_bytes, static_cast<size_t>(row_bytes));
    // pair j of row i -> [j][i]
    pair_bytes == 4 ? PairsToTile<4>(rows.data(), stride, pairs, tile)
                    : PairsToTile<2>(rows.data(), stride, pairs, tile);
  }
  w->row_tiles = kBf16Tile;
}

int64_t Fp8LineFlagsSize(const WeightView& w) {
  return PairTiledRows(w) / kBf16Tile * Fp8LineFlagWords(w.cols);
}

void MarkFp8ZeroExponentLines(const WeightView& w, uint64_t* flags) {
  const int64_t pairs = w.cols / 2, words = Fp8LineFlagWords(w.cols);
  const int64_t tiles = PairTiledRows(w) / kBf16Tile;
  for (int64_t t = 0; t < tiles; ++t) {
    uint64_t* tile_flags = flags + t * words;
    std::fill(tile_flags, tile_flags + words, uint64_t{0});
    for (int64_t j = 0; j < pairs; ++j) {
      // 8 codes a word: e = their exponent bits (each byte below 0x80), and (e - 1) & ~e & 0x80
      // per byte is nonzero in some byte exactly when some byte of e is zero.
      const uint8_t* line = TilePairs(w, t, j);
      uint64_t zero = 0;
      for (int64_t b = 0; b < 2 * kBf16Tile; b += 8) {
        uint64_t word;
        std::memcpy(&word, line + b, sizeof(word));
        const uint64_t e = word & 0x7878787878787878ull;
        zero |= (e - 0x0101010101010101ull) & ~e & 0x8080808080808080ull;
      }
      if (zero != 0) tile_flags[j / 64] |= uint64_t{1} << (j % 64);
    }
  }
}

void CopyTiledRow(const WeightView& w, int64_t r, int64_t first, int64_t n, uint8_t* out) {
  const int64_t e = ElementBytes(w);
  const uint8_t* data = static_cast<const uint8_t*>(w.data);
  if (r >= PairTiledRows(w)) {
    std::memcpy(out, data + (r * w.cols + first) * e, static_cast<size_t>(n * e));
    return;
  }
  // Row i of tile t: column c is element c % 2 of pair c / 2, at element (c / 2) * 64 + 2 i + c
  // % 2.
  const uint8_t* tile = data + (r / kBf16Tile * kBf16Tile * w.cols + r % kBf16Tile * 2) * e;
  for (int64_t c = first; c < first + n; ++c)
    std::memcpy(out + (c - first) * e, tile + (c / 2 * 64 + c % 2) * e, static_cast<size_t>(e));
}

}  // namespace dsv3::ops
