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
  // The router's scores pick discrete experts, so they keep exact products even under the
  // opt-in bf16-dot path (a flipped choice moves a token's output far more than rounding does);
  // the gate is tiny next to the experts.
  float* gate_logits = s.gate_logits.Get(T * E);
  ops::KernelContext exact = ctx;
  exact.bf16_dot = false;
  ops::MatMul(exact, x, T, w.gate, gate_logits);
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

  // gathered: [T*k, H], the input row of every (token, slot) in expert order, so each expert's
  // tokens are contiguous. Then all experts (and the shared expert) run as one batch of
  // products: one parallel region for gate+up, one for down.
  const int64_t I = c.moe_intermediate_size;
  const int64_t I_shared = w.has_shared ? w.shared_experts.intermediate : 0;
  float* gathered = s.gathered.Get(T * k * H);
  for (int64_t i = 0; i < T * k; ++i) {
    const int64_t token = s.token_order[i] / k;
    std::memcpy(gathered + i * H, x + token * H, static_cast<size_t>(H) * sizeof(float));
  }
  float* gate = s.gate.Get(T * k * I + T * I_shared);  // [T*k, I] then shared [T, I_shared]
  float* up = s.up.Get(T * k * I + T * I_shared);
  float* expert_out = s.expert_out.Get(T * k * H + T * H);  // [T*k, H] then shared [T, H]
  float* gate_shared = gate + T * k * I;
  float* up_shared = up + T * k * I;
  float* out_shared = expert_out + T * k * H;

  s.jobs.clear();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = s.expert_offsets[e], n = s.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    s.jobs.push_back({gathered + begin * H, n, &w.experts[e].gate_proj, gate + begin * I});
    s.jobs.push_back({gathered + begin * H, n, &w.experts[e].up_proj, up + begin * I});
  }
  if (w.has_shared) {
    s.jobs.push_back({x, T, &w.shared_experts.gate_proj, gate_shared});
    s.jobs.push_back({x, T, &w.shared_experts.up_proj, up_shared});
  }
  ops::MatMulBatch(ctx, s.jobs.data(), static_cast<int64_t>(s.jobs.size()));
  ops::SiluMul(ctx.isa, gate, up, T * k * I + T * I_shared);

  s.jobs.clear();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t begin = s.expert_offsets[e], n = s.expert_offsets[e + 1] - begin;
    if (n == 0) continue;
    s.jobs.push_back({gate + begin * I, n, &w.experts[e].down_proj, expert_out + begin * H});
  }
  if (w.has_shared) s.jobs.push_back({gate_shared, T, &w.shared_experts.down_proj, out_shared});
  ops::MatMulBatch(ctx, s.jobs.data(), static_cast<int64_t>(s.jobs.size()));

  // out[t] = shared(x_t) + sum over its slots of weight * expert output
  if (w.has_shared) {
    std::memcpy(out, out_shared, static_cast<size_t>(T * H) * sizeof(float));
  } else {
    std::memset(out, 0, static_cast<size_t>(T * H) * sizeof(float));
  }
  for (int64_t i = 0; i < T * k; ++i) {
    const int32_t slot = s.token_order[i];
    ops::Axpy(ctx.isa, routing_weights[slot], expert_out + i * H, H, out + (slot / k) * H);
  }
}

}  // namespace dsv3
