// Matrix transpose, the packing step that lets the training backward pass run its dx = dy·W and
// dW = dy^T·x products on the same packed GEMM as the forward pass; and the bf16 copies (plain or
// transposed) that let a prefill's attention products run as bf16 x bf16 products (model/mla.cpp).
#pragma once

#include <cstdint>

#include "ops/matmul.h"

namespace dsv3::ops {

// dst[c, r] = src[r, c];  src: [rows, cols], dst: [cols, rows]. Exact (a copy) on every ISA; split
// over ctx.pool by bands of src rows, each band writing its own columns of dst.
void Transpose(const KernelContext& ctx, const float* src, int64_t rows, int64_t cols, float* dst);

// dst[r * ld_dst + c] = F32ToBf16(src[r * ld_src + c]) for r < rows, c < cols: a strided [rows,
// cols] block of src rounded to bf16 (nearest even; NaN stays NaN), on the calling thread.
void CopyToBf16(Isa isa, const float* src, int64_t rows, int64_t cols, int64_t ld_src,
                uint16_t* dst, int64_t ld_dst);
// dst[c * rows + r] = F32ToBf16(src[r * ld_src + c]): the block transposed as it is rounded
// (dst: [cols, rows]), on the calling thread.
void TransposeToBf16(Isa isa, const float* src, int64_t rows, int64_t cols, int64_t ld_src,
                     uint16_t* dst);

namespace scalar {
// Rows [r0, r1) of src into dst.
void TransposeRows(const float* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                   float* dst);
void CopyToBf16(const float* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst,
                int64_t ld_dst);
void TransposeToBf16(const float* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst);
}  // namespace scalar
namespace avx512 {
void TransposeRows(const float* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                   float* dst);
void CopyToBf16(const float* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst,
                int64_t ld_dst);
void TransposeToBf16(const float* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst);
}  // namespace avx512

}  // namespace dsv3::ops
