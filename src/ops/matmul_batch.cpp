// MatMulBatch: many small products in one parallel region (see matmul.h).
#include <algorithm>

#include "ops/matmul.h"

namespace dsv3::ops {

namespace {
// Same grain as MatMul's thread chunks: whole row tiles, and no two threads share a cache line
// of y for row counts that are multiples of 16.
constexpr int64_t kChunkRows = 64;
// Multiply-adds of one chunk; at least 1, so a chunk with no arithmetic (zero columns still has
// zeros to write) is owned by some thread.
int64_t ChunkWork(const MatMulJob& job) {
  return std::max<int64_t>(1, job.T * job.w->cols);
}
}  // namespace

void MatMulBatch(const KernelContext& ctx, const MatMulJob* jobs, int64_t num_jobs) {
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1) {
    for (int64_t j = 0; j < num_jobs; ++j)
      MatMulRowRange(ctx, jobs[j].x, jobs[j].T, *jobs[j].w, 0, jobs[j].w->rows, jobs[j].y);
    return;
  }
  // Work = T * rows * cols multiply-adds; each thread takes a contiguous share of the total,
  // cut at chunk boundaries. Every output is computed by exactly one kernel call whose
  // arithmetic does not depend on the cut, so results equal MatMul's bit for bit.
  int64_t total = 0;
  for (int64_t j = 0; j < num_jobs; ++j) {
    const int64_t chunks = (jobs[j].w->rows + kChunkRows - 1) / kChunkRows;
    total += chunks * ChunkWork(jobs[j]);
  }
  const int threads = ctx.pool->num_threads();
  ctx.pool->RunOnAll([&](int thread) {
    const int64_t my_begin = total * thread / threads, my_end = total * (thread + 1) / threads;
    int64_t offset = 0;  // work before the current chunk
    for (int64_t j = 0; j < num_jobs; ++j) {
      const MatMulJob& job = jobs[j];
      const int64_t chunk_work = ChunkWork(job);
      for (int64_t r0 = 0; r0 < job.w->rows; r0 += kChunkRows, offset += chunk_work) {
        // A chunk belongs to the thread whose share contains its first unit of work.
        if (offset < my_begin || offset >= my_end) continue;
        MatMulRowRange(ctx, job.x, job.T, *job.w, r0, std::min(job.w->rows, r0 + kChunkRows),
                       job.y);
      }
    }
  });
}

}  // namespace dsv3::ops
