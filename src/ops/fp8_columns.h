// y = x W in f32 for an FP8 e4m3 weight W [n, m] with block scales (x [n], y [m]): decoding's
// absorbed query, q_lat = W_UK[h]^T q_nope with W_UK[h] [dn, r] (model/mla.cpp) of an FP8
// kv_b_proj. Row-major W makes this product a sum of scaled rows (AccumulateRows), which decodes
// and scales every code (one rounding each) before its fma: ~10 vector operations per 16 codes,
// so the product was bound by its arithmetic (55 us a layer and thread in bench-medium FP8).
//
// Here the block scale comes out of the sum: within one block row rb (rows i of one scale block)
// W[i, j] = e4m3(c[i, j]) * s[rb, j / block_cols], so
//   y[j] = sum_rb S[rb, j] * acc_rb[j],   acc_rb[j] = sum_{i in rb} x[i] * h(c[i, j]),
// h(c) = e4m3(c) * 2^-8, which is the f16 whose bits are c's seven low bits moved up by 7 and its
// sign bit (exact, subnormals included), and S = s * 2^8 (exact). Arithmetic, identical in every
// ISA variant (each tested bitwise against the scalar twin): per column j, acc = fma(x[i], h, acc)
// over the block row's rows in order from acc = 0, then y = fma(acc, S, y) over the block rows in
// order from y = 0. Against the exact product the difference is f32 rounding: one per fma, no
// rounding of the scaled codes.
//
// The layout (LayOutFp8Columns): the columns in groups of kFp8ColumnGroup (the last group the
// rest), each group's rows one after another, a row's codes of the group contiguous:
//   byte of W[i, j] = G n g + i w_g + (j - G g),   g = j / G, w_g = the group's width (G = 256).
// A kernel holds one group's 16 vectors of sums in registers and reads its bytes front to back:
// the whole matrix is one stream. Scales as f32 S [n / block_rows][m / 16] (one per block row and
// 16 columns, 2^8 folded in).
#pragma once

#include <cstdint>

#include "ops/isa.h"
#include "ops/matmul.h"

namespace dsv3::ops {

inline constexpr int64_t kFp8ColumnGroup = 256;

// One matrix in the column layout.
struct Fp8Columns {
  int64_t n = 0;           // rows of W: the sum's length, a multiple of block_rows
  int64_t m = 0;           // columns of W: the outputs, a multiple of 16
  int64_t block_rows = 0;  // rows per scale block
  const uint8_t* codes = nullptr;
  const float* scale = nullptr;
};

// Whether rows [row0, row0 + n) of w can be laid out: FP8 e4m3 with a scale grid whose blocks
// are 16k columns wide, cols a multiple of 16, row0 and n whole block rows (n >= 1), no NaN code
// among those rows (the layout's kernels decode codes without the NaN test), every scale of
// them finite with S = s * 2^8 finite. Reads the rows' codes (w's row-major layout only).
bool CanLayOutFp8Columns(const WeightView& w, int64_t row0, int64_t n);

// Bytes of codes and floats of scales of an [n, m] matrix in the layout.
inline int64_t Fp8ColumnsBytes(int64_t n, int64_t m) {
  return n * m;
}
inline int64_t Fp8ColumnsScales(int64_t n, int64_t m, int64_t block_rows) {
  return n / block_rows * (m / 16);
}

// Rows [row0, row0 + n) of w (CanLayOutFp8Columns) into codes (Fp8ColumnsBytes) and scale
// (Fp8ColumnsScales): the same codes by column groups, the scales times 2^8 per 16 columns.
void LayOutFp8Columns(const WeightView& w, int64_t row0, int64_t n, uint8_t* codes, float* scale);

// y [w.m] = x [w.n] W on isa's kernel.
void VecMatFp8(Isa isa, const Fp8Columns& w, const float* x, float* y);

}  // namespace dsv3::ops
