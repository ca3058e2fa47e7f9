// AVX-512 variant of the fused MLA attention (ops/mla_attention.h). The cache is walked in blocks
// of 16 positions; every head of the call takes its scores, online-softmax update and value sum
// from the block while it sits in L1, so the cache streams from memory once per call.
//
// Per head and block: 16 dot products of length r + dr with lanes over the feature dimension (16
// accumulators, one per position), reduced to one vector with a score per lane; one vector exp
// gives the 16 weights; the value sum adds p_j * c_j into the head's accumulator (the output row),
// first scaled by exp(old max - new max) when the block raised the running maximum. A head's
// arithmetic never looks at the other heads, so it does not depend on how heads are grouped.
#include "ops/isa/simd_intrinsics.h"

#include <algorithm>
#include <cmath>

#include "ops/isa/avx512_exp.h"
#include "ops/mla_attention_kernels.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int kBlock = 16;              // cache positions per block: one score per lane
constexpr int kHalf = 8;                // rows per register group (8 row pointers stay in GPRs)
constexpr int64_t kHeadsPerPass = 128;  // heads whose running max and sum live on the stack

__mmask16 TailMask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

float ReduceAdd(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lane j of the result = the sum of the 16 lanes of v[j] (the same addition tree for every j).
__m512 ReduceRows(const __m512 v[kBlock]) {
  // w[i], 128-bit lanes: v[2i] lanes (0+2, 1+3), then v[2i+1] lanes (0+2, 1+3).
  __m512 w[8];
  for (int i = 0; i < 8; ++i)
    w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
  // z[m], 128-bit lane L: four partial sums of v[4m + L].
  __m512 z[4];
  for (int m = 0; m < 4; ++m)
    z[m] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0x88),
                         _mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], 0xDD));
  // Within each 128-bit lane L: element k = sum of z[k] lane L, i.e. of v[4k + L].
  const __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(z[0], z[1]), _mm512_unpackhi_ps(z[0], z[1]));
  const __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(z[2], z[3]), _mm512_unpackhi_ps(z[2], z[3]));
  const __m512d t0d = _mm512_castps_pd(t0), t1d = _mm512_castps_pd(t1);
  const __m512 s = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(t0d, t1d)),
                                 _mm512_castpd_ps(_mm512_unpackhi_pd(t0d, t1d)));
  // Position 4L + k holds v[4k + L]; put v[j] at lane j.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, s);
}

// acc[j] += lanes of a[.] * rows[j][.] over [0, len) for 8 rows. The accumulators are copied to
// locals: __m512 may alias float, so updating acc[] in place would store it at every step.
void AccumulateDots(const float* a, const float* const rows[kHalf], int64_t len,
                    __m512 acc[kHalf]) {
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
  const float *r4 = rows[4], *r5 = rows[5], *r6 = rows[6], *r7 = rows[7];
  __m512 a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
  __m512 a4 = acc[4], a5 = acc[5], a6 = acc[6], a7 = acc[7];
  const auto step = [&](__m512 q, int64_t k, auto load) {
    a0 = _mm512_fmadd_ps(q, load(r0 + k), a0);
    a1 = _mm512_fmadd_ps(q, load(r1 + k), a1);
    a2 = _mm512_fmadd_ps(q, load(r2 + k), a2);
    a3 = _mm512_fmadd_ps(q, load(r3 + k), a3);
    a4 = _mm512_fmadd_ps(q, load(r4 + k), a4);
    a5 = _mm512_fmadd_ps(q, load(r5 + k), a5);
    a6 = _mm512_fmadd_ps(q, load(r6 + k), a6);
    a7 = _mm512_fmadd_ps(q, load(r7 + k), a7);
  };
  int64_t k = 0;
  for (; k + 16 <= len; k += 16)
    step(_mm512_loadu_ps(a + k), k, [](const float* x) { return _mm512_loadu_ps(x); });
  if (k < len) {
    const __mmask16 m = TailMask(len - k);
    step(_mm512_maskz_loadu_ps(m, a + k), k,
         [m](const float* x) { return _mm512_maskz_loadu_ps(m, x); });
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
  acc[4] = a4, acc[5] = a5, acc[6] = a6, acc[7] = a7;
}

// out[k] = out[k] * alpha + sum_j p[j] * rows[j][k] over [0, len), j in order, for 8 rows. Two
// 16-wide chunks per step give two independent FMA chains (measured faster than keeping 8 chunks
// in registers while the rows stream past).
void AccumulateValues8(const float* p, const float* const rows[kHalf], int64_t len, __m512 alpha,
                       float* out) {
  const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3];
  const float *r4 = rows[4], *r5 = rows[5], *r6 = rows[6], *r7 = rows[7];
  const __m512 p0 = _mm512_set1_ps(p[0]), p1 = _mm512_set1_ps(p[1]);
  const __m512 p2 = _mm512_set1_ps(p[2]), p3 = _mm512_set1_ps(p[3]);
  const __m512 p4 = _mm512_set1_ps(p[4]), p5 = _mm512_set1_ps(p[5]);
  const __m512 p6 = _mm512_set1_ps(p[6]), p7 = _mm512_set1_ps(p[7]);
  const auto chain = [&](__m512 a, int64_t k, auto load) {
    a = _mm512_fmadd_ps(p0, load(r0 + k), a);
    a = _mm512_fmadd_ps(p1, load(r1 + k), a);
    a = _mm512_fmadd_ps(p2, load(r2 + k), a);
    a = _mm512_fmadd_ps(p3, load(r3 + k), a);
    a = _mm512_fmadd_ps(p4, load(r4 + k), a);
    a = _mm512_fmadd_ps(p5, load(r5 + k), a);
    a = _mm512_fmadd_ps(p6, load(r6 + k), a);
    return _mm512_fmadd_ps(p7, load(r7 + k), a);
  };
  const auto full = [](const float* x) { return _mm512_loadu_ps(x); };
  int64_t k = 0;
  for (; k + 32 <= len; k += 32) {
    __m512 a = _mm512_mul_ps(_mm512_loadu_ps(out + k), alpha);
    __m512 b = _mm512_mul_ps(_mm512_loadu_ps(out + k + 16), alpha);
    a = chain(a, k, full);
    b = chain(b, k + 16, full);
    _mm512_storeu_ps(out + k, a);
    _mm512_storeu_ps(out + k + 16, b);
  }
  for (; k < len; k += 16) {
    const __mmask16 m = TailMask(len - k);
    const __m512 a = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, out + k), alpha);
    _mm512_mask_storeu_ps(out + k, m,
                          chain(a, k, [m](const float* x) { return _mm512_maskz_loadu_ps(m, x); }));
  }
}
// The same for the first `count` rows (the block's valid positions).
void AccumulateValues(const float* p, const float* const rows[kBlock], int count, int64_t len,
                      __m512 alpha, float* out) {
  AccumulateValues8(p, rows, len, alpha, out);
  if (count > kHalf) AccumulateValues8(p + kHalf, rows + kHalf, len, _mm512_set1_ps(1.0f), out);
}

