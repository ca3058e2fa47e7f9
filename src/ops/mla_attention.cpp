// Scalar reference of the fused MLA attention and its ISA dispatch.
#include "ops/mla_attention.h"

#include <algorithm>
#include <cmath>

#include "ops/mla_attention_kernels.h"

namespace dsv3::ops {

namespace scalar {

void MlaAttention(const MlaQuery& q, const LatentCacheView& cache, float* o_lat, float* max,
                  float* sum) {
  const int64_t r = cache.kv_lora_rank, dr = cache.qk_rope_head_dim;
  for (int64_t h = 0; h < q.num_heads; ++h) {
    const float* q_lat = q.lat + h * r;              // [r]
    const float* q_pe = q.rope + h * q.rope_stride;  // [dr]
    float* acc = o_lat + h * r;                      // [r]: sum_j p_j c_j, rescaled as max rises
    std::fill(acc, acc + r, 0.0f);
    float running_max = -INFINITY, total = 0.0f;
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
        total *= alpha;
        for (int64_t k = 0; k < r; ++k) acc[k] *= alpha;
        running_max = s;
      }
      const float p = std::exp(s - running_max);
      total += p;
      for (int64_t k = 0; k < r; ++k) acc[k] += p * c[k];
    }
    if (max != nullptr) {  // a partial result: the sums stay unnormalised
      max[h] = running_max;
      sum[h] = total;
    } else if (cache.n > 0) {
      for (int64_t k = 0; k < r; ++k) acc[k] /= total;
    }
  }
}

}  // namespace scalar

namespace {

void Dispatch(Isa isa, const MlaQuery& q, const LatentCacheView& cache, float* o, float* max,
              float* sum) {
  switch (isa) {
    case Isa::kAvx512:
      return avx512::MlaAttention(q, cache, o, max, sum);
    case Isa::kAvx2:
      return avx2::MlaAttention(q, cache, o, max, sum);
    case Isa::kScalar:
      break;
  }
  scalar::MlaAttention(q, cache, o, max, sum);
}

}  // namespace

void MlaAttention(Isa isa, const MlaQuery& q, const LatentCacheView& cache, float* o_lat) {
  Dispatch(isa, q, cache, o_lat, nullptr, nullptr);
}

void MlaAttentionPartial(Isa isa, const MlaQuery& q, const LatentCacheView& cache, float* o_part,
                         float* max, float* sum) {
  Dispatch(isa, q, cache, o_part, max, sum);
}

void MergeMlaPartials(int64_t parts, int64_t num_heads, int64_t r, int64_t h_begin, int64_t h_end,
                      const float* o_parts, const float* max, const float* sum, float* o_lat) {
  for (int64_t h = h_begin; h < h_end; ++h) {
    float m = -INFINITY;  // the largest score of the head over all parts
    for (int64_t p = 0; p < parts; ++p) m = std::max(m, max[p * num_heads + h]);
    float* out = o_lat + h * r;
    std::fill(out, out + r, 0.0f);
    if (m == -INFINITY) continue;  // no positions at all
    float total = 0.0f;
    for (int64_t p = 0; p < parts; ++p) {
      // exp(-inf - m) = 0 for an empty part; m is finite once any part has a position.
      const float w = std::exp(max[p * num_heads + h] - m);
      total += w * sum[p * num_heads + h];
      const float* o = o_parts + (p * num_heads + h) * r;
      for (int64_t k = 0; k < r; ++k) out[k] += w * o[k];
    }
    if (total > 0.0f)
      for (int64_t k = 0; k < r; ++k) out[k] /= total;
  }
}

}  // namespace dsv3::ops
