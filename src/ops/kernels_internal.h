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
}  // namespace scalar

// Compiled with -mavx2 -mfma -mf16c (src/ops/isa/avx2_*.cpp).
namespace avx2 {
void MatMulRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                float* y);
// q8_0 (kI8) and q4_0 (kU8) weights, exact path: weights dequantised to f32, f32 FMA
// (src/ops/isa/avx2_quant_matmul.cpp). Group sizes other than 32 take the scalar reference.
void MatMulRowsQuant(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                     int64_t row_end, float* y);
void RmsNorm(const float* x, const float* w, int64_t n, double eps, float* out);
float Dot(const float* a, const float* b, int64_t n);
void Axpy(float alpha, const float* x, int64_t n, float* y);
}  // namespace avx2

// Compiled with AVX-512 F/BW/VL/DQ/VNNI/BF16 (src/ops/isa/avx512_*.cpp).
namespace avx512 {
void MatMulRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                float* y);
// KernelContext::bf16_dot for BF16 weights: x rounded to bf16, vdpbf16ps (for T >= 32; smaller T
// take the exact path).
void MatMulRowsBf16Dot(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                       int64_t row_end, float* y);
// q8_0 (kI8) and q4_0 (kU8) weights, exact path (src/ops/isa/avx512_quant_matmul.cpp).
void MatMulRowsQuant(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                     int64_t row_end, float* y);
void RmsNorm(const float* x, const float* w, int64_t n, double eps, float* out);
float Dot(const float* a, const float* b, int64_t n);
void Axpy(float alpha, const float* x, int64_t n, float* y);
}  // namespace avx512

}  // namespace dsv3::ops
