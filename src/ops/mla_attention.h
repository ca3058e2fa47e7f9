// The absorbed MLA attention core (spec §5.4) for one query token: scores against the latent
// cache, softmax and the weighted sum of latents, fused into one pass over the cache with an
// online (flash-style) softmax. The latent cache is shared by all heads, so every head of a call
// is served from each block of cache rows while it is in L1: the cache is read from memory once
// per call, not once per head.
#pragma once

#include <cstdint>

#include "ops/isa.h"

namespace dsv3::ops {

// num_heads queries of one token, in the latent space (W_UK already absorbed).
struct MlaQuery {
  const float* lat = nullptr;   // q_lat: [num_heads, kv_lora_rank]
  const float* rope = nullptr;  // q_pe:  [num_heads, rope_stride], the first qk_rope_head_dim used
  int64_t rope_stride = 0;
  int64_t num_heads = 0;
  float scale = 1.0f;  // softmax_scale
};

// The first n positions of one layer's cache (model/kv_cache.h).
struct LatentCacheView {
  const float* latent = nullptr;    // c:    [n, kv_lora_rank]
  const float* rope_key = nullptr;  // k_pe: [n, qk_rope_head_dim]
  int64_t n = 0;
  int64_t kv_lora_rank = 0;
  int64_t qk_rope_head_dim = 0;
};

// Heads the SIMD kernels serve per pass over the cache (their running max and sum live on the
// stack): calls of more heads take several passes, so callers batching queries from several
// tokens (model/mla.cpp) hand them over this many at a time.
inline constexpr int64_t kMlaHeadsPerPass = 128;

// For every head h and j < n:
//   s[h, j]  = scale * (q_lat[h] . c[j] + q_pe[h] . k_pe[j])
//   o_lat[h] = sum_j softmax_j(s[h, :]) c[j]                      o_lat: [num_heads, kv_lora_rank]
// n == 0 gives zeros. The result of a head does not depend on num_heads or on the other heads in
// the call, so splitting heads over threads does not change a bit. Never allocates.
//
// Accuracy against exact arithmetic (tests/ops_mla_attention_test.cpp checks it): each output is
// the exact convex combination of the c[j] with weights perturbed by relative errors of at most
// eps = (score rounding: gamma(kv_lora_rank + qk_rope_head_dim + 2) * scale * sum |q||c,k_pe|)
//       + u * |s - max s| + (K + 1) * (exp error + 2u),
// K the number of times the running maximum rises (rescales), plus gamma(n + K + 2) for the sums;
// the scalar twin's exp error is glibc's (< 1 ulp), the SIMD variants' kExpRelError.
void MlaAttention(Isa isa, const MlaQuery& q, const LatentCacheView& cache, float* o_lat);

// MlaAttention over one range of positions, left unnormalised so that ranges computed apart (on
// different threads) can be merged: per head h, max[h] = the largest score m, sum[h] =
// sum_j exp(s[h, j] - m) and o_part[h] = sum_j exp(s[h, j] - m) c[j] (n == 0: max -inf, sum and
// o_part 0). MlaAttention divides o_part by sum; the arithmetic is otherwise the same.
void MlaAttentionPartial(Isa isa, const MlaQuery& q, const LatentCacheView& cache, float* o_part,
                         float* max, float* sum);

// o_lat = the softmax-weighted sum over all positions of `parts` consecutive ranges, from their
// MlaAttentionPartial results ([parts, num_heads, r] and [parts, num_heads]), for heads
// [h_begin, h_end): per head, with M the largest max, o_lat[h] = sum_p exp(max_p - M) o_p /
// sum_p exp(max_p - M) sum_p, the parts added in order (std::exp: the same on every ISA and
// thread count for the same partial results). One part gives MlaAttention's result exactly.
void MergeMlaPartials(int64_t parts, int64_t num_heads, int64_t r, int64_t h_begin, int64_t h_end,
                      const float* o_parts, const float* max, const float* sum, float* o_lat);

}  // namespace dsv3::ops
