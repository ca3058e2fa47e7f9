// AVX-512 variant of the fused MLA attention (ops/mla_attention.h). The cache is walked in blocks
// of 16 positions; every head of the call takes its scores, online-softmax update and value sum
// from the block while it sits in the caches, so the cache streams from memory once per call.
//
// Per head and block: 16 dot products of length r + dr with lanes over the feature dimension (16
// accumulators, one per position), reduced to one vector with a score per lane; one vector exp
// gives the 16 weights; the value sum adds p_j * c_j into the head's accumulator (the output row),
// first scaled by exp(old max - new max) when the block raised the running maximum. A head's
// arithmetic never looks at the other heads, so it does not depend on how heads are grouped.
//
// The heads are served in groups, each load of a block row feeding several heads: the scores
// take 4 heads x 4 positions per pass (16 accumulators), the values 8 heads x 32 features. Per
// head and position the sums run in the same order as one head at a time, so the grouping changes
// no bit (same results as the head-by-head kernel this replaced, which read each 36 KB block of
// DeepSeek-V3's cache once per head, from the L2: one core, 8 heads, r 512, dr 64, 256 and 4096
// positions, 1.86-1.92x faster; bench-medium q4_0 tg16 @ d4096 attention 16.4 -> 13.9 ms/token).
#include "ops/isa/simd_intrinsics.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "ops/isa/avx512_exp.h"
#include "ops/mla_attention_kernels.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int kBlock = 16;          // cache positions per block: one score per lane
constexpr int kHalf = 8;            // the value pass takes a block's first 8 rows, or all 16
constexpr int64_t kScoreHeads = 4;  // heads sharing each load of a block row: scores
constexpr int64_t kValueHeads = 8;  // and values

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

// Scores of NH heads against 4 positions: acc[i][j] += lanes of a[i][.] * rows[j][.] over
// [0, len), k ascending, for every (head, position) pair at once. Each row chunk loaded serves
// NH heads and each query chunk 4 positions, so a block's rows are read from the caches once
// per NH heads instead of once per head (per head, they stream at L2 speed: a 16-position block
// of DeepSeek-V3's cache is 36 KB, the L1 holds little else). Every accumulator sums its own
// pair's products in the same order as one head alone would.
template <int NH>
[[gnu::always_inline]] inline void AccumulateDots(const float* const a[NH],
                                                  const float* const rows[4], int64_t len,
                                                  __m512 acc[NH][4]) {
  const auto step = [&](int64_t k, auto load) {
    __m512 c[4];
    for (int j = 0; j < 4; ++j) c[j] = load(rows[j] + k);
    for (int i = 0; i < NH; ++i) {
      const __m512 q = load(a[i] + k);
      for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_fmadd_ps(q, c[j], acc[i][j]);
    }
  };
  int64_t k = 0;
  for (; k + 16 <= len; k += 16) step(k, [](const float* x) { return _mm512_loadu_ps(x); });
  if (k < len) {
    const __mmask16 m = TailMask(len - k);
    step(k, [m](const float* x) { return _mm512_maskz_loadu_ps(m, x); });
  }
}

// out[h][k] = out[h][k] * alpha[h] + sum_{j < count} p[h][j] * rows[j][k] over [0, len), j in
// order, for NH heads: each row chunk is loaded once for all NH heads. count is 8 or 16 (weights
// past the block's valid positions are 0).
template <int NH>
[[gnu::always_inline]] inline void AccumulateValues(const float* const p[NH],
                                                    const float* const rows[kBlock], int count,
                                                    int64_t len, const float* alpha,
                                                    float* const out[NH]) {
  // Columns [k, k + 32) as two vectors; with kTail only those below len (masked loads and
  // stores), for the rest of a row that is not a multiple of 32. Forced inline: GCC 12 called
  // the two instances out of line, with the accumulators on the stack (1.8x the kernel's time).
  const auto chunk = [&](int64_t k, auto tail) __attribute__((always_inline)) {
    constexpr bool kTail = decltype(tail)::value;
    const __mmask16 m0 = kTail ? TailMask(len - k) : 0xFFFF;
    const __mmask16 m1 = !kTail ? 0xFFFF : len - k > 16 ? TailMask(len - k - 16) : 0;
    const auto load = [](const float* x, __mmask16 m) __attribute__((always_inline)) {
      return kTail ? _mm512_maskz_loadu_ps(m, x) : _mm512_loadu_ps(x);
    };
    __m512 a[NH][2];
    for (int i = 0; i < NH; ++i) {
      const __m512 scale = _mm512_set1_ps(alpha[i]);
      a[i][0] = _mm512_mul_ps(load(out[i] + k, m0), scale);
      a[i][1] = _mm512_mul_ps(load(out[i] + k + 16, m1), scale);
    }
    for (int j = 0; j < count; ++j) {
      const __m512 c0 = load(rows[j] + k, m0), c1 = load(rows[j] + k + 16, m1);
      for (int i = 0; i < NH; ++i) {
        const __m512 w = _mm512_set1_ps(p[i][j]);
        a[i][0] = _mm512_fmadd_ps(w, c0, a[i][0]);
        a[i][1] = _mm512_fmadd_ps(w, c1, a[i][1]);
      }
    }
    for (int i = 0; i < NH; ++i) {
      if constexpr (kTail) {
        _mm512_mask_storeu_ps(out[i] + k, m0, a[i][0]);
        _mm512_mask_storeu_ps(out[i] + k + 16, m1, a[i][1]);
      } else {
        _mm512_storeu_ps(out[i] + k, a[i][0]);
        _mm512_storeu_ps(out[i] + k + 16, a[i][1]);
      }
    }
  };
  int64_t k = 0;
  for (; k + 32 <= len; k += 32) chunk(k, std::false_type{});
  if (k < len) chunk(k, std::true_type{});
}

