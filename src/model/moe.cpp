#include "model/moe.h"

#include <algorithm>
#include <cstring>

#include "model/router.h"
#include "ops/vector_ops.h"

namespace dsv3 {

void MoeForward(const ModelConfig& c, const MoeWeights& w, const ops::KernelContext& ctx,
                const float* x, int64_t T, int64_t k, MoeScratch& s, float* out) {
  const int64_t H = c.hidden_size, E = c.n_routed_experts;

  // gate_logits: [T, E]; routing: [T, k] experts and weights
  float* gate_logits = s.gate_logits.Get(T * E);
  ops::MatMul(ctx, x, T, w.gate, gate_logits);
  s.routing_experts.resize(static_cast<size_t>(T * k));
  float* routing_weights = s.routing_weights.Get(T * k);
  for (int64_t t = 0; t < T; ++t)
    RouteToken(c, gate_logits + t * E, w.e_score_correction_bias, k,
               s.routing_experts.data() + t * k, routing_weights + t * k);

  // Group the (token, slot) pairs by expert: counting sort into token_order.
  s.expert_offsets.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t i = 0; i < T * k; ++i) ++s.expert_offsets[s.routing_experts[i] + 1];
  for (int64_t e = 0; e < E; ++e) s.expert_offsets[e + 1] += s.expert_offsets[e];
  s.token_order.resize(static_cast<size_t>(T * k));
  s.expert_cursor.assign(s.expert_offsets.begin(), s.expert_offsets.end() - 1);
  for (int64_t i = 0; i < T * k; ++i)
    s.token_order[s.expert_cursor[s.routing_experts[i]]++] = static_cast<int32_t>(i);

  std::memset(out, 0, static_cast<size_t>(T * H) * sizeof(float));
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = s.expert_offsets[e], n = s.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    // gathered: [n, H] rows of x routed to expert e
    float* gathered = s.gathered.Get(n * H);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t token = s.token_order[begin + i] / k;
      std::memcpy(gathered + i * H, x + token * H, static_cast<size_t>(H) * sizeof(float));
    }
    float* expert_out = s.expert_out.Get(n * H);  // [n, H]
    MlpForward(w.experts[e], ctx, gathered, n, s.mlp, expert_out);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t slot = s.token_order[begin + i];
      ops::Axpy(ctx.isa, routing_weights[slot], expert_out + i * H, H, out + (slot / k) * H);
    }
  }
  if (w.has_shared) {
    float* shared = s.expert_out.Get(T * H);  // [T, H]
    MlpForward(w.shared_experts, ctx, x, T, s.mlp, shared);
    ops::Axpy(ctx.isa, 1.0f, shared, T * H, out);
  }
}

}  // namespace dsv3
