#include "ops/quant.h"

#include <algorithm>
#include <cmath>

#include "util/dtype.h"

namespace dsv3::ops {

float F16Representable(float d) {
  if (!(std::fabs(d) <= 65504.0f)) return d;  // past f16's range, or NaN: kept
  return F16ToF32(F32ToF16(d));
}

void QuantizeFp8Blocks(const float* values, int64_t rows, int64_t cols, int64_t block_rows,
                       int64_t block_cols, uint8_t* q, float* scale) {
  const int64_t grid_rows = (rows + block_rows - 1) / block_rows;
  const int64_t grid_cols = (cols + block_cols - 1) / block_cols;
  for (int64_t gi = 0; gi < grid_rows; ++gi) {
    for (int64_t gj = 0; gj < grid_cols; ++gj) {
      const int64_t r0 = gi * block_rows, r1 = std::min(rows, r0 + block_rows);
      const int64_t c0 = gj * block_cols, c1 = std::min(cols, c0 + block_cols);
      float amax = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(values[r * cols + c]));
      const float s = amax > 0 ? amax / 448.0f : 1.0f;
      scale[gi * grid_cols + gj] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) q[r * cols + c] = F32ToFp8E4M3(values[r * cols + c] / s);
    }
  }
}

void QuantizeRowQ8_0(const float* x, int64_t cols, int64_t group_size, int8_t* q, float* scale) {
  for (int64_t g0 = 0, gi = 0; g0 < cols; g0 += group_size, ++gi) {
    const int64_t g1 = std::min(cols, g0 + group_size);
    float amax = 0;
    for (int64_t c = g0; c < g1; ++c) amax = std::max(amax, std::fabs(x[c]));
    const float d = F16Representable(amax / 127.0f);
    // Dividing by d (not multiplying by 1/d) keeps |x/d| <= 127 at the maximum up to the f16
    // rounding of d, which the clamp absorbs.
    for (int64_t c = g0; c < g1; ++c) {
      const float v = d > 0 ? std::nearbyint(x[c] / d) : 0.0f;
      q[c] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
    scale[gi] = d;
  }
}

void QuantizeRowQ4_0(const float* x, int64_t cols, int64_t group_size, uint8_t* packed,
                     float* scale) {
  std::fill(packed, packed + Q4RowBytes(cols), static_cast<uint8_t>(0x88));  // zero codes
  for (int64_t g0 = 0, gi = 0; g0 < cols; g0 += group_size, ++gi) {
    const int64_t g1 = std::min(cols, g0 + group_size);
    float m = 0;  // the element of largest magnitude, with its sign
    for (int64_t c = g0; c < g1; ++c)
      if (std::fabs(x[c]) > std::fabs(m)) m = x[c];
    const float d = F16Representable(m / -8.0f);
    for (int64_t c = g0; c < g1; ++c) {
      const float v = d != 0 ? std::nearbyint(x[c] / d) + 8.0f : 8.0f;
      const uint8_t code = static_cast<uint8_t>(std::clamp(v, 0.0f, 15.0f));
      uint8_t& byte = packed[c >> 1];
      byte = (c & 1) ? static_cast<uint8_t>((byte & 0x0f) | (code << 4))
                     : static_cast<uint8_t>((byte & 0xf0) | code);
    }
    scale[gi] = d;
  }
}

}  // namespace dsv3::ops
