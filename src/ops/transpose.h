// Matrix transpose, the packing step that lets the training backward pass run its dx = dy·W and
// dW = dy^T·x products on the same packed GEMM as the forward pass.
#pragma once

#include <cstdint>

#include "ops/matmul.h"

namespace dsv3::ops {

// dst[c, r] = src[r, c];  src: [rows, cols], dst: [cols, rows]. Exact (a copy) on every ISA; split
// over ctx.pool by bands of src rows, each band writing its own columns of dst.
void Transpose(const KernelContext& ctx, const float* src, int64_t rows, int64_t cols, float* dst);

namespace scalar {
// Rows [r0, r1) of src into dst.
void TransposeRows(const float* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                   float* dst);
}  // namespace scalar
namespace avx512 {
void TransposeRows(const float* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                   float* dst);
}  // namespace avx512

}  // namespace dsv3::ops
