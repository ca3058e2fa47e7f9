// The three matrix products of a linear layer's forward and backward passes, for any Real.
// Each output element is computed by exactly one thread with a fixed summation order, so results
// do not depend on the thread count (determinism for a given seed, issue 4).
#pragma once

#include <cstdint>

#include "backend/thread_pool.h"
#include "ops/gemm.h"
#include "ops/isa.h"

namespace dsv3::train {

struct Context {
  ThreadPool* pool = nullptr;  // nullptr: run on the calling thread
  ops::Isa isa = ops::Isa::kScalar;
  // Matrix products (forward and backward) on bf16-rounded operands with f32 sums; weights, their
  // gradients and the optimizer stay f32 (mixed precision, as the report trains). Float only.
  bool bf16_compute = false;
};

// Runs fn(begin, end) over [0, n) on the pool (or inline).
template <typename Fn>
void ParallelRows(const Context& ctx, int64_t n, Fn&& fn) {
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1 || n <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  ctx.pool->ParallelFor(n, [&](int64_t b, int64_t e) { fn(b, e); });
}

// y[T, n] = x[T, k] · w[n, k]^T in float on the packed SIMD GEMM of ops/ (ctx.bf16_compute: on
// bf16-rounded operands). Overwrites y; each element has a fixed summation order.
void ProductF32(const Context& ctx, const float* x, int64_t T, const float* w, int64_t n, int64_t k,
                float* y);

// C[M, N] (+)= A · B^T with A(m, k), B(n, k) read from either stored layout (ops::GemmOperand):
// ops::Gemm's packed kernel where the CPU has one, else transposed copies through ProductF32;
// ctx.bf16_compute always takes the ProductF32 route. The fixed summation order of either keeps
// results independent of the thread count.
void GemmF32(const Context& ctx, int64_t M, int64_t N, int64_t K, const ops::GemmOperand& a,
             const ops::GemmOperand& b, float* c, int64_t ldc, bool accumulate);

// y[T, out] = x[T, in] · W[out, in]^T  (overwrites y)
template <typename Real>
void LinearForward(const Context& ctx, const Real* x, int64_t T, const Real* W, int64_t out,
                   int64_t in, Real* y);

// dx[T, in] += dy[T, out] · W[out, in]   (dx may be null: no input gradient wanted)
// dW[out, in] += dy^T · x                 (dW may be null)
template <typename Real>
void LinearBackward(const Context& ctx, const Real* x, int64_t T, const Real* W, int64_t out,
                    int64_t in, const Real* dy, Real* dx, Real* dW);

}  // namespace dsv3::train
