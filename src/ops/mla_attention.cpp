// Scalar reference of the fused MLA attention and its ISA dispatch.
#include "ops/mla_attention.h"

#include <algorithm>
#include <cmath>

#include "ops/mla_attention_kernels.h"

namespace dsv3::ops {

namespace scalar {

void MlaAttention(const MlaQuery& q, const LatentCacheView& cache, float* o_lat) {
  const int64_t r = cache.kv_lora_rank, dr = cache.qk_rope_head_dim;
  for (int64_t h = 0; h < q.num_heads; ++h) {
    const float* q_lat = q.lat + h * r;              // [r]
    const float* q_pe = q.rope + h * q.rope_stride;  // [dr]
    float* acc = o_lat + h * r;                      // [r]: sum_j p_j c_j, rescaled as max rises
    std::fill(acc, acc + r, 0.0f);
    float running_max = -INFINITY, sum = 0.0f;
    for (int64_t j = 0; j < cache.n; ++j) {
      const float* c = cache.latent + j * r;
      const float* k_pe = cache.rope_key + j * dr;
      float dot = 0.0f;
      for (int64_t k = 0; k < r; ++k) dot += q_lat[k] * c[k];
      for (int64_t k = 0; k < dr; ++k) dot += q_pe[k] * k_pe[k];
      const float s = q.scale * dot;
      if (s > running_max) {
        // exp(-inf) = 0 on the first position, where acc and sum are still zero.
        const float alpha = std::exp(running_max - s);
        sum *= alpha;
        for (int64_t k = 0; k < r; ++k) acc[k] *= alpha;
        running_max = s;
      }
      const float p = std::exp(s - running_max);
      sum += p;
      for (int64_t k = 0; k < r; ++k) acc[k] += p * c[k];
    }
    if (cache.n > 0)
      for (int64_t k = 0; k < r; ++k) acc[k] /= sum;
  }
}

}  // namespace scalar

void MlaAttention(Isa isa, const MlaQuery& q, const LatentCacheView& cache, float* o_lat) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::MlaAttention(q, cache, o_lat);
    case Isa::kAvx2:
      return avx2::MlaAttention(q, cache, o_lat);
    case Isa::kScalar:
      break;
  }
  scalar::MlaAttention(q, cache, o_lat);
}

}  // namespace dsv3::ops