// One head's online-softmax state, and its scores and weights for the current block.
struct HeadState {
  alignas(64) float weights[kBlock];  // the block's scores, then exp(score - max)
  float max = -INFINITY;              // running maximum of the scores seen
  float sum = 0.0f;                   // sum of exp(score - max) over the scores seen
  float alpha = 1.0f;                 // the block's rescale of the accumulator (and of sum)
};

// The block's scores for NH heads (-inf past `valid`, so that their weight is exp(-inf) = 0):
// per head, the 16 positions' dot products of length r + dr with lanes over the feature
// dimension, reduced to one vector with a score per lane.
template <int NH>
void GroupScores(const float* const q_lat[NH], const float* const q_pe[NH],
                 const float* const rows[kBlock], const float* const keys[kBlock], int valid,
                 const LatentCacheView& cache, float scale, HeadState* const state[NH]) {
  __m512 dots[NH][kBlock];
  for (int j0 = 0; j0 < kBlock; j0 += 4) {
    __m512 acc[NH][4];
    for (int i = 0; i < NH; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
    AccumulateDots<NH>(q_lat, rows + j0, cache.kv_lora_rank, acc);
    AccumulateDots<NH>(q_pe, keys + j0, cache.qk_rope_head_dim, acc);
    for (int i = 0; i < NH; ++i)
      for (int j = 0; j < 4; ++j) dots[i][j0 + j] = acc[i][j];
  }
  for (int i = 0; i < NH; ++i) {
    _mm512_store_ps(state[i]->weights,
                    _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), TailMask(valid),
                                       ReduceRows(dots[i]), _mm512_set1_ps(scale)));
  }
}

// f(std::integral_constant<int, n>) for a run-time n in [1, N].
template <int N, typename F>
void WithCount(int n, F&& f) {
  if constexpr (N >= 1) {
    if (n == N) return f(std::integral_constant<int, N>{});
    WithCount<N - 1>(n, f);
  }
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

void MlaAttention(const MlaQuery& q, const LatentCacheView& cache, float* o_lat, float* max,
                  float* sum) {
  const int64_t r = cache.kv_lora_rank, dr = cache.qk_rope_head_dim, n = cache.n;
  for (int64_t h0 = 0; h0 < q.num_heads; h0 += kMlaHeadsPerPass) {
    const int64_t heads = std::min(kMlaHeadsPerPass, q.num_heads - h0);
    HeadState state[kMlaHeadsPerPass];
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
      for (int64_t g = 0; g < heads; g += kScoreHeads) {
        WithCount<kScoreHeads>(static_cast<int>(std::min(kScoreHeads, heads - g)), [&](auto nh) {
          constexpr int NH = decltype(nh)::value;
          const float* lat[NH];
          const float* pe[NH];
          HeadState* st[NH];
          for (int i = 0; i < NH; ++i) {
            lat[i] = q.lat + (h0 + g + i) * r;
            pe[i] = q.rope + (h0 + g + i) * q.rope_stride;
            st[i] = &state[g + i];
          }
          GroupScores<NH>(lat, pe, rows, keys, valid, cache, q.scale, st);
        });
      }
      for (int64_t h = 0; h < heads; ++h) HeadSoftmax(state[h]);
      // Weights past `valid` are 0; the first 8 rows always take part (as an 8-row pass would).
      const int count = valid > kHalf ? kBlock : kHalf;
      for (int64_t g = 0; g < heads; g += kValueHeads) {
        WithCount<kValueHeads>(static_cast<int>(std::min(kValueHeads, heads - g)), [&](auto nh) {
          constexpr int NH = decltype(nh)::value;
          const float* p[NH];
          float alpha[NH];
          float* out[NH];  // [r]: sum_j p_j c_j, rescaled as the max rises
          for (int i = 0; i < NH; ++i) {
            p[i] = state[g + i].weights;
            alpha[i] = state[g + i].alpha;
            out[i] = o_lat + (h0 + g + i) * r;
          }
          AccumulateValues<NH>(p, rows, count, r, alpha, out);
        });
      }
    }
    if (max != nullptr) {  // a partial result: the sums stay unnormalised
      for (int64_t h = 0; h < heads; ++h) max[h0 + h] = state[h].max, sum[h0 + h] = state[h].sum;
      continue;
    }
    if (n == 0) continue;
    for (int64_t h = 0; h < heads; ++h) {
      const __m512 total = _mm512_set1_ps(state[h].sum);
      float* out = o_lat + (h0 + h) * r;
      for (int64_t k = 0; k < r; k += 16) {
        const __mmask16 m = TailMask(r - k);
        _mm512_mask_storeu_ps(out + k, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, out + k), total));
      }
    }
  }
}

}  // namespace dsv3::ops::avx512
