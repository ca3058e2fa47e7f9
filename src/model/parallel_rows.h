// Row-wise work of the model split over a kernel context's threads.
#pragma once

#include <cstdint>

#include "backend/thread_pool.h"
#include "ops/matmul.h"

namespace dsv3 {

// Tokens per unit of the per-token passes (norms, residual adds, RoPE, SiLU, the embedding): a
// prefill's tokens split over the threads, decoding's one stays on the calling thread.
inline constexpr int64_t kTokenGrain = 16;

// fn(begin, end) over [0, n) split over ctx's pool in multiples of `grain`; on the calling thread
// when there is no pool or less than two grains of work (decoding's few rows).
template <typename Fn>
void ParallelRows(const ops::KernelContext& ctx, int64_t n, int64_t grain, Fn&& fn) {
  if (ctx.pool == nullptr || n <= grain) {
    fn(int64_t{0}, n);
    return;
  }
  ctx.pool->ParallelFor(
      n, [&](int64_t begin, int64_t end) { fn(begin, end); }, grain);
}

}  // namespace dsv3
