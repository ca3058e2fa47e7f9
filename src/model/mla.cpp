#include "model/mla.h"

#include <algorithm>
#include <cstring>

#include "ops/vector_ops.h"

namespace dsv3 {

namespace {

// Splits [0, n) statically over the pool's threads and calls fn(thread, begin, end).
template <typename Fn>
void ForEachThreadRange(const ops::KernelContext& ctx, int64_t n, Fn&& fn) {
  if (ctx.pool == nullptr || ctx.pool->num_threads() == 1 || n <= 1) {
    fn(0, int64_t{0}, n);
    return;
  }
  const int threads = ctx.pool->num_threads();
  ctx.pool->RunOnAll([&](int t) {
    const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
    if (begin < end) fn(t, begin, end);
  });
}

int NumThreads(const ops::KernelContext& ctx) {
  return ctx.pool == nullptr ? 1 : ctx.pool->num_threads();
}

// Absorbed attention for one (token, head) (spec §5.4):
//   q_lat = W_UK[h]^T q_nope; score_j = scale (q_lat . c_j + q_pe . k_pe_j); o_lat = sum p_j c_j;
//   o = W_UV[h] o_lat.
void AbsorbedHead(const ModelConfig& c, const RopeParams& rope, const AttentionWeights& w,
                  ops::Isa isa, const float* q_head, int64_t h, int64_t num_keys,
                  const LayerKvCache& cache, float* scores, float* q_lat, float* o_lat,
                  float* o_head) {
  const int64_t dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dv = c.v_head_dim;
  const int64_t r = c.kv_lora_rank;
  const float* w_uk = w.kv_b_proj.data() + h * (dn + dv) * r;  // [dn, r]
  const float* w_uv = w_uk + dn * r;                           // [dv, r]
  // q_lat: [r]
  std::fill(q_lat, q_lat + r, 0.0f);
  for (int64_t d = 0; d < dn; ++d) ops::Axpy(isa, q_head[d], w_uk + d * r, r, q_lat);
  const float* q_pe = q_head + dn;
  const float scale = static_cast<float>(rope.softmax_scale);
  // scores: [num_keys]
  for (int64_t j = 0; j < num_keys; ++j) {
    const float s = ops::Dot(isa, q_lat, cache.latent.data() + j * r, r) +
                    ops::Dot(isa, q_pe, cache.rope_key.data() + j * dr, dr);
    scores[j] = scale * s;
  }
  ops::Softmax(isa, scores, num_keys);
  // o_lat: [r]
  std::fill(o_lat, o_lat + r, 0.0f);
  for (int64_t j = 0; j < num_keys; ++j)
    ops::Axpy(isa, scores[j], cache.latent.data() + j * r, r, o_lat);
  // o_head: [dv]
  for (int64_t e = 0; e < dv; ++e) o_head[e] = ops::Dot(isa, w_uv + e * r, o_lat, r);
}

}  // namespace

void MlaForward(const ModelConfig& c, const RopeParams& rope, const AttentionWeights& w,
                const ops::KernelContext& ctx, const float* x, int64_t T, int64_t start_pos,
                const float* cos_sin, AttentionPath path, LayerKvCache& cache, MlaScratch& scratch,
                float* out) {
  const int64_t nh = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t dv = c.v_head_dim, r = c.kv_lora_rank, qk = c.qk_head_dim();
  const int64_t half = dr / 2;
  const float* cos = cos_sin;
  const float* sin = cos_sin + T * half;

  // q: [T, nh, dn+dr]
  // q: [T, nh, dn+dr]; ckv: [T, r+dr]. Both projections of x run in one parallel region.
  float* q = scratch.q.Get(T * nh * qk);
  float* ckv = scratch.ckv.Get(T * (r + dr));
  if (c.has_q_lora()) {
    float* q_a = scratch.q_a.Get(T * c.q_lora_rank);  // [T, rq]
    const ops::MatMulJob jobs[2] = {{x, T, &w.q_a_proj, q_a}, {x, T, &w.kv_a_proj_with_mqa, ckv}};
    ops::MatMulBatch(ctx, jobs, 2);
    for (int64_t t = 0; t < T; ++t) {
      float* row = q_a + t * c.q_lora_rank;
      ops::RmsNorm(ctx.isa, row, w.q_a_layernorm.data(), c.q_lora_rank, c.rms_norm_eps, row);
    }
    ops::MatMul(ctx, q_a, T, w.q_b_proj, q);
  } else {
    const ops::MatMulJob jobs[2] = {{x, T, &w.q_proj, q}, {x, T, &w.kv_a_proj_with_mqa, ckv}};
    ops::MatMulBatch(ctx, jobs, 2);
  }

  // cache: normalised latent c [r] and rotated k_pe [dr] per position.
  for (int64_t t = 0; t < T; ++t) {
    const int64_t pos = start_pos + t;
    float* latent = cache.latent.data() + pos * r;
    float* rope_key = cache.rope_key.data() + pos * dr;
    ops::RmsNorm(ctx.isa, ckv + t * (r + dr), w.kv_a_layernorm.data(), r, c.rms_norm_eps, latent);
    std::memcpy(rope_key, ckv + t * (r + dr) + r, static_cast<size_t>(dr) * sizeof(float));
    ApplyRope(rope, cos + t * half, sin + t * half, rope_key, dr);
    for (int64_t h = 0; h < nh; ++h)
      ApplyRope(rope, cos + t * half, sin + t * half, q + (t * nh + h) * qk + dn, dr);
  }

  // o: [T, nh*dv], head-major per token (h*dv + d), as o_proj expects.
  float* o = scratch.o.Get(T * nh * dv);
  const int64_t num_keys_max = start_pos + T;
  if (path == AttentionPath::kAbsorbed) {
    const int64_t per_thread = num_keys_max + 2 * r;
    float* thread_scratch = scratch.per_thread.Get(NumThreads(ctx) * per_thread);
    ForEachThreadRange(ctx, T * nh, [&](int thread, int64_t begin, int64_t end) {
      float* scores = thread_scratch + thread * per_thread;
      float* q_lat = scores + num_keys_max;
      float* o_lat = q_lat + r;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t t = i / nh, h = i % nh;
        AbsorbedHead(c, rope, w, ctx.isa, q + (t * nh + h) * qk, h, start_pos + t + 1, cache,
                     scores, q_lat, o_lat, o + (t * nh + h) * dv);
      }
    });
  } else {
    // Naive: k[j, h] = [W_UK[h] c_j ; k_pe_j], v[j, h] = W_UV[h] c_j for every cached position.
    float* kv = scratch.naive_kv.Get(num_keys_max * nh * (dn + dv) + num_keys_max);
    float* scores = kv + num_keys_max * nh * (dn + dv);
    for (int64_t j = 0; j < num_keys_max; ++j) {
      for (int64_t row = 0; row < nh * (dn + dv); ++row)
        kv[j * nh * (dn + dv) + row] = ops::Dot(ops::Isa::kScalar, w.kv_b_proj.data() + row * r,
                                                cache.latent.data() + j * r, r);
    }
    const float scale = static_cast<float>(rope.softmax_scale);
    for (int64_t t = 0; t < T; ++t) {
      const int64_t num_keys = start_pos + t + 1;
      for (int64_t h = 0; h < nh; ++h) {
        const float* qh = q + (t * nh + h) * qk;
        for (int64_t j = 0; j < num_keys; ++j) {
          const float* k_nope = kv + (j * nh + h) * (dn + dv);
          const float* k_pe = cache.rope_key.data() + j * dr;
          scores[j] = scale * (ops::Dot(ops::Isa::kScalar, qh, k_nope, dn) +
                               ops::Dot(ops::Isa::kScalar, qh + dn, k_pe, dr));
        }
        ops::Softmax(ops::Isa::kScalar, scores, num_keys);
        float* oh = o + (t * nh + h) * dv;
        std::fill(oh, oh + dv, 0.0f);
        for (int64_t j = 0; j < num_keys; ++j)
          ops::Axpy(ops::Isa::kScalar, scores[j], kv + (j * nh + h) * (dn + dv) + dn, dv, oh);
      }
    }
  }
  // out: [T, H]
  ops::MatMul(ctx, o, T, w.o_proj, out);
}

}  // namespace dsv3
