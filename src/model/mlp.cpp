#include "model/mlp.h"

#include "model/parallel_rows.h"
#include "ops/vector_ops.h"

namespace dsv3 {

void MlpForward(const MlpWeights& w, const ops::KernelContext& ctx, const float* x, int64_t T,
                MlpScratch& scratch, float* out) {
  const int64_t I = w.intermediate;
  float* gate = scratch.gate.Get(T * I);  // [T, I]
  float* up = scratch.up.Get(T * I);      // [T, I]
  const ops::MatMulJob jobs[2] = {{x, T, &w.gate_proj, gate}, {x, T, &w.up_proj, up}};
  ops::MatMulBatch(ctx, jobs, 2);
  // Elementwise, so any split over the threads gives the same values (a prefill's 512 x 5632 took
  // ~1.1 ms on one thread, hot in cache: bench-medium's dense layer).
  ParallelRows(ctx, T, kTokenGrain, [&](int64_t begin, int64_t end) {
    ops::SiluMul(ctx.isa, gate + begin * I, up + begin * I, (end - begin) * I);
  });
  ops::MatMul(ctx, gate, T, w.down_proj, out);  // [T, H]
}

}  // namespace dsv3
