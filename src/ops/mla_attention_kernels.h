// Per-ISA entry points of ops::MlaAttention (ops/mla_attention.h). Only ops/*.cpp and tests
// include this. The scalar twin is the reference the SIMD variants are tested against.
#pragma once

#include "ops/mla_attention.h"

namespace dsv3::ops {

// Each variant: with max == nullptr, ops::MlaAttention; else ops::MlaAttentionPartial (o_lat
// then holds the unnormalised sums, max and sum [num_heads] the softmax state).

// One cache position at a time: the running maximum and sum are rescaled whenever a score
// exceeds the maximum; std::exp.
namespace scalar {
void MlaAttention(const MlaQuery& q, const LatentCacheView& cache, float* o_lat, float* max,
                  float* sum);
}  // namespace scalar

// Blocks of 8 positions (one score per lane), all heads per block; polynomial exp (avx2_exp.h).
namespace avx2 {
void MlaAttention(const MlaQuery& q, const LatentCacheView& cache, float* o_lat, float* max,
                  float* sum);
}  // namespace avx2

// Blocks of 16 positions, all heads per block; polynomial exp (avx512_exp.h).
namespace avx512 {
void MlaAttention(const MlaQuery& q, const LatentCacheView& cache, float* o_lat, float* max,
                  float* sum);
}  // namespace avx512

}  // namespace dsv3::ops
