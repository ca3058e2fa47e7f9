#include "model/mlp.h"

#include "ops/vector_ops.h"

namespace dsv3 {

void MlpForward(const MlpWeights& w, const ops::KernelContext& ctx, const float* x, int64_t T,
                MlpScratch& scratch, float* out) {
  const int64_t I = w.intermediate;
  float* gate = scratch.gate.Get(T * I);  // [T, I]
  float* up = scratch.up.Get(T * I);      // [T, I]
  const ops::MatMulJob jobs[2] = {{x, T, &w.gate_proj, gate}, {x, T, &w.up_proj, up}};
  ops::MatMulBatch(ctx, jobs, 2);
  ops::SiluMul(ctx.isa, gate, up, T * I);
  ops::MatMul(ctx, gate, T, w.down_proj, out);  // [T, H]
}

}  // namespace dsv3
