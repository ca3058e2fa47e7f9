#include "model/param_count.h"

#include "ops/row_tiles.h"

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

namespace {

int64_t CeilDiv(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

int64_t F32Bytes(size_t values) {
  return static_cast<int64_t>(values) * 4;
}

// The roles of the matrices a decode step reads, as far as `dsv3 quantize` is concerned.
enum class MatrixRole {
  kConverted,     // a linear weight in the target format
  kKept,          // the router: kept at >= BF16
  kEmbeddingRow,  // one [1, H] row of embed_tokens (kept), looked up, not multiplied
  kLmHead,        // lm_head: DefaultLmHeadType (q8_0 in q8_0/q4_0 models), else kept
};

// Calls matrix(rows, cols, role, phase) for each matrix one decode step reads (phase: the part of
// the forward pass that multiplies by it, model/phase_profile.h) and f32(values) for each vector
// and matrix the model keeps as an f32 copy.
template <typename MatrixFn, typename F32Fn>
void ForEachDecodeTensor(const ModelConfig& c, int64_t k, MatrixFn matrix, F32Fn f32) {
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  matrix(1, H, MatrixRole::kEmbeddingRow, Phase::kOther);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    f32(2 * H);  // input_layernorm, post_attention_layernorm
    if (c.has_q_lora()) {
      matrix(c.q_lora_rank, H, MatrixRole::kConverted, Phase::kAttentionIn);
      f32(c.q_lora_rank);
      matrix(nh * c.qk_head_dim(), c.q_lora_rank, MatrixRole::kConverted, Phase::kAttentionIn);
    } else {
      matrix(nh * c.qk_head_dim(), H, MatrixRole::kConverted, Phase::kAttentionIn);
    }
    matrix(c.kv_lora_rank + c.qk_rope_head_dim, H, MatrixRole::kConverted, Phase::kAttentionIn);
    f32(c.kv_lora_rank);  // kv_a_layernorm
    matrix(nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank, MatrixRole::kConverted,
           Phase::kAttention);
    matrix(H, nh * c.v_head_dim, MatrixRole::kConverted, Phase::kAttentionOut);
    if (!c.IsMoeLayer(i)) {
      for (int m = 0; m < 2; ++m)
        matrix(c.intermediate_size, H, MatrixRole::kConverted, Phase::kDenseMlp);
      matrix(H, c.intermediate_size, MatrixRole::kConverted, Phase::kDenseMlp);
      continue;
    }
    matrix(c.n_routed_experts, H, MatrixRole::kKept, Phase::kRouter);
    if (c.topk_method == "noaux_tc") f32(c.n_routed_experts);
    const int64_t shared = c.n_shared_experts * c.moe_intermediate_size;
    for (int64_t e = 0; e < k + (shared > 0 ? 1 : 0); ++e) {
      const int64_t width = e < k ? c.moe_intermediate_size : shared;
      for (int m = 0; m < 2; ++m) matrix(width, H, MatrixRole::kConverted, Phase::kExpertsIn);
      matrix(H, width, MatrixRole::kConverted, Phase::kExpertsOut);
    }
  }
  f32(H);  // final norm
  matrix(c.vocab_size, H, MatrixRole::kLmHead, Phase::kLmHead);
}

int64_t KvBytesPerPosition(const ModelConfig& c) {
  return c.num_hidden_layers * c.kv_cache_values_per_token_layer() * 4;
}

int64_t MlpBytes(const MlpWeights& m) {
  return WeightViewBytes(m.gate_proj) + WeightViewBytes(m.up_proj) + WeightViewBytes(m.down_proj);
}

}  // namespace

int64_t WeightViewBytes(const ops::WeightView& w) {
  const int64_t n = w.rows * w.cols;
  switch (w.dtype) {
    case DType::kF32:
      return 4 * n;
    case DType::kF16:
    case DType::kBF16:
      return 2 * n;
    case DType::kF8E4M3:
      return n + 4 * CeilDiv(w.rows, w.block_rows) * CeilDiv(w.cols, w.block_cols);
    case DType::kI8:
    case DType::kU8: {
      const int64_t data = w.dtype == DType::kI8 ? n : w.rows * CeilDiv(w.cols, 2);
      // f16 tile scales (ops/row_tiles.h): 2 bytes each for the tiled rows.
      const int64_t f16_rows = w.f16_tile_scales ? w.rows / ops::kRowTile * ops::kRowTile : 0;
      return data + (4 * (w.rows - f16_rows) + 2 * f16_rows) * CeilDiv(w.cols, w.group_size);
    }
    default:
      return static_cast<int64_t>(DTypeSize(w.dtype)) * n;
  }
}

