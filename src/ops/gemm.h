// General f32 matrix product with either operand stored transposed, overwriting or accumulating
// into the output: the products of a training step (y = x·W^T, dx += dy·W, dW += dy^T·x) run on
// the packed micro-kernel straight from the tensors' own layouts, with no transposed copies and
// no temporary to add back.
#pragma once

#include <cstdint>

#include "ops/matmul.h"

namespace dsv3::ops {

// One operand of Gemm: element (i, k) is data[i * ld + k], or data[k * ld + i] when transposed.
struct GemmOperand {
  const float* data = nullptr;
  int64_t ld = 0;
  bool transposed = false;
};

// C[m, n] = (accumulate ? C[m, n] : 0) + sum_k A(m, k) * B(n, k)   for m < M, n < N
// C is c[m * ldc + n]. Summation order, the same on every ISA and for any thread count: k runs in
// blocks of kGemmKc; within a block the products are fused-multiply-added in order onto a zero
// start, and each block's sum is then added to C (the first block's stored when !accumulate).
// The scalar twin follows that order with std::fma, so every variant gives the same bits.
// Work is split over ctx.pool by blocks of C; never allocates (~260 KB of stack per thread).
constexpr int64_t kGemmKc = 256;
void Gemm(const KernelContext& ctx, int64_t M, int64_t N, int64_t K, const GemmOperand& a,
          const GemmOperand& b, float* c, int64_t ldc, bool accumulate);

// Whether ctx.isa has a packed Gemm kernel (AVX2, AVX-512); elsewhere Gemm runs the scalar twin,
// and callers that care about speed keep products in MatMul's layout instead.
bool GemmIsPacked(Isa isa);

// Blocks [m0, m1) x [n0, n1) of C on the calling thread.
namespace scalar {
void GemmBlock(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const GemmOperand& a,
               const GemmOperand& b, float* c, int64_t ldc, bool accumulate);
}  // namespace scalar
namespace avx2 {
void GemmBlock(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const GemmOperand& a,
               const GemmOperand& b, float* c, int64_t ldc, bool accumulate);
}  // namespace avx2
namespace avx512 {
void GemmBlock(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const GemmOperand& a,
               const GemmOperand& b, float* c, int64_t ldc, bool accumulate);
}  // namespace avx512

}  // namespace dsv3::ops
