// AVX2 variant of the fused MLA attention (ops/mla_attention.h): the AVX-512 variant's structure
// (read avx512_mla_attention.cpp) with blocks of 8 cache positions, one score per lane.
#include "ops/isa/simd_intrinsics.h"

#include <algorithm>
#include <cmath>

#include "ops/isa/avx2_exp.h"
#include "ops/mla_attention_kernels.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int kBlock = 8;               // cache positions per block: one score per lane
constexpr int64_t kHeadsPerPass = 128;  // heads whose running max and sum live on the stack

// All-ones in the first min(n, 8) lanes, for vmaskmovps.
__m256i TailMask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(n, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

float HorizontalMax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lane j of the result = the sum of the 8 lanes of v[j] (the same addition tree for every j).
__m256 ReduceRows(const __m256 v[kBlock]) {
  // Per 128-bit half: [v0, v1, v2, v3] partial sums of that half's lanes.
  const __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                       _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// acc[j] += lanes of a[.] * rows[j][.] over [0, len) for the 8 rows. The accumulators are copied
// to locals: __m256 may alias float, so updating acc[] in place would store it at every step.
void AccumulateDots(const float* a, const float* const rows[kBlock], int64_t len,
                    __m256 acc[kBlock]) {
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
  const float *r4 = rows[4], *r5 = rows[5], *r6 = rows[6], *r7 = rows[7];
  __m256 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  __m256 a4 = acc[4], a5 = acc[5], a6 = acc[6], a7 = acc[7];
  const auto step = [&](__m256 q, int64_t k, auto load) {
    a0 = _mm256_fmadd_ps(q, load(r0 + k), a0);
    a1 = _mm256_fmadd_ps(q, load(r1 + k), a1);
    a2 = _mm256_fmadd_ps(q, load(r2 + k), a2);
    a3 = _mm256_fmadd_ps(q, load(r3 + k), a3);
    a4 = _mm256_fmadd_ps(q, load(r4 + k), a4);
    a5 = _mm256_fmadd_ps(q, load(r5 + k), a5);
    a6 = _mm256_fmadd_ps(q, load(r6 + k), a6);
    a7 = _mm256_fmadd_ps(q, load(r7 + k), a7);
  };
  int64_t k = 0;
  for (; k + 8 <= len; k += 8)
    step(_mm256_loadu_ps(a + k), k, [](const float* x) { return _mm256_loadu_ps(x); });
  if (k < len) {
    const __m256i m = TailMask(len - k);
    step(_mm256_maskload_ps(a + k, m), k, [m](const float* x) { return _mm256_maskload_ps(x, m); });
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
  acc[4] = a4, acc[5] = a5, acc[6] = a6, acc[7] = a7;
}

// out[k] = out[k] * alpha + sum_j p[j] * rows[j][k] over [0, len), j in order.
void AccumulateValues(const float* p, const float* const rows[kBlock], int64_t len, __m256 alpha,
                      float* out) {
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
  const float *r4 = rows[4], *r5 = rows[5], *r6 = rows[6], *r7 = rows[7];
  const __m256 p0 = _mm256_set1_ps(p[0]), p1 = _mm256_set1_ps(p[1]);
  const __m256 p2 = _mm256_set1_ps(p[2]), p3 = _mm256_set1_ps(p[3]);
  const __m256 p4 = _mm256_set1_ps(p[4]), p5 = _mm256_set1_ps(p[5]);
  const __m256 p6 = _mm256_set1_ps(p[6]), p7 = _mm256_set1_ps(p[7]);
  const auto step = [&](__m256 a, int64_t k, auto load) {
    a = _mm256_fmadd_ps(p0, load(r0 + k), a);
    a = _mm256_fmadd_ps(p1, load(r1 + k), a);
    a = _mm256_fmadd_ps(p2, load(r2 + k), a);
    a = _mm256_fmadd_ps(p3, load(r3 + k), a);
    a = _mm256_fmadd_ps(p4, load(r4 + k), a);
    a = _mm256_fmadd_ps(p5, load(r5 + k), a);
    a = _mm256_fmadd_ps(p6, load(r6 + k), a);
    return _mm256_fmadd_ps(p7, load(r7 + k), a);
  };
  const auto full = [](const float* x) { return _mm256_loadu_ps(x); };
  int64_t k = 0;
  for (; k + 16 <= len; k += 16) {  // two independent FMA chains
    const __m256 a = step(_mm256_mul_ps(_mm256_loadu_ps(out + k), alpha), k, full);
    const __m256 b = step(_mm256_mul_ps(_mm256_loadu_ps(out + k + 8), alpha), k + 8, full);
    _mm256_storeu_ps(out + k, a);
    _mm256_storeu_ps(out + k + 8, b);
  }
  for (; k + 8 <= len; k += 8)
    _mm256_storeu_ps(out + k, step(_mm256_mul_ps(_mm256_loadu_ps(out + k), alpha), k, full));
  if (k < len) {
    const __m256i m = TailMask(len - k);
    const __m256 a = _mm256_mul_ps(_mm256_maskload_ps(out + k, m), alpha);
    _mm256_maskstore_ps(out + k, m,
                        step(a, k, [m](const float* x) { return _mm256_maskload_ps(x, m); }));
  }
}

// One head's online-softmax state, and its scores and weights for the current block.
struct HeadState {
  alignas(32) float weights[kBlock];  // the block's scores, then exp(score - max)
  float max = -INFINITY;              // running maximum of the scores seen
  float sum = 0.0f;                   // sum of exp(score - max) over the scores seen
  float alpha = 1.0f;                 // the block's rescale of the accumulator (and of sum)
};

// The block's scores for one head (-inf past the end, so that their weight is exp(-inf) = 0).
void HeadScores(const float* q_lat, const float* q_pe, const float* const rows[kBlock],
                const float* const keys[kBlock], int valid, const LatentCacheView& cache,
                float scale, HeadState& state) {
  __m256 dots[kBlock];
  for (auto& d : dots) d = _mm256_setzero_ps();
  AccumulateDots(q_lat, rows, cache.kv_lora_rank, dots);
  AccumulateDots(q_pe, keys, cache.qk_rope_head_dim, dots);
  const __m256 scores = _mm256_mul_ps(ReduceRows(dots), _mm256_set1_ps(scale));
  _mm256_store_ps(state.weights, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), scores,
                                                  _mm256_castsi256_ps(TailMask(valid))));
}

// The online-softmax step: raise the running maximum to the block's, rescale the sum (alpha is
// applied to the accumulator by the value pass), and turn the scores into weights.
void HeadSoftmax(HeadState& state) {
  const __m256 scores = _mm256_load_ps(state.weights);
  const float block_max = HorizontalMax(scores);
  state.alpha = 1.0f;
  if (block_max > state.max) {
    // 0 on the first block, where the accumulator and sum are still zero.
    state.alpha = _mm256_cvtss_f32(Exp(_mm256_set1_ps(state.max - block_max)));
    state.sum *= state.alpha;
    state.max = block_max;
  }
  const __m256 p = Exp(_mm256_sub_ps(scores, _mm256_set1_ps(state.max)));
  state.sum += HorizontalSum(p);
  _mm256_store_ps(state.weights, p);
}

}  // namespace