int64_t MatrixBytes(QuantType format, int64_t rows, int64_t cols) {
  ops::WeightView w;
  w.rows = rows;
  w.cols = cols;
  w.block_rows = w.block_cols = 128;
  w.group_size = 32;
  switch (format) {
    case QuantType::kF32:
      w.dtype = DType::kF32;
      break;
    case QuantType::kBF16:
      w.dtype = DType::kBF16;
      break;
    case QuantType::kFp8:
      w.dtype = DType::kF8E4M3;
      break;
    case QuantType::kQ8_0:
      w.dtype = DType::kI8;
      break;
    case QuantType::kQ4_0:
      w.dtype = DType::kU8;
      break;
  }
  return WeightViewBytes(w);
}

DecodeBytes CountDecodeBytes(const ModelConfig& c, QuantType format, int64_t k) {
  if (k == 0) k = c.num_experts_per_tok;
  const QuantType kept = format == QuantType::kF32 ? QuantType::kF32 : QuantType::kBF16;
  const QuantType head = DefaultLmHeadType(format).value_or(kept);  // as dsv3 quantize writes it
  DecodeBytes bytes;
  bytes.kv_per_position = KvBytesPerPosition(c);
  ForEachDecodeTensor(
      c, k,
      [&](int64_t rows, int64_t cols, MatrixRole role, Phase) {
        const QuantType type = role == MatrixRole::kConverted ? format
                               : role == MatrixRole::kLmHead  ? head
                                                              : kept;
        bytes.weights += MatrixBytes(type, rows, cols);
      },
      [&](int64_t values) { bytes.weights += 4 * values; });
  return bytes;
}

DecodeBytes CountDecodeBytes(const ModelConfig& c, const ModelWeights& w, int64_t k) {
  if (k == 0) k = c.num_experts_per_tok;
  DecodeBytes bytes;
  bytes.kv_per_position = KvBytesPerPosition(c);
  int64_t total = 0;
  if (w.embed_tokens.rows > 0) total += WeightViewBytes(w.embed_tokens) / w.embed_tokens.rows;
  for (const LayerWeights& l : w.layers) {
    total += F32Bytes(l.input_layernorm.size() + l.post_attention_layernorm.size());
    const AttentionWeights& a = l.attn;
    total += WeightViewBytes(a.q_proj) + WeightViewBytes(a.q_a_proj) + WeightViewBytes(a.q_b_proj);
    total += WeightViewBytes(a.kv_a_proj_with_mqa) + WeightViewBytes(a.o_proj);
    total += WeightViewBytes(a.kv_b_proj);  // decoding streams it as stored
    total += F32Bytes(a.q_a_layernorm.size() + a.kv_a_layernorm.size());
    if (!l.is_moe) {
      total += MlpBytes(l.mlp);
      continue;
    }
    const MoeWeights& m = l.moe;
    total += WeightViewBytes(m.gate) + F32Bytes(m.e_score_correction_bias.size());
    if (m.has_shared) total += MlpBytes(m.shared_experts);
    int64_t experts = 0;
    for (const MlpWeights& e : m.experts) experts += MlpBytes(e);
    if (!m.experts.empty()) total += experts * k / static_cast<int64_t>(m.experts.size());
  }
  total += F32Bytes(w.norm.size()) + WeightViewBytes(w.lm_head);
  bytes.weights = total;
  return bytes;
}

