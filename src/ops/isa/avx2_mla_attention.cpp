// AVX2 variant of the fused MLA attention (ops/mla_attention.h): the AVX-512 variant's structure
// (read avx512_mla_attention.cpp) with blocks of 8 cache positions, one score per lane, and
// smaller head groups (scores 2 heads x 4 positions, values 4 heads x 16 features: within the 16
// ymm registers).
#include "ops/isa/simd_intrinsics.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "ops/isa/avx2_exp.h"
#include "ops/mla_attention_kernels.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int kBlock = 8;           // cache positions per block: one score per lane
constexpr int64_t kScoreHeads = 2;  // heads sharing each load of a block row: scores
constexpr int64_t kValueHeads = 4;  // and values

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

// Scores of NH heads against 4 positions: acc[i][j] += lanes of a[i][.] * rows[j][.] over
// [0, len), k ascending, each row chunk loaded once for the NH heads (as in the AVX-512 variant).
template <int NH>
[[gnu::always_inline]] inline void AccumulateDots(const float* const a[NH],
                                                  const float* const rows[4], int64_t len,
                                                  __m256 acc[NH][4]) {
  const auto step = [&](int64_t k, auto load) {
    __m256 c[4];
    for (int j = 0; j < 4; ++j) c[j] = load(rows[j] + k);
    for (int i = 0; i < NH; ++i) {
      const __m256 q = load(a[i] + k);
      for (int j = 0; j < 4; ++j) acc[i][j] = _mm256_fmadd_ps(q, c[j], acc[i][j]);
    }
  };
  int64_t k = 0;
  for (; k + 8 <= len; k += 8) step(k, [](const float* x) { return _mm256_loadu_ps(x); });
  if (k < len) {
    const __m256i m = TailMask(len - k);
    step(k, [m](const float* x) { return _mm256_maskload_ps(x, m); });
  }
}

// out[h][k] = out[h][k] * alpha[h] + sum_j p[h][j] * rows[j][k] over [0, len), j in order, for
// NH heads: each row chunk is loaded once for all NH heads.
template <int NH>
[[gnu::always_inline]] inline void AccumulateValues(const float* const p[NH],
                                                    const float* const rows[kBlock], int64_t len,
                                                    const float* alpha, float* const out[NH]) {
  const auto chunk = [&](int64_t k, auto load) {  // columns [k, k + 16)
    __m256 a[NH][2];
    for (int i = 0; i < NH; ++i) {
      const __m256 scale = _mm256_set1_ps(alpha[i]);
      a[i][0] = _mm256_mul_ps(load(out[i] + k), scale);
      a[i][1] = _mm256_mul_ps(load(out[i] + k + 8), scale);
    }
    for (int j = 0; j < kBlock; ++j) {
      const __m256 c0 = load(rows[j] + k), c1 = load(rows[j] + k + 8);
      for (int i = 0; i < NH; ++i) {
        const __m256 w = _mm256_set1_ps(p[i][j]);
        a[i][0] = _mm256_fmadd_ps(w, c0, a[i][0]);
        a[i][1] = _mm256_fmadd_ps(w, c1, a[i][1]);
      }
    }
    for (int i = 0; i < NH; ++i) {
      _mm256_storeu_ps(out[i] + k, a[i][0]);
      _mm256_storeu_ps(out[i] + k + 8, a[i][1]);
    }
  };
  int64_t k = 0;
  for (; k + 16 <= len; k += 16) chunk(k, [](const float* x) { return _mm256_loadu_ps(x); });
  for (; k < len; k += 8) {  // the rest, 8 columns (or fewer, masked) at a time
    const __m256i m = TailMask(len - k);
    __m256 a[NH];
    for (int i = 0; i < NH; ++i)
      a[i] = _mm256_mul_ps(_mm256_maskload_ps(out[i] + k, m), _mm256_set1_ps(alpha[i]));
    for (int j = 0; j < kBlock; ++j) {
      const __m256 c = _mm256_maskload_ps(rows[j] + k, m);
      for (int i = 0; i < NH; ++i) a[i] = _mm256_fmadd_ps(_mm256_set1_ps(p[i][j]), c, a[i]);
    }
    for (int i = 0; i < NH; ++i) _mm256_maskstore_ps(out[i] + k, m, a[i]);
  }
}

// One head's online-softmax state, and its scores and weights for the current block.
struct HeadState {
  alignas(32) float weights[kBlock];  // the block's scores, then exp(score - max)
  float max = -INFINITY;              // running maximum of the scores seen
  float sum = 0.0f;                   // sum of exp(score - max) over the scores seen
  float alpha = 1.0f;                 // the block's rescale of the accumulator (and of sum)
};

// The block's scores for NH heads (-inf past the end, so that their weight is exp(-inf) = 0).
template <int NH>
void GroupScores(const float* const q_lat[NH], const float* const q_pe[NH],
                 const float* const rows[kBlock], const float* const keys[kBlock], int valid,
                 const LatentCacheView& cache, float scale, HeadState* const state[NH]) {
  __m256 dots[NH][kBlock];
  for (int j0 = 0; j0 < kBlock; j0 += 4) {
    __m256 acc[NH][4];
    for (int i = 0; i < NH; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] = _mm256_setzero_ps();
    AccumulateDots<NH>(q_lat, rows + j0, cache.kv_lora_rank, acc);
    AccumulateDots<NH>(q_pe, keys + j0, cache.qk_rope_head_dim, acc);
    for (int i = 0; i < NH; ++i)
      for (int j = 0; j < 4; ++j) dots[i][j0 + j] = acc[i][j];
  }
  for (int i = 0; i < NH; ++i) {
    const __m256 scores = _mm256_mul_ps(ReduceRows(dots[i]), _mm256_set1_ps(scale));
    _mm256_store_ps(state[i]->weights, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), scores,
                                                        _mm256_castsi256_ps(TailMask(valid))));
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
      // Three sweeps over the heads, as in the AVX-512 variant (the softmax chains overlap), the
      // heads in groups that share each load of a block row.
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
      for (int64_t g = 0; g < heads; g += kValueHeads) {
        WithCount<kValueHeads>(static_cast<int>(std::min(kValueHeads, heads - g)), [&](auto nh) {
          constexpr int NH = decltype(nh)::value;
          const float* p[NH];
          float alpha[NH];
          float* out[NH];
          for (int i = 0; i < NH; ++i) {
            p[i] = state[g + i].weights;
            alpha[i] = state[g + i].alpha;
            out[i] = o_lat + (h0 + g + i) * r;
          }
          AccumulateValues<NH>(p, rows, r, alpha, out);
        });
      }
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
