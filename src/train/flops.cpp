#include "train/flops.h"

namespace dsv3::train {

namespace {

// Linear multiply-adds of decoder layer `layer` for one token (training computes kv_b_proj once,
// not absorbed).
int64_t LayerLinearMacs(const ModelConfig& c, int64_t layer) {
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  int64_t macs = c.has_q_lora() ? H * c.q_lora_rank + c.q_lora_rank * nh * qk : H * nh * qk;
  macs += H * (c.kv_lora_rank + c.qk_rope_head_dim);                  // kv_a_proj_with_mqa
  macs += c.kv_lora_rank * nh * (c.qk_nope_head_dim + c.v_head_dim);  // kv_b_proj
  macs += nh * c.v_head_dim * H;                                      // o_proj
  if (c.IsMoeLayer(layer)) {
    const int64_t experts = c.num_experts_per_tok + c.n_shared_experts;  // gate, up, down each
    macs += 3 * H * c.moe_intermediate_size * experts + H * c.n_routed_experts;  // + router
  } else {
    macs += 3 * H * c.intermediate_size;
  }
  return macs;
}

int64_t LayerAttentionMacs(const ModelConfig& c, int64_t seq_len) {
  const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
  // Causal: token i attends to i + 1 keys; (seq_len + 1) / 2 on average, kept exact in the ratio.
  return c.num_attention_heads * (qk + c.v_head_dim) * (seq_len + 1) / 2;
}

}  // namespace

TrainingFlops CountTrainingFlops(const ModelConfig& c, int64_t seq_len) {
  TrainingFlops f;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    f.linear_macs += LayerLinearMacs(c, l);
    f.attention_macs += LayerAttentionMacs(c, seq_len);
  }
  f.head_macs = c.hidden_size * c.vocab_size;
  for (int64_t m = 0; m < c.num_nextn_predict_layers; ++m) {
    const int64_t layer = c.num_hidden_layers + m;  // the MTP layer's index in the checkpoint
    f.mtp_macs += 2 * c.hidden_size * c.hidden_size + LayerLinearMacs(c, layer) +
                  LayerAttentionMacs(c, seq_len) + c.hidden_size * c.vocab_size;
  }
  return f;
}

}  // namespace dsv3::train