PhaseBytes CountDecodeBytesByPhase(const ModelConfig& c, const ModelWeights& w, int64_t k) {
  if (k == 0) k = c.num_experts_per_tok;
  PhaseBytes bytes;
  const auto add = [&](Phase phase, int64_t n) { bytes.weights[static_cast<int>(phase)] += n; };
  if (w.embed_tokens.rows > 0)
    add(Phase::kOther, WeightViewBytes(w.embed_tokens) / w.embed_tokens.rows);
  for (const LayerWeights& l : w.layers) {
    add(Phase::kOther, F32Bytes(l.input_layernorm.size() + l.post_attention_layernorm.size()));
    const AttentionWeights& a = l.attn;
    add(Phase::kAttentionIn,
        WeightViewBytes(a.q_proj) + WeightViewBytes(a.q_a_proj) + WeightViewBytes(a.q_b_proj) +
            WeightViewBytes(a.kv_a_proj_with_mqa) + F32Bytes(a.q_a_layernorm.size()));
    add(Phase::kAttention, WeightViewBytes(a.kv_b_proj) + F32Bytes(a.kv_a_layernorm.size()));
    add(Phase::kAttentionOut, WeightViewBytes(a.o_proj));
    if (!l.is_moe) {
      add(Phase::kDenseMlp, MlpBytes(l.mlp));
      continue;
    }
    const MoeWeights& m = l.moe;
    add(Phase::kRouter, WeightViewBytes(m.gate) + F32Bytes(m.e_score_correction_bias.size()));
    int64_t in = 0, out = 0;  // all routed experts' gate + up, and down
    for (const MlpWeights& e : m.experts) {
      in += WeightViewBytes(e.gate_proj) + WeightViewBytes(e.up_proj);
      out += WeightViewBytes(e.down_proj);
    }
    const int64_t n = static_cast<int64_t>(m.experts.size());
    if (n > 0) {  // rounded as CountDecodeBytes rounds their sum
      add(Phase::kExpertsIn, in * k / n);
      add(Phase::kExpertsOut, (in + out) * k / n - in * k / n);
    }
    if (m.has_shared) {
      add(Phase::kExpertsIn,
          WeightViewBytes(m.shared_experts.gate_proj) + WeightViewBytes(m.shared_experts.up_proj));
      add(Phase::kExpertsOut, WeightViewBytes(m.shared_experts.down_proj));
    }
  }
  add(Phase::kLmHead, F32Bytes(w.norm.size()) + WeightViewBytes(w.lm_head));
  bytes.per_position[static_cast<int>(Phase::kAttention)] = KvBytesPerPosition(c);
  return bytes;
}

TokenMacs CountTokenMacs(const ModelConfig& c, int64_t k) {
  if (k == 0) k = c.num_experts_per_tok;
  TokenMacs macs;
  // kv_b_proj's two halves (absorbed into q, W_UK, and applied to the attention output, W_UV) are
  // one of the matrices: each weight is multiplied once.
  ForEachDecodeTensor(
      c, k,
      [&](int64_t rows, int64_t cols, MatrixRole role, Phase) {
        if (role == MatrixRole::kLmHead) macs.lm_head += rows * cols;
        if (role == MatrixRole::kConverted || role == MatrixRole::kKept) macs.layers += rows * cols;
      },
      [](int64_t) {});
  return macs;
}

PhaseMacs CountPrefillMacsByPhase(const ModelConfig& c, int64_t T, int64_t start_pos, int64_t k) {
  if (k == 0) k = c.num_experts_per_tok;
  PhaseMacs p;
  // The matrices a decode step multiplies, T times (kv_b_proj once per visible position, the
  // lm_head once); the embedding is looked up.
  ForEachDecodeTensor(
      c, k,
      [&](int64_t rows, int64_t cols, MatrixRole role, Phase phase) {
        const int64_t times = role == MatrixRole::kEmbeddingRow ? 0
                              : role == MatrixRole::kLmHead     ? (T > 0 ? 1 : 0)
                              : phase == Phase::kAttention      ? start_pos + T
                                                                : T;
        p.macs[static_cast<int>(phase)] += times * rows * cols;
      },
      [](int64_t) {});
  // The score and value products: (dn + dr) + dv per head for each position a token sees,
  // T start_pos + T (T + 1) / 2 in all.
  const int64_t seen = T * start_pos + T * (T + 1) / 2;
  p.macs[static_cast<int>(Phase::kAttention)] +=
      c.num_hidden_layers * seen * c.num_attention_heads * (c.qk_head_dim() + c.v_head_dim);
  return p;
}

std::string_view WeightFormatName(const ModelWeights& w) {
  const DType dtype = w.layers.empty() ? w.lm_head.dtype : w.layers.front().attn.o_proj.dtype;
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kF8E4M3:
      return "fp8";
    case DType::kI8:
      return "q8_0";
    case DType::kU8:
      return "q4_0";
    default:
      return DTypeName(dtype);
  }
}

}  // namespace dsv3
