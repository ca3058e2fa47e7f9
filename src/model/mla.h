// Multi-head Latent Attention (spec §5): low-rank queries and keys/values, decoupled RoPE, and a
// cache of only the normalised latent plus the rotated rope key.
#pragma once

#include <cstdint>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/phase_profile.h"
#include "model/rope_yarn.h"
#include "model/scratch.h"
#include "model/weights.h"

namespace dsv3 {

struct MlaScratch {
  ScratchBuffer q_a, q, ckv, o, per_thread, naive_kv;
  ScratchBuffer latent_q_o;    // batched absorbed path: q_lat and o_lat of a block of tokens,
                               // per thread the two parts of kPassQueries queries
  ScratchBuffer decompressed;  // decompressed path: per thread one head's k, v and scores
  ScratchBuffer head_f32;      // per thread one head's kv_b_proj rows in f32 (the f32 products)
  ScratchBuffer split_keys;    // decoding a long cache: q_lat, o_lat, the parts' sums, per thread
                               // a kv_b_proj row and output
};

enum class AttentionPath {
  // Per call, the cheaper of kAbsorbed and kDecompressed by their operation counts (where the
  // CPU has a packed Gemm; elsewhere kAbsorbed): decoding and short chunks after a long context
  // take the absorbed form, prefill the decompressed one. The default.
  kAuto,
  // Scores against the latent directly (W_UK folded into the query, W_UV applied after): per
  // cached position and head 2 kv_lora_rank + qk_rope_head_dim multiply-adds. Decoding a token
  // against 512 or more cached positions splits them into parts over the threads (mla.cpp).
  kAbsorbed,
  // kAbsorbed without that split: a decoded token's heads split over the threads, each reading
  // the whole cache (for tests).
  kAbsorbedHeadSplit,
  // Calls of two or more tokens decompress every cached position's k_nope and v per head (one
  // product per head over the whole context, spec §5.3), then run scores, softmax and values as
  // matrix products over blocks of tokens: per position and head qk_head_dim + v_head_dim
  // multiply-adds, plus the decompression. Single tokens take the absorbed form.
  kDecompressed,
  kNaive,  // decompress k and v per head from the cached latent, one dot at a time: for tests
};

// Attention for T tokens at positions start_pos .. start_pos+T-1. Appends their latents and rope
// keys to `cache` (which must already hold positions 0 .. start_pos-1) and attends causally.
//   x:       [T, H]  input (already RMS-normalised)
//   cos_sin: rope table for these positions (RopeTable)
//   out:     [T, H]  o_proj output
//   profile: nullptr, or where the projections' and the attention's wall time is added
void MlaForward(const ModelConfig& config, const RopeParams& rope, const AttentionWeights& w,
                const ops::KernelContext& ctx, const float* x, int64_t T, int64_t start_pos,
                const float* cos_sin, AttentionPath path, LayerKvCache& cache, MlaScratch& scratch,
                float* out, PhaseProfile* profile = nullptr);

}  // namespace dsv3
