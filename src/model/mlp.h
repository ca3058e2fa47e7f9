// SwiGLU feed-forward (spec §4): down_proj(silu(gate_proj(x)) * up_proj(x)). Used by dense
// layers, routed experts and the shared expert.
#pragma once

#include <cstdint>

#include "model/scratch.h"
#include "model/weights.h"

namespace dsv3 {

struct MlpScratch {
  ScratchBuffer gate, up;
};

// x: [T, H] -> out: [T, H] (overwritten)
void MlpForward(const MlpWeights& w, const ops::KernelContext& ctx, const float* x, int64_t T,
                MlpScratch& scratch, float* out);

}  // namespace dsv3
