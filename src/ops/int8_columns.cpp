// The column layout and the scalar twin of VecMatInt8 (ops/int8_columns.h), and its ISA dispatch.
#include "ops/int8_columns.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/kernels_internal.h"
#include "ops/row_tiles.h"

namespace dsv3::ops {

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kLine = 128;  // one block's line: 4 bytes of each of a group's 32 columns

int64_t LinesPerBlock(DType dtype) {
  return dtype == DType::kI8 ? 8 : 4;
}
int32_t WeightOffset(DType dtype) {
  return dtype == DType::kI8 ? 128 : 8;
}

// The stored unsigned code (code + offset) of W[i, j] in the layout; 0 past n.
int32_t StoredCode(const Int8Columns& w, int64_t i, int64_t j) {
  const int64_t blocks = (w.n + kBlock - 1) / kBlock, lines = LinesPerBlock(w.dtype);
  const int64_t k = i / kBlock, ib = i % kBlock;
  const uint8_t* block = w.codes + ((j / kBlock) * blocks + k) * lines * kLine;
  const int64_t c = j % kBlock;
  if (w.dtype == DType::kI8) return block[(ib / 4) * kLine + c * 4 + ib % 4];
  const int64_t half = ib / 16, r = ib % 16;
  const uint8_t byte = block[(r / 4) * kLine + c * 4 + r % 4];
  return half == 0 ? (byte & 15) : (byte >> 4);
}

}  // namespace

bool CanLayOutInt8Columns(const WeightView& w, int64_t n) {
  return (w.dtype == DType::kI8 || w.dtype == DType::kU8) && w.group_size == kBlock &&
         w.scale != nullptr && w.cols > 0 && w.cols % kBlock == 0 && n >= 1 &&
         n <= kMaxInt8ColumnRows;
}

int64_t Int8ColumnsBytes(DType dtype, int64_t n, int64_t m) {
  return m / kBlock * ((n + kBlock - 1) / kBlock) * LinesPerBlock(dtype) * kLine;
}

void LayOutInt8Columns(const WeightView& w, int64_t row0, int64_t n, uint8_t* codes, float* scale) {
  const int64_t m = w.cols, blocks = (n + kBlock - 1) / kBlock, lines = LinesPerBlock(w.dtype);
  const bool q8 = w.dtype == DType::kI8;
  // Rows past n: code 0 (stored as the offset).
  std::memset(codes, q8 ? 128 : 0x88, static_cast<size_t>(Int8ColumnsBytes(w.dtype, n, m)));
  std::vector<uint8_t> row(static_cast<size_t>(StoredRowBytes(w)));
  for (int64_t i = 0; i < n; ++i) {
    CopyRowBytes(w, row0 + i, 0, StoredRowBytes(w), row.data());
    for (int64_t g = 0; g < m / kBlock; ++g) scale[g * n + i] = GroupScale(w, row0 + i, g);
    const int64_t k = i / kBlock, ib = i % kBlock;
    for (int64_t j = 0; j < m; ++j) {
      uint8_t* block = codes + ((j / kBlock) * blocks + k) * lines * kLine;
      const int64_t c = j % kBlock;
      if (q8) {
        block[(ib / 4) * kLine + c * 4 + ib % 4] = static_cast<uint8_t>(row[j] ^ 0x80);
        continue;
      }
      const uint8_t nibble = (row[j / 2] >> (4 * (j % 2))) & 15;  // low nibble: even column
      const int64_t half = ib / 16, r = ib % 16;
      uint8_t& byte = block[(r / 4) * kLine + c * 4 + r % 4];
      byte = half == 0 ? static_cast<uint8_t>((byte & 0xF0) | nibble)
                       : static_cast<uint8_t>((byte & 0x0F) | (nibble << 4));
    }
  }
}

namespace scalar {

void VecMatInt8(const Int8Columns& w, const float* x, float* y) {
  const int64_t n = w.n, blocks = (n + kBlock - 1) / kBlock;
  const int32_t offset = WeightOffset(w.dtype);
  float a[kMaxInt8ColumnRows];
  int8_t q[kMaxInt8ColumnRows];
  float d[kMaxInt8ColumnRows / kBlock];
  int32_t sum[kMaxInt8ColumnRows / kBlock];
  for (int64_t g = 0; g < w.m / kBlock; ++g) {
    for (int64_t i = 0; i < n; ++i) a[i] = x[i] * w.scale[g * n + i];  // a_g [n]
    QuantizeActBlocks(a, n, q, d, sum);
    for (int64_t j = g * kBlock; j < (g + 1) * kBlock; ++j) {
      float acc = 0.0f;
      for (int64_t k = 0; k < blocks; ++k) {
        int32_t isum = -offset * sum[k];
        for (int64_t i = k * kBlock; i < std::min(n, (k + 1) * kBlock); ++i)
          isum += q[i] * StoredCode(w, i, j);
        acc = std::fma(static_cast<float>(isum), d[k], acc);
      }
      y[j] = acc;
    }
  }
}

}  // namespace scalar

void VecMatInt8(Isa isa, const Int8Columns& w, const float* x, float* y) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::VecMatInt8(w, x, y);
    case Isa::kAvx2:
      return avx2::VecMatInt8(w, x, y);
    case Isa::kScalar:
      break;
  }
  scalar::VecMatInt8(w, x, y);
}

}  // namespace dsv3::ops
