#include "model/param_count.h"

namespace dsv3 {

namespace {

struct LayerParams {
  int64_t total = 0;
  int64_t active = 0;
};

LayerParams CountLayer(const ModelConfig& c, int64_t index, int64_t k) {
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  int64_t attn = 0;
  if (c.has_q_lora()) {
    attn += c.q_lora_rank * H + c.q_lora_rank + nh * c.qk_head_dim() * c.q_lora_rank;
  } else {
    attn += nh * c.qk_head_dim() * H;
  }
  attn += (c.kv_lora_rank + c.qk_rope_head_dim) * H + c.kv_lora_rank;
  attn += nh * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank;
  attn += H * nh * c.v_head_dim;
  const int64_t norms = 2 * H;
  LayerParams p;
  if (!c.IsMoeLayer(index)) {
    p.total = p.active = norms + attn + 3 * H * c.intermediate_size;
    return p;
  }
  const int64_t expert = 3 * H * c.moe_intermediate_size;
  const int64_t router =
      c.n_routed_experts * H + (c.topk_method == "noaux_tc" ? c.n_routed_experts : 0);
  const int64_t shared = c.n_shared_experts * expert;
  p.total = norms + attn + router + shared + c.n_routed_experts * expert;
  p.active = norms + attn + router + shared + k * expert;
  return p;
}

}  // namespace

ParamCounts CountParams(const ModelConfig& c, int64_t k) {
  if (k == 0) k = c.num_experts_per_tok;
  ParamCounts counts;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  counts.embedding = V * H * (c.tie_word_embeddings ? 1 : 2);
  counts.total = counts.embedding + H;  // + final norm
  // A token reads one embedding row, not the table; lm_head is read whole.
  counts.active = (c.tie_word_embeddings ? V * H : V * H + H) + H;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerParams p = CountLayer(c, i, k);
    counts.total += p.total;
    counts.active += p.active;
  }
  for (int64_t d = 0; d < c.num_nextn_predict_layers; ++d) {
    // embed_tokens, enorm, hnorm, eh_proj, the layer, shared_head norm and head.
    counts.mtp +=
        V * H + 2 * H + 2 * H * H + CountLayer(c, c.num_hidden_layers + d, k).total + H + V * H;
  }
  return counts;
}

}  // namespace dsv3
