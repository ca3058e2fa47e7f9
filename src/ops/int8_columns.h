// y = x W on int8 activations for a q8_0 / q4_0 weight W [n, m] (x [n], y [m]): decoding's
// absorbed query, q_lat = W_UK[h]^T q_nope with W_UK[h] [dn, r] (model/mla.cpp). The rows of W
// are the sum's index here, so the int8 path's GEMV (one x for all rows, ops/int8_dot.h) does not
// apply: W's scales run along the outputs. W[i, j] = s[i, g] * c[i, j] (g = j / 32, c the code), so
// for the 32 outputs j of group g
//   y[j] = sum_i a_g[i] * c[i, j],  a_g[i] = x[i] * s[i, g]   (one f32 product),
// and a_g is the activation of group g. Arithmetic, identical in every ISA variant (each tested
// bitwise against the scalar twin):
//   1. a_g quantized per block of 32 i by QuantizeActBlocks (int8_dot.h: d = the smallest power
//      of two at or above max|a| / 127, codes rounded to nearest even; a partial last block over
//      its present rows).
//   2. Per output j and block k: isum = sum over the block of q_a * c in int32 (exact), then
//      acc = fma(float(isum), d_a[g, k], acc), blocks in order from acc = 0; y[j] = acc.
// Against the exact product the difference is a_g's quantisation: each a_g[i] is off by at most
// d_a / 2 of its block, as the int8 path's x is. Each output group costs one quantisation of n
// values, so the form pays where n is small against the bytes read (W_UK: n = dn = 128, m = 512).
//
// The layout (LayOutInt8Columns) holds W by columns, for vpdpbusd: per output group of 32
// columns, ceil(n / 32) blocks of 32 rows, each block lines of 128 bytes with the group's column c
// at bytes 4 c .. 4 c + 3:
//   q8_0: 8 lines; line l, byte b: c[32 k + 4 l + b, j] + 128 (unsigned);
//   q4_0: 4 lines; line l, byte b: the stored nibble (c + 8) of row 32 k + 4 l + b in the low
//         half, of row 32 k + 16 + 4 l + b in the high half.
// So each 64-byte half of a line times 4 broadcast activation codes gives 16 outputs' partial
// dots, and a group's kernel reads its bytes front to back: one stream for the whole matrix. (With
// each group's 16-column halves in tiles of their own, two streams jumping at every group, 8 heads
// of W_UK from DRAM took AVX-512 28.0 us (q8_0) and 11.1 (q4_0) on one core, now 21.8 and 7.3-9.0:
// bench/key_product_bench.cpp.) The unsigned weights owe offset * sum(q_a) per block
// (offset 128 or 8). Rows past n hold code 0. Scales as f32 [m / 32][n] (group-major: one
// group's s[., g] contiguous, multiplied into x as a vector).
#pragma once

#include <cstdint>

#include "ops/isa.h"
#include "ops/matmul.h"

namespace dsv3::ops {

// The rows a laid-out matrix may have (a stack buffer holds one group's activation).
inline constexpr int64_t kMaxInt8ColumnRows = 512;

// One matrix in the column layout.
struct Int8Columns {
  DType dtype = DType::kI8;  // kI8 (q8_0) or kU8 (q4_0)
  int64_t n = 0;             // rows of W: the sum's length
  int64_t m = 0;             // columns of W: the outputs, a multiple of 32
  const uint8_t* codes = nullptr;
  const float* scale = nullptr;
};

// Whether rows [row0, row0 + n) of w can be laid out: q8_0 or q4_0 with groups of 32, cols a
// multiple of 32, 1 <= n <= kMaxInt8ColumnRows (either row layout of w).
bool CanLayOutInt8Columns(const WeightView& w, int64_t n);

// Bytes of codes and floats of scales of an [n, m] matrix in the layout.
int64_t Int8ColumnsBytes(DType dtype, int64_t n, int64_t m);
inline int64_t Int8ColumnsScales(int64_t n, int64_t m) {
  return m / 32 * n;
}

// Rows [row0, row0 + n) of w (CanLayOutInt8Columns) into codes (Int8ColumnsBytes) and scale
// (Int8ColumnsScales): the same numbers, by columns.
void LayOutInt8Columns(const WeightView& w, int64_t row0, int64_t n, uint8_t* codes, float* scale);

// y [w.m] = x [w.n] W on isa's kernel.
void VecMatInt8(Isa isa, const Int8Columns& w, const float* x, float* y);

}  // namespace dsv3::ops
