// A q8_0 / q4_0 matrix a test holds: its bytes and group scales as the library stores them
// (row-major, ops/quant.h), with readers of its codes and values. Shared by the ops tests.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/matmul.h"
#include "ops/quant.h"
#include "util/dtype.h"

namespace dsv3::ops {

struct QuantWeight {
  DType dtype = DType::kI8;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> bytes;
  std::vector<float> scale;  // [rows, groups]

  int64_t Groups() const { return QuantGroups(cols); }
  WeightView View() const {
    WeightView v;
    v.dtype = dtype;
    v.rows = rows;
    v.cols = cols;
    v.data = bytes.data();
    v.scale = scale.data();
    v.group_size = kQuantGroupSize;
    return v;
  }
  // The code of W[r, c] (q8_0: q; q4_0: nibble - 8).
  int Code(int64_t r, int64_t c) const {
    if (dtype == DType::kI8) return static_cast<int8_t>(bytes[r * cols + c]);
    const uint8_t b = bytes[r * Q4RowBytes(cols) + c / 2];
    return ((c & 1) ? b >> 4 : b & 0xf) - 8;
  }
  double Scale(int64_t r, int64_t c) const { return scale[r * Groups() + c / kQuantGroupSize]; }
  // W[r, c] exactly (a small integer times an f32 is exact in double).
  double At(int64_t r, int64_t c) const { return Code(r, c) * Scale(r, c); }
};

}  // namespace dsv3::ops
