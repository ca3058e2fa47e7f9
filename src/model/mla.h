// Multi-head Latent Attention (spec §5): low-rank queries and keys/values, decoupled RoPE, and a
// cache of only the normalised latent plus the rotated rope key.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/rope_yarn.h"
#include "model/scratch.h"
#include "model/weights.h"

namespace dsv3 {

struct MlaScratch {
  ScratchBuffer q_a, q, ckv, o, per_thread, naive_kv;
  ScratchBuffer latent_q_o;  // batched absorbed path: q_lat and o_lat of every token and head
};

enum class AttentionPath {
  kAbsorbed,  // scores against the latent directly (W_UK folded into the query): the fast path
  kNaive,     // decompress k and v per head from the cached latent: for tests
};

// Attention for T tokens at positions start_pos .. start_pos+T-1. Appends their latents and rope
// keys to `cache` (which must already hold positions 0 .. start_pos-1) and attends causally.
//   x:       [T, H]  input (already RMS-normalised)
//   cos_sin: rope table for these positions (RopeTable)
//   out:     [T, H]  o_proj output
void MlaForward(const ModelConfig& config, const RopeParams& rope, const AttentionWeights& w,
                const ops::KernelContext& ctx, const float* x, int64_t T, int64_t start_pos,
                const float* cos_sin, AttentionPath path, LayerKvCache& cache, MlaScratch& scratch,
                float* out);

}  // namespace dsv3
