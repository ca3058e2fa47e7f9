// MatMulBatch: many small products in one parallel region (see matmul.h).
#include <algorithm>

#include "ops/int8_dot.h"
#include "ops/matmul.h"

namespace dsv3::ops {

namespace {
// Requests the first kPrefetchBytes of rows [lo, hi) of w (and of q8_0 / q4_0 row scales) from
// memory, so that a thread's next job does not start cold: matmul_bench BM_MoeDecode (24 small
// matrices a token), one thread, q4_0 21.6-24.1 -> 26.0-28.5 GB/s; two threads unchanged.
constexpr int64_t kPrefetchBytes = 4096;
void PrefetchRows(const WeightView& w, int64_t lo, int64_t hi) {
  const bool grouped = w.dtype == DType::kI8 || w.dtype == DType::kU8;
  const int64_t row_bytes = w.dtype == DType::kU8 ? Q4RowBytes(w.cols)
                            : w.dtype == DType::kI8
                                ? w.cols
                                : w.cols * static_cast<int64_t>(DTypeSize(w.dtype));
  const auto* data = static_cast<const char*>(w.data) + lo * row_bytes;
  const int64_t n = std::min(kPrefetchBytes, (hi - lo) * row_bytes);
  for (int64_t b = 0; b < n; b += 64) __builtin_prefetch(data + b);
  if (!grouped) return;
  const int64_t groups = QuantGroups(w.cols);
  const auto* scale = reinterpret_cast<const char*>(w.scale + lo * groups);
  const int64_t ns = std::min(kPrefetchBytes / 4, (hi - lo) * groups * 4);
  for (int64_t b = 0; b < ns; b += 64) __builtin_prefetch(scale + b);
}

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
  bool any_int8 = false;
  for (int64_t j = 0; j < num_jobs; ++j) any_int8 = any_int8 || UsesInt8Dot(ctx, *jobs[j].w);
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1) {
    if (!any_int8) {
      for (int64_t j = 0; j < num_jobs; ++j)
        MatMulRowRange(ctx, jobs[j].x, jobs[j].T, *jobs[j].w, 0, jobs[j].w->rows, jobs[j].y);
      return;
    }
    Int8RowRunner runner(ctx.isa);  // jobs on the same x quantize it once
    for (int64_t j = 0; j < num_jobs; ++j) {
      const MatMulJob& job = jobs[j];
      if (UsesInt8Dot(ctx, *job.w))
        runner.Run(job.x, job.T, *job.w, 0, job.w->rows, job.y);
      else
        MatMulRowRange(ctx, job.x, job.T, *job.w, 0, job.w->rows, job.y);
    }
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
  const auto share = [&](int thread, Int8RowRunner* runner) {
    const int64_t my_begin = total * thread / threads, my_end = total * (thread + 1) / threads;
    int64_t offset = 0;  // work before the current chunk
    // The thread's rows of each job, found one job ahead so that the next job's first lines can
    // be requested while this one runs (each job would otherwise start cold from DRAM).
    const auto rows_of = [&](int64_t j, int64_t* lo, int64_t* hi) {
      const MatMulJob& job = jobs[j];
      const int64_t chunk_work = ChunkWork(job);
      // A chunk belongs to the thread whose share contains its first unit of work, so a thread's
      // chunks of one job are contiguous: rows [lo, hi).
      *lo = -1;
      *hi = -1;
      for (int64_t r0 = 0; r0 < job.w->rows; r0 += kChunkRows, offset += chunk_work) {
        if (offset < my_begin || offset >= my_end) continue;
        if (*lo < 0) *lo = r0;
        *hi = std::min(job.w->rows, r0 + kChunkRows);
      }
    };
    int64_t next_lo = -1, next_hi = -1, next = 0;
    for (; next < num_jobs; ++next) {
      rows_of(next, &next_lo, &next_hi);
      if (next_lo >= 0) break;
    }
    while (next < num_jobs) {
      const int64_t j = next, lo = next_lo, hi = next_hi;
      for (++next; next < num_jobs; ++next) {
        rows_of(next, &next_lo, &next_hi);
        if (next_lo >= 0) break;
      }
      if (next < num_jobs) PrefetchRows(*jobs[next].w, next_lo, next_hi);
      const MatMulJob& job = jobs[j];
      if (runner != nullptr && UsesInt8Dot(ctx, *job.w)) {
        // x is quantized by each thread that has rows of the job (once per thread and x).
        runner->Run(job.x, job.T, *job.w, lo, hi, job.y);
        continue;
      }
      // One call for the thread's whole range: the packed (prefill) kernel packs x once per call.
      MatMulRowRange(ctx, job.x, job.T, *job.w, lo, hi, job.y);
    }
  };
  ctx.pool->RunOnAll([&](int thread) {
    if (!any_int8) return share(thread, nullptr);
    Int8RowRunner runner(ctx.isa);
    share(thread, &runner);
  });
}

}  // namespace dsv3::ops
