// Per-ISA kernel entry points behind the public ops API (matmul.h, vector_ops.h). Only ops/*.cpp
// and tests include this. The scalar twins are the reference every SIMD variant is tested against.
//
// MatMulRows computes the outputs of rows [row_begin, row_end) of W for all T tokens:
//   y[t, r] = sum_c x[t, c] * W[r, c]      x: [T, W.cols], y: [T, W.rows]
// and writes nothing else, so threads given disjoint row ranges never share an output. Every
// variant computes each output with arithmetic that does not depend on the row range it was
// given, so results are bitwise independent of how rows are split across threads.
#pragma once

#include <cstdint>

#include "ops/matmul.h"

namespace dsv3::ops {

namespace scalar {
void MatMulRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                float* y);
void RmsNorm(const float* x, const float* w, int64_t n, double eps, float* out);
float Dot(const float* a, const float* b, int64_t n);
void Axpy(float alpha, const float* x, int64_t n, float* y);
void SiluMul(float* gate, const float* up, int64_t n);
void Softmax(float* x, int64_t n);
// out[c - c0] = W[row, c] dequantised for c in [c0, c1) (DequantizeRow's reference; the SIMD
// variants finish rows whose width or scale grid does not fit their vectors with it).
void DequantizeRowRange(const WeightView& w, int64_t row, int64_t c0, int64_t c1, float* out);
}  // namespace scalar

// The int8-activation path (KernelContext::int8_dot, ops/int8_dot.h), one trio per ISA:
//   QuantizeActBlocks: x [cols] -> q [QuantGroups(cols) * 32] (natural column order, a partial
//     last block padded with code 0), d [QuantGroups(cols)], sum [QuantGroups(cols)] (sum of q
//     per block). Every variant gives the scalar twin's bits.
//   QuantizeActsInt8: T tokens of ActSource a (w.cols columns) into buf (Int8ActBytes(T, w.cols)
//     bytes, 64-byte aligned), in the layout this variant's MatMulRowsInt8 wants for w (its
//     dtype, and on AVX-512 its row tiles) and this T.
//   MatMulRowsInt8: rows [row_begin, row_end) of y [T, w.rows] from that buffer; w is q8_0 (kI8)
//     or q4_0 (kU8) with group_size 32. Bitwise equal to the scalar twin for any row range.
//
// Where a product's activations come from: token t is row SourceRow(a, t) of x (x [.., cols]):
// row first + t, or rows[first + t] with rows (a gather read in place). With xq, that row's blocks
// are read from it (QuantizeActivations: the bits QuantizeActBlocks gives for the row of x).
// Plain data: its helpers below have internal linkage, since this header is compiled with every
// ISA's flags.
struct ActSource {
  const float* x = nullptr;
  const int32_t* rows = nullptr;
  const Int8Activations* xq = nullptr;
  int64_t first = 0;
};

namespace {  // NOLINT(build/namespaces): internal linkage, as ops/isa/transpose8x8.h explains
inline int64_t SourceRow(const ActSource& a, int64_t t) {
  return a.rows != nullptr ? a.rows[a.first + t] : a.first + t;
}
// Tokens t0, t0 + 1, .. of a as tokens 0, 1, ..
inline ActSource SourceFrom(const ActSource& a, int64_t t0) {
  ActSource s = a;
  s.first += t0;
  return s;
}
// Token t's row of the activations x [.., cols].
inline const float* ActRow(const ActSource& a, int64_t t, int64_t cols) {
  return a.x + SourceRow(a, t) * cols;
}
}  // namespace

struct Int8Columns;  // ops/int8_columns.h
struct Fp8Columns;   // ops/fp8_columns.h

// VecMatInt8 (ops/int8_columns.h): y [w.m] = x [w.n] W on int8 activations, one per ISA, each
// bitwise equal to the scalar twin (AVX-512: vpdpbusd on the layout's lines; AVX2: vpmaddubsw with
// the operand split of its int8 GEMV). VecMatFp8 (ops/fp8_columns.h): y = x W in f32 from an
// FP8 W's column layout, likewise bitwise equal to its scalar twin in every variant.

namespace scalar {
void VecMatInt8(const Int8Columns& w, const float* x, float* y);
void VecMatFp8(const Fp8Columns& w, const float* x, float* y);
void QuantizeActBlocks(const float* x, int64_t cols, int8_t* q, float* d, int32_t* sum);
void QuantizeActsInt8(const ActSource& a, int64_t T, const WeightView& w, uint8_t* buf);
void MatMulRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y);
}  // namespace scalar

