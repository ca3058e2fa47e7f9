// MatMulBatch: many small products in one parallel region (see matmul.h).
#include <algorithm>
#include <functional>

#include "ops/int8_dot.h"
#include "ops/matmul.h"

namespace dsv3::ops {

namespace {
// Same grain as MatMul's thread chunks from 8 tokens on: whole row tiles, and no two threads share
// a cache line of y for row counts that are multiples of 16.
constexpr int64_t kChunkRows = 64;
// Multiply-adds of one chunk; at least 1, so a chunk with no arithmetic (zero columns still has
// zeros to write) is owned by some thread.
int64_t ChunkWork(const MatMulJob& job) {
  return std::max<int64_t>(1, job.T * job.w->cols);
}
// A job's product on the exact / bf16 path, rows [lo, hi), x given by rows where it has x_rows.
void RunRowRange(const KernelContext& ctx, const MatMulJob& job, int64_t lo, int64_t hi) {
  if (job.x_rows == nullptr) return MatMulRowRange(ctx, job.x, job.T, *job.w, lo, hi, job.y);
  MatMulRowRangeOfRows(ctx, job.x, job.x_rows, job.T, *job.w, lo, hi, job.y);
}
// Rows [lo, hi) of a job on the calling thread: an int8 job through the thread's runner (which
// keeps x's layout for the next job on the same x), any other as RunRowRange.
void RunJobRows(const KernelContext& ctx, Int8RowRunner* runner, const MatMulJob& job, int64_t lo,
                int64_t hi) {
  if (runner != nullptr && UsesInt8Dot(ctx, *job.w))
    runner->Run(job.x, job.T, *job.w, lo, hi, job.y, job.x_rows, job.xq);
  else
    RunRowRange(ctx, job, lo, hi);
}
int64_t Chunks(const MatMulJob& job) {
  return (job.w->rows + kChunkRows - 1) / kChunkRows;
}
// An int8 job's tokens are laid out Int8ChunkTokens at a time, so a job with more tokens (a
// prefill's shared expert, the attention's input projections) is cut by token chunk as well:
// the units of token chunk c are its row chunks, after those of chunk c - 1. Other jobs: 1.
int64_t TokenChunks(const KernelContext& ctx, const MatMulJob& job) {
  if (!UsesInt8Dot(ctx, *job.w)) return 1;
  const int64_t tokens = Int8ChunkTokens(job.w->cols);
  return std::max<int64_t>(1, (job.T + tokens - 1) / tokens);
}
int64_t Units(const KernelContext& ctx, const MatMulJob& job) {
  return TokenChunks(ctx, job) * Chunks(job);
}
// Multiply-adds of one unit (an average over the token chunks: only the static first split
// uses it).
int64_t UnitWork(const KernelContext& ctx, const MatMulJob& job) {
  return std::max<int64_t>(1, ChunkWork(job) / TokenChunks(ctx, job));
}

// Below this many tokens every kernel of the exact and bf16 paths takes the dot-product form, which
// packs nothing per call (matmul.cpp).
constexpr int64_t kDotFormTokens = 8;

// Whether a job may be cut into many calls at no extra cost: on the int8 path (by token chunk and
// row chunk: the runner keeps a token chunk's layout across calls), or a dot-product kernel's few
// tokens (decode) read in place.
bool CutsFreely(const KernelContext& ctx, const MatMulJob& job) {
  if (UsesInt8Dot(ctx, *job.w)) return true;
  return job.T < kDotFormTokens && job.x_rows == nullptr;
}

// Every job cuts freely: the jobs' units (row chunks, per token chunk), in job order, are the
// units of one ParallelForStealing region. Thread t's share starts at the first unit at or past
// t / threads of the total work (as the static split below cuts), and a thread that finishes early
// takes the back half of what another has left. The kernels' sums do not depend on the cut (an
// int8 job's units are Int8RowRunner::Run calls on its token chunks, the chunks MatMul takes; a
// token chunk is laid out again only when a thread's claims alternate between chunks or jobs on
// different x), so the results are the same bits. (With the static split for batches holding a
// job over one token chunk, bench-medium q4_0 pp512's MoE gate/up batch kept one thread 18 % idle:
// it took the shared expert's 512 tokens, the fastest work per multiply-add.)
void MatMulBatchBalanced(const KernelContext& ctx, const MatMulJob* jobs, int64_t num_jobs) {
  struct Batch {
    const KernelContext* ctx;
    const MatMulJob* jobs;
    int64_t num_jobs, units, total_work;
    int threads;
  } batch{&ctx, jobs, num_jobs, 0, 0, ctx.pool->num_threads()};
  for (int64_t j = 0; j < num_jobs; ++j) {
    batch.units += Units(ctx, jobs[j]);
    batch.total_work += Units(ctx, jobs[j]) * UnitWork(ctx, jobs[j]);
  }
  // One captured pointer each keeps the lambdas in std::function's small buffer (no allocation).
  const std::function<int64_t(int)> first_unit = [b = &batch](int t) {
    const int64_t target = b->total_work * t / b->threads;
    int64_t unit = 0, work = 0;
    for (int64_t j = 0; j < b->num_jobs; ++j) {
      const int64_t units = Units(*b->ctx, b->jobs[j]), unit_work = UnitWork(*b->ctx, b->jobs[j]);
      if (work + units * unit_work <= target) {
        unit += units;
        work += units * unit_work;
        continue;
      }
      return unit + (target - work + unit_work - 1) / unit_work;
    }
    return unit;
  };
  ctx.pool->ParallelForStealing(batch.units, &first_unit, [b = &batch](int, UnitQueue& queue) {
    const KernelContext& ctx = *b->ctx;
    Int8RowRunner runner(ctx.isa);
    int64_t begin = 0, end = 0, j = 0, job_first = 0;  // job j's units: job_first + ..
    while (queue.Next(&begin, &end)) {
      if (begin < job_first) j = job_first = 0;  // a stolen range behind this one
      // One Run per job and token chunk the units [begin, end) cover.
      for (int64_t u = begin; u < end;) {
        while (u >= job_first + Units(ctx, b->jobs[j])) job_first += Units(ctx, b->jobs[j++]);
        const MatMulJob& job = b->jobs[j];
        const int64_t chunks = Chunks(job);
        const int64_t c = (u - job_first) / chunks;  // the token chunk
        const int64_t chunk_first = job_first + c * chunks;
        const int64_t last = std::min(end, chunk_first + chunks);
        const int64_t lo = (u - chunk_first) * kChunkRows;
        const int64_t hi = std::min(job.w->rows, (last - chunk_first) * kChunkRows);
        if (UsesInt8Dot(ctx, *job.w)) {
          const int64_t tokens = Int8ChunkTokens(job.w->cols), t0 = c * tokens;
          runner.Run(job.x, std::min(tokens, job.T - t0), *job.w, lo, hi, job.y + t0 * job.w->rows,
                     job.x_rows, job.xq, t0);
        } else {
          RunRowRange(ctx, job, lo, hi);
        }
        u = last;
      }
    }
  });
}

// Batches of at least this many jobs a thread that do not all cut freely take whole jobs as units.
constexpr int64_t kJobUnitsPerThread = 8;

// Many jobs, some of which do not cut freely (the MoE layer's experts on the exact or bf16-dot
// path, whose packed kernels pack x once per call): whole jobs, in order, are the units of one
// ParallelForStealing region. Thread t's share starts at the first job whose middle lies past
// t / threads of the total work (the static split below cuts the same work, but inside jobs), and
// a thread that finishes early takes whole jobs from another instead of waiting for it. One call
// per job, so the results are MatMul's bits. (bench-medium BF16 --bf16-dot pp512 with the static
// split: the MoE gate/up batch left one thread 4 ms a layer idle, 10 %: the static split weighs
// work by multiply-adds, and the shared expert's 512 tokens run faster per multiply-add than the
// experts' few. Forwards alternating between both in one process: --bf16-dot 1.0-2.5 % less time
// in 4 of 5 runs, level in one; the exact path 1.0 % less in 2 of 2.)
void MatMulBatchByJob(const KernelContext& ctx, const MatMulJob* jobs, int64_t num_jobs) {
  struct Batch {
    const KernelContext* ctx;
    const MatMulJob* jobs;
    int64_t num_jobs, total_work;
    int threads;
  } batch{&ctx, jobs, num_jobs, 0, ctx.pool->num_threads()};
  for (int64_t j = 0; j < num_jobs; ++j) batch.total_work += Chunks(jobs[j]) * ChunkWork(jobs[j]);
  // One captured pointer each keeps the lambdas in std::function's small buffer (no allocation).
  const std::function<int64_t(int)> first_unit = [b = &batch](int t) {
    const int64_t target = b->total_work * t / b->threads;
    int64_t work = 0, j = 0;
    for (; j < b->num_jobs; ++j) {
      const int64_t job_work = Chunks(b->jobs[j]) * ChunkWork(b->jobs[j]);
      if (work + job_work / 2 >= target) break;
      work += job_work;
    }
    return j;
  };
  ctx.pool->ParallelForStealing(num_jobs, &first_unit, [b = &batch](int, UnitQueue& queue) {
    Int8RowRunner runner(b->ctx->isa);
    int64_t begin = 0, end = 0;
    while (queue.Next(&begin, &end))
      for (int64_t j = begin; j < end; ++j)
        RunJobRows(*b->ctx, &runner, b->jobs[j], 0, b->jobs[j].w->rows);
  });
}

}  // namespace

void MatMulBatch(const KernelContext& ctx, const MatMulJob* jobs, int64_t num_jobs) {
  bool any_int8 = false, balanced = true;
  for (int64_t j = 0; j < num_jobs; ++j) {
    any_int8 = any_int8 || UsesInt8Dot(ctx, *jobs[j].w);
    balanced = balanced && CutsFreely(ctx, jobs[j]);
  }
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1) {
    if (!any_int8) {
      for (int64_t j = 0; j < num_jobs; ++j) RunRowRange(ctx, jobs[j], 0, jobs[j].w->rows);
      return;
    }
    Int8RowRunner runner(ctx.isa);  // jobs on the same x quantize it once
    for (int64_t j = 0; j < num_jobs; ++j) RunJobRows(ctx, &runner, jobs[j], 0, jobs[j].w->rows);
    return;
  }
  if (balanced) return MatMulBatchBalanced(ctx, jobs, num_jobs);
  if (num_jobs >= kJobUnitsPerThread * ctx.pool->num_threads())
    return MatMulBatchByJob(ctx, jobs, num_jobs);
  // Work = T * rows * cols multiply-adds; each thread takes a contiguous share of the total,
  // cut at chunk boundaries. Every output is computed by exactly one kernel call whose
  // arithmetic does not depend on the cut, so results equal MatMul's bit for bit.
  int64_t total = 0;
  for (int64_t j = 0; j < num_jobs; ++j) total += Chunks(jobs[j]) * ChunkWork(jobs[j]);
  const int threads = ctx.pool->num_threads();
  const auto share = [&](int thread, Int8RowRunner* runner) {
    const int64_t my_begin = total * thread / threads, my_end = total * (thread + 1) / threads;
    int64_t offset = 0;  // work before the current chunk
    for (int64_t j = 0; j < num_jobs; ++j) {
      const MatMulJob& job = jobs[j];
      const int64_t chunk_work = ChunkWork(job);
      // A chunk belongs to the thread whose share contains its first unit of work, so a thread's
      // chunks of one job are contiguous: rows [lo, hi).
      int64_t lo = -1, hi = -1;
      for (int64_t r0 = 0; r0 < job.w->rows; r0 += kChunkRows, offset += chunk_work) {
        if (offset < my_begin || offset >= my_end) continue;
        if (lo < 0) lo = r0;
        hi = std::min(job.w->rows, r0 + kChunkRows);
      }
      // One call for the thread's whole range: the packed (prefill) kernel packs x once per call;
      // an int8 job's x is quantized by each thread that has rows of it (once per thread and x).
      if (lo >= 0) RunJobRows(ctx, runner, job, lo, hi);
    }
  };
  // One captured pointer keeps the lambda in std::function's small buffer (no allocation).
  struct Region {
    const decltype(share)* fn;
    bool any_int8;
    Isa isa;
  } const region{&share, any_int8, ctx.isa};
  ctx.pool->RunOnAll([r = &region](int thread) {
    if (!r->any_int8) return (*r->fn)(thread, nullptr);
    Int8RowRunner runner(r->isa);
    (*r->fn)(thread, &runner);
  });
}

}  // namespace dsv3::ops
