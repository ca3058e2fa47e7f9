#include "ops/gemm.h"

#include <algorithm>
#include <cmath>

#include "backend/thread_pool.h"

namespace dsv3::ops {

namespace {

float Element(const GemmOperand& op, int64_t i, int64_t k) {
  return op.transposed ? op.data[k * op.ld + i] : op.data[i * op.ld + k];
}

// Granularity of the thread split: the AVX-512 micro-kernel's tile (12 rows x 32 columns of C).
constexpr int64_t kSplitM = 12;
constexpr int64_t kSplitN = 32;

}  // namespace

namespace scalar {

void GemmBlock(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const GemmOperand& a,
               const GemmOperand& b, float* c, int64_t ldc, bool accumulate) {
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t n = n0; n < n1; ++n) {
      float& out = c[m * ldc + n];
      for (int64_t k0 = 0; k0 < K; k0 += kGemmKc) {
        float part = 0.0f;  // this block's products, fused in order onto a zero start
        for (int64_t k = k0; k < std::min(K, k0 + kGemmKc); ++k)
          part = std::fma(Element(a, m, k), Element(b, n, k), part);
        out = (k0 == 0 && !accumulate) ? part : out + part;
      }
    }
  }
}

}  // namespace scalar

bool GemmIsPacked(Isa isa) {
  return isa == Isa::kAvx2 || isa == Isa::kAvx512;
}

void Gemm(const KernelContext& ctx, int64_t M, int64_t N, int64_t K, const GemmOperand& a,
          const GemmOperand& b, float* c, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t m = 0; m < M; ++m) std::fill(c + m * ldc, c + m * ldc + N, 0.0f);
    return;
  }
  auto block = [&](int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    if (ctx.isa == Isa::kAvx512)
      avx512::GemmBlock(m0, m1, n0, n1, K, a, b, c, ldc, accumulate);
    else if (ctx.isa == Isa::kAvx2)
      avx2::GemmBlock(m0, m1, n0, n1, K, a, b, c, ldc, accumulate);
    else
      scalar::GemmBlock(m0, m1, n0, n1, K, a, b, c, ldc, accumulate);
  };
  const int threads = ctx.pool == nullptr ? 1 : ctx.pool->num_threads();
  if (threads <= 1 || M * N * K < (int64_t{1} << 18)) {
    block(0, M, 0, N);
    return;
  }
  // Split C's rows (A's rows) when there are enough: each thread then packs only its own part of
  // A, and B's packing is the same total work either way. Else split C's columns.
  const int64_t mb = (M + kSplitM - 1) / kSplitM, nb = (N + kSplitN - 1) / kSplitN;
  if (mb >= 4 * threads || mb >= nb) {
    ctx.pool->ParallelFor(
        mb, [&](int64_t b0, int64_t b1) { block(b0 * kSplitM, std::min(M, b1 * kSplitM), 0, N); });
  } else {
    ctx.pool->ParallelFor(
        nb, [&](int64_t b0, int64_t b1) { block(0, M, b0 * kSplitN, std::min(N, b1 * kSplitN)); });
  }
}

}  // namespace dsv3::ops