void MlaAttention(const MlaQuery& q, const LatentCacheView& cache, float* o_lat, float* max,
                  float* sum) {
  const int64_t r = cache.kv_lora_rank, dr = cache.qk_rope_head_dim, n = cache.n;
  for (int64_t h0 = 0; h0 < q.num_heads; h0 += kHeadsPerPass) {
    const int64_t heads = std::min(kHeadsPerPass, q.num_heads - h0);
    HeadState state[kHeadsPerPass];
    std::fill(o_lat + h0 * r, o_lat + (h0 + heads) * r, 0.0f);
    for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
      // Past the end (the last block), rows repeat the last position; their weight is 0.
      const int valid = static_cast<int>(std::min<int64_t>(kBlock, n - j0));
      const float* rows[kBlock];
      const float* keys[kBlock];
      for (int j = 0; j < kBlock; ++j) {
        const int64_t pos = j0 + std::min(j, valid - 1);
        rows[j] = cache.latent + pos * r;
        keys[j] = cache.rope_key + pos * dr;
      }
      // Three sweeps over the heads, as in the AVX-512 variant (the softmax chains overlap).
      for (int64_t h = 0; h < heads; ++h)
        HeadScores(q.lat + (h0 + h) * r, q.rope + (h0 + h) * q.rope_stride, rows, keys, valid,
                   cache, q.scale, state[h]);
      for (int64_t h = 0; h < heads; ++h) HeadSoftmax(state[h]);
      for (int64_t h = 0; h < heads; ++h)
        AccumulateValues(state[h].weights, rows, r, _mm256_set1_ps(state[h].alpha),
                         o_lat + (h0 + h) * r);
    }
    if (max != nullptr) {  // a partial result: the sums stay unnormalised
      for (int64_t h = 0; h < heads; ++h) max[h0 + h] = state[h].max, sum[h0 + h] = state[h].sum;
      continue;
    }
    if (n == 0) continue;
    for (int64_t h = 0; h < heads; ++h) {
      const __m256 total = _mm256_set1_ps(state[h].sum);
      float* out = o_lat + (h0 + h) * r;
      int64_t k = 0;
      for (; k + 8 <= r; k += 8)
        _mm256_storeu_ps(out + k, _mm256_div_ps(_mm256_loadu_ps(out + k), total));
      for (; k < r; ++k) out[k] /= state[h].sum;
    }
  }
}

}  // namespace dsv3::ops::avx2
