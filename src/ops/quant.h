// Group-quantized integer weight formats (DESIGN.md §4: integer tensor X.weight plus F32
// X.weight_scale_inv, like the official FP8 checkpoints). One scale per row per group of
// kQuantGroupSize consecutive input columns; the last group of a row may be partial.
//
// q8_0: int8 codes q in [-127, 127], scale d = amax / 127, W = q * d. Round to nearest, so
//       |W - x| <= d / 2 for every element.
// q4_0: 4-bit codes, as ggml's Q4_0: m is the group's element of largest magnitude (with its
//       sign), d = m / -8 (so d may be negative), code = clamp(round(x / d) + 8, 0, 15) packed two
//       per byte (low nibble = even column; the odd tail's high nibble is 8, i.e. zero), and
//       W = (code - 8) * d. The 16 levels span [-8, 7] * d with -8 * d = m (to within |d| / 256,
//       below). Every element is within |d| / 2 of x except those with x / d > 7.5 (the opposite
//       end of the range, which holds only values of magnitude near |m|): they clamp to 7 and are
//       within |d|.
// Both round d to the nearest f16 value (F16Representable, as ggml stores its scales) before the
// codes are computed with it, so the int8 kernels can hold the scales in half the bytes
// (ops/row_tiles.h; one scale off the f16 grid would keep a whole matrix's tiles in f32); the
// files still store them as F32. The bounds above hold for the rounded d while |d| >= 2^-14
// (f16's normal range: d moves by at most 2^-11 of itself); below, the rounding is absolute (at
// most 2^-25), so elements are within |d| / 2 + 127 * 2^-25 (q8_0) or 8 * 2^-25 more (q4_0):
// groups whose largest weight is under 0.008 (q8_0) or 0.0005 (q4_0).
// An all-zero group gets d = 0 and codes of zero.
#pragma once

#include <cstdint>

namespace dsv3::ops {

inline constexpr int64_t kQuantGroupSize = 32;

inline int64_t QuantGroups(int64_t cols, int64_t group_size = kQuantGroupSize) {
  return (cols + group_size - 1) / group_size;
}
// Bytes of one q4_0 row.
inline int64_t Q4RowBytes(int64_t cols) {
  return (cols + 1) / 2;
}

// FP8 e4m3 with a block scale grid, as DeepSeek's checkpoints: per block_rows x block_cols block,
// scale = amax / 448 (1 for an all-zero block) and q = e4m3(x / scale), saturating at +-448.
// values: [rows, cols] -> q: [rows, cols], scale: [ceil(rows / br), ceil(cols / bc)]
void QuantizeFp8Blocks(const float* values, int64_t rows, int64_t cols, int64_t block_rows,
                       int64_t block_cols, uint8_t* q, float* scale);

// d rounded to the nearest f16 value (subnormals included) when |d| <= 65504; otherwise d itself.
float F16Representable(float d);

// x: [cols] -> q: [cols] int8, scale: [QuantGroups(cols, group_size)]
void QuantizeRowQ8_0(const float* x, int64_t cols, int64_t group_size, int8_t* q, float* scale);
// x: [cols] -> packed: [Q4RowBytes(cols)], scale: [QuantGroups(cols, group_size)]
void QuantizeRowQ4_0(const float* x, int64_t cols, int64_t group_size, uint8_t* packed,
                     float* scale);

}  // namespace dsv3::ops
