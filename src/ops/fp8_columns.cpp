// The column layout and the scalar twin of VecMatFp8 (ops/fp8_columns.h), and its ISA dispatch.
#include "ops/fp8_columns.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ops/kernels_internal.h"
#include "util/dtype.h"

namespace dsv3::ops {

namespace {

constexpr int64_t kV = 16;  // columns per scale of the layout

int64_t ScaleCols(const WeightView& w) {
  return (w.cols + w.block_cols - 1) / w.block_cols;
}

}  // namespace

bool CanLayOutFp8Columns(const WeightView& w, int64_t row0, int64_t n) {
  if (w.dtype != DType::kF8E4M3 || w.scale == nullptr || w.row_tiles != 0 || w.block_rows <= 0 ||
      w.block_cols <= 0 || w.block_cols % kV != 0 || w.cols <= 0 || w.cols % kV != 0 || n < 1 ||
      row0 < 0 || row0 + n > w.rows || row0 % w.block_rows != 0 || n % w.block_rows != 0)
    return false;
  const auto* data = static_cast<const uint8_t*>(w.data);
  for (int64_t i = row0; i < row0 + n; ++i)
    for (int64_t j = 0; j < w.cols; ++j)
      if ((data[i * w.cols + j] & 0x7f) == 0x7f) return false;
  for (int64_t b = row0 / w.block_rows; b < (row0 + n) / w.block_rows; ++b)
    for (int64_t k = 0; k < ScaleCols(w); ++k)
      if (!std::isfinite(w.scale[b * ScaleCols(w) + k] * 256.0f)) return false;
  return true;
}

void LayOutFp8Columns(const WeightView& w, int64_t row0, int64_t n, uint8_t* codes, float* scale) {
  const int64_t m = w.cols;
  const auto* data = static_cast<const uint8_t*>(w.data);
  for (int64_t g0 = 0; g0 < m; g0 += kFp8ColumnGroup) {
    const int64_t width = std::min(kFp8ColumnGroup, m - g0);
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(codes + g0 * n + i * width, data + (row0 + i) * m + g0,
                  static_cast<size_t>(width));
  }
  for (int64_t b = 0; b < n / w.block_rows; ++b)
    for (int64_t v = 0; v < m / kV; ++v)
      scale[b * (m / kV) + v] =
          w.scale[(row0 / w.block_rows + b) * ScaleCols(w) + v * kV / w.block_cols] * 256.0f;
}

namespace scalar {

void VecMatFp8(const Fp8Columns& w, const float* x, float* y) {
  const int64_t n = w.n, m = w.m;
  for (int64_t j = 0; j < m; ++j) {
    const int64_t g0 = j / kFp8ColumnGroup * kFp8ColumnGroup;
    const int64_t width = std::min(kFp8ColumnGroup, m - g0);
    const uint8_t* column = w.codes + g0 * n + (j - g0);  // W[0, j]; W[i, j] at i * width
    float out = 0.0f;
    for (int64_t b = 0; b < n / w.block_rows; ++b) {
      float acc = 0.0f;
      for (int64_t i = b * w.block_rows; i < (b + 1) * w.block_rows; ++i)
        acc = std::fma(x[i], std::ldexp(Fp8E4M3ToF32(column[i * width]), -8), acc);
      out = std::fma(acc, w.scale[b * (m / kV) + j / kV], out);
    }
    y[j] = out;
  }
}

}  // namespace scalar

void VecMatFp8(Isa isa, const Fp8Columns& w, const float* x, float* y) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::VecMatFp8(w, x, y);
    case Isa::kAvx2:
      return avx2::VecMatFp8(w, x, y);
    case Isa::kScalar:
      break;
  }
  scalar::VecMatFp8(w, x, y);
}

}  // namespace dsv3::ops