// One head's online-softmax state, and its scores and weights for the current block.
struct HeadState {
  alignas(64) float weights[kBlock];  // the block's scores, then exp(score - max)
  float max = -INFINITY;              // running maximum of the scores seen
  float sum = 0.0f;                   // sum of exp(score - max) over the scores seen
  float alpha = 1.0f;                 // the block's rescale of the accumulator (and of sum)
};

// The block's scores for one head (-inf past the end, so that their weight is exp(-inf) = 0).
void HeadScores(const float* q_lat, const float* q_pe, const float* const rows[kBlock],
                const float* const keys[kBlock], int valid, const LatentCacheView& cache,
                float scale, HeadState& state) {
  __m512 dots[kBlock];
  for (auto& d : dots) d = _mm512_setzero_ps();
  for (int g = 0; g < kBlock; g += kHalf) {
    AccumulateDots(q_lat, rows + g, cache.kv_lora_rank, dots + g);
    AccumulateDots(q_pe, keys + g, cache.qk_rope_head_dim, dots + g);
  }
  _mm512_store_ps(state.weights, _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), TailMask(valid),
                                                    ReduceRows(dots), _mm512_set1_ps(scale)));
}

// The online-softmax step: raise the running maximum to the block's, rescale the sum (alpha is
// applied to the accumulator by the value pass), and turn the scores into weights.
void HeadSoftmax(HeadState& state) {
  const __m512 scores = _mm512_load_ps(state.weights);
  const float block_max = _mm512_reduce_max_ps(scores);
  state.alpha = 1.0f;
  if (block_max > state.max) {
    // 0 on the first block, where the accumulator and sum are still zero.
    state.alpha = _mm512_cvtss_f32(Exp(_mm512_set1_ps(state.max - block_max)));
    state.sum *= state.alpha;
    state.max = block_max;
  }
  const __m512 p = Exp(_mm512_sub_ps(scores, _mm512_set1_ps(state.max)));
  state.sum += ReduceAdd(p);
  _mm512_store_ps(state.weights, p);
}

}  // namespace

void MlaAttention(const MlaQuery& q, const LatentCacheView& cache, float* o_lat) {
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
      // Three sweeps over the heads rather than one head at a time: the softmax step of a head is
      // a long dependent chain (reduction, two exps, reduction), and heads' chains are
      // independent, so the core overlaps them with each other and with the dot products.
      for (int64_t h = 0; h < heads; ++h)
        HeadScores(q.lat + (h0 + h) * r, q.rope + (h0 + h) * q.rope_stride, rows, keys, valid,
                   cache, q.scale, state[h]);
      for (int64_t h = 0; h < heads; ++h) HeadSoftmax(state[h]);
      for (int64_t h = 0; h < heads; ++h) {
        float* acc = o_lat + (h0 + h) * r;  // [r]: sum_j p_j c_j, rescaled as the max rises
        AccumulateValues(state[h].weights, rows, valid, r, _mm512_set1_ps(state[h].alpha), acc);
      }
    }
    if (n == 0) continue;
    for (int64_t h = 0; h < heads; ++h) {
      const __m512 sum = _mm512_set1_ps(state[h].sum);
      float* out = o_lat + (h0 + h) * r;
      for (int64_t k = 0; k < r; k += 16) {
        const __mmask16 m = TailMask(r - k);
        _mm512_mask_storeu_ps(out + k, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, out + k), sum));
      }
    }
  }
}

}  // namespace dsv3::ops::avx512