// Compiled with -mavx2 -mfma -mf16c (src/ops/isa/avx2_*.cpp).
namespace avx2 {
// F32, F16, BF16 (row-major or in pair tiles) and row-major FP8 weights.
void MatMulRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                float* y);
// BF16 in 32-row pair tiles (ops/bf16_tiles.h), the dot form for few tokens
// (avx2_bf16_tiles.cpp): even and odd columns summed apart per row; rows outside whole 16-row
// halves of tiles take the scalar reference.
void MatMulPairTiledRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                         int64_t row_end, float* y);
// q8_0 (kI8) and q4_0 (kU8) weights, exact path: weights dequantised to f32, f32 FMA
// (src/ops/isa/avx2_quant_matmul.cpp). Group sizes other than 32 take the scalar reference.
void MatMulRowsQuant(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                     int64_t row_end, float* y);
// Int8 path (src/ops/isa/avx2_int8_kernels.h): maddubs/madd with a saturation-free operand
// split (q8_0: |w| x sign(w)*x; q4_0: unsigned codes x signed x).
void QuantizeActBlocks(const float* x, int64_t cols, int8_t* q, float* d, int32_t* sum);
void QuantizeActsInt8(const ActSource& a, int64_t T, const WeightView& w, uint8_t* buf);
void MatMulRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y);
void VecMatInt8(const Int8Columns& w, const float* x, float* y);
void VecMatFp8(const Fp8Columns& w, const float* x, float* y);
void RmsNorm(const float* x, const float* w, int64_t n, double eps, float* out);
float Dot(const float* a, const float* b, int64_t n);
void Axpy(float alpha, const float* x, int64_t n, float* y);
// DequantizeRow, bitwise equal to the scalar reference (src/ops/isa/avx2_dequant.cpp).
void DequantizeRow(const WeightView& w, int64_t row, float* out);
// AccumulateRows with the rows decoded straight into registers: bitwise equal to DequantizeRow +
// Axpy row after row (src/ops/isa/avx2_dequant.cpp).
void AccumulateRows(const WeightView& w, int64_t row0, int64_t n, const float* a, float* y,
                    float* row_buf);
}  // namespace avx2

// The AVX2 int8 path with AVX-VNNI's vpdpbusd on ymm (src/ops/isa/avxvnni_int8_matmul.cpp,
// compiled with -mavxvnni as well): the same functions, the same bits.
namespace avxvnni {
void QuantizeActsInt8(const ActSource& a, int64_t T, const WeightView& w, uint8_t* buf);
void MatMulRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y);
}  // namespace avxvnni

// Compiled with AVX-512 F/BW/VL/DQ/VNNI/BF16 (src/ops/isa/avx512_*.cpp).
namespace avx512 {
void MatMulRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                float* y);
// KernelContext::bf16_dot for BF16 and FP8 weights: x rounded to bf16, vdpbf16ps (for T >= 8;
// smaller T, other dtypes and FP8 grids with odd or > 512-column blocks take the exact path).
// Tiled weights (ops/bf16_tiles.h) are read in place (FP8: converted with no transpose); their
// row ranges start on a tile (MatMul's and MatMulBatch's 64-row chunks), else they take the exact
// path.
void MatMulRowsBf16Dot(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                       int64_t row_end, float* y);
// Whether MatMulRowsBf16DotRows takes T tokens of w: the packed bf16-dot path (T >= 8, BF16 or
// FP8 with an even block width).
bool Bf16DotReadsRows(const WeightView& w, int64_t T);
// MatMulRowsBf16Dot's bits with token t at row x_rows[t] of x, the rows read in place (no copy
// of x; a tiled weight's range not starting on a tile, which no caller cuts, copies them): for
// Bf16DotReadsRows(w, T) only.
void MatMulRowsBf16DotRows(const float* x, const int32_t* x_rows, int64_t T, const WeightView& w,
                           int64_t row_begin, int64_t row_end, float* y);
// BF16 and FP8 weights in 32-row pair tiles (ops/bf16_tiles.h), exact path, any T
// (avx512_bf16_tiles.cpp): even and odd columns summed apart per row; rows outside whole 16-row
// halves of tiles take the scalar reference.
void MatMulPairTiledRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                         int64_t row_end, float* y);
// q8_0 (kI8) and q4_0 (kU8) weights, exact path (src/ops/isa/avx512_quant_matmul.cpp).
void MatMulRowsQuant(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                     int64_t row_end, float* y);
// Int8 path with VNNI (src/ops/isa/avx512_int8_matmul.cpp): a row-lane GEMV for small T and
// packed token tiles (16 tokens per vector, avx512_int8_prefill.cpp) for prefill.
void QuantizeActBlocks(const float* x, int64_t cols, int8_t* q, float* d, int32_t* sum);
void QuantizeActsInt8(const ActSource& a, int64_t T, const WeightView& w, uint8_t* buf);
void MatMulRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y);
void VecMatInt8(const Int8Columns& w, const float* x, float* y);
void VecMatFp8(const Fp8Columns& w, const float* x, float* y);
// Tokens per tile of QuantizeActsInt8's layout for w where whole tiles can be laid out apart: the
// tokens [a, b) (a a multiple of it, b - a >= it, or b - a a multiple of it) laid out on their own
// at buf + Int8ActBytes(a, w.cols) give the bytes the whole layout has there. 0 where the layout
// is not made of such tiles (rows too wide for the prefill panels: the GEMV's layout only).
int64_t Int8LayoutTileTokens(const WeightView& w);
void RmsNorm(const float* x, const float* w, int64_t n, double eps, float* out);
float Dot(const float* a, const float* b, int64_t n);
void Axpy(float alpha, const float* x, int64_t n, float* y);
// DequantizeRow, bitwise equal to the scalar reference (src/ops/isa/avx512_dequant.cpp).
void DequantizeRow(const WeightView& w, int64_t row, float* out);
// AccumulateRows with the rows decoded straight into registers: bitwise equal to DequantizeRow +
// Axpy per row on this ISA. row_buf: [w.cols] scratch for columns the vectors do not cover.
void AccumulateRows(const WeightView& w, int64_t row0, int64_t n, const float* a, float* y,
                    float* row_buf);
}  // namespace avx512

}  // namespace dsv3::ops
