// Parameter counts from the config alone (what `dsv3 info` and the README report), and the
// roofline accounting of `dsv3 bench` / `dsv3 info`: the bytes one decode step must read and the
// multiply-adds one token costs.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "model/config.h"
#include "model/phase_profile.h"
#include "model/quantize.h"
#include "model/weights.h"

namespace dsv3 {

struct ParamCounts {
  int64_t total = 0;      // main model: embeddings, all layers, final norm, lm_head
  int64_t active = 0;     // read per token: like total but only k routed experts per MoE layer
  int64_t embedding = 0;  // embed_tokens + lm_head
  int64_t mtp = 0;        // the MTP layers, not included above
};

// k: routed experts per token (0 = the config's num_experts_per_tok).
ParamCounts CountParams(const ModelConfig& config, int64_t k = 0);

// Bytes of a weight matrix as held, scales included: F32 4, F16/BF16 2 per weight; F8_E4M3 1 per
// weight + 4 per block_rows x block_cols block; q8_0 (I8) 1 and q4_0 (U8) 1/2 per weight (rows
// padded to whole bytes) + 4 per group_size columns of a row (2 for the rows of tiles holding
// f16 scales, ops/row_tiles.h).
int64_t WeightViewBytes(const ops::WeightView& w);

// Bytes of a [rows, cols] linear weight in a format (fp8 with 128x128 blocks, q8_0/q4_0 with
// groups of 32, as `dsv3 quantize` writes them).
int64_t MatrixBytes(QuantType format, int64_t rows, int64_t cols);

// What one decode step reads: the weights of the active parameters (every layer with k routed
// experts per MoE layer, one embedding row, the final norm, the whole lm_head; not the MTP layers)
// in the form the forward pass reads them (norm weights as the f32 copies the model makes at load;
// kv_b_proj as stored, which decoding streams), plus the latent KV cache (f32) of every cached
// position.
struct DecodeBytes {
  int64_t weights = 0;
  int64_t kv_per_position = 0;  // num_hidden_layers * (kv_lora_rank + qk_rope_head_dim) * 4
  // A decode step at position context - 1: attention reads `context` cached positions.
  int64_t AtContext(int64_t context) const { return weights + context * kv_per_position; }
};

// For a loaded model, from the dtypes its weights actually have. Routed experts count as k times
// the mean size of the layer's experts (a checkpoint may mix formats).
DecodeBytes CountDecodeBytes(const ModelConfig& config, const ModelWeights& weights, int64_t k = 0);
// For the model converted to `format` by `dsv3 quantize` with its defaults (embeddings and router
// kept at F32 for f32 and BF16 otherwise, lm_head as DefaultLmHeadType says, the other linear
// weights in the format).
DecodeBytes CountDecodeBytes(const ModelConfig& config, QuantType format, int64_t k = 0);

// The same bytes for a loaded model split by the phase of the forward pass that reads them
// (model/phase_profile.h), the cache counted per position: per_position[Phase::kAttention] is
// kv_per_position, the rest 0. Summed over phases, equal to CountDecodeBytes(config, weights, k).
struct PhaseBytes {
  std::array<int64_t, kNumPhases> weights{};
  std::array<int64_t, kNumPhases> per_position{};
};
PhaseBytes CountDecodeBytesByPhase(const ModelConfig& config, const ModelWeights& weights,
                                   int64_t k = 0);

// Multiply-adds of the linear layers for one token (attention's score and value products over the
// cache excluded): `layers` for every layer (the router and both halves of kv_b_proj included),
// `lm_head` for a token whose logits are computed. FLOPs are twice these.
struct TokenMacs {
  int64_t layers = 0;
  int64_t lm_head = 0;
};
TokenMacs CountTokenMacs(const ModelConfig& config, int64_t k = 0);

// Multiply-adds of a forward pass over T prompt tokens after start_pos cached positions, by the
// phase that performs them (model/phase_profile.h), for `dsv3 bench --profile`'s rates: each
// linear layer's rows * cols per token (T of them; the lm_head for the last token only, as a
// prefill computes logits), and in kAttention kv_b_proj applied to every visible position (the
// keys and values the decompressed form builds) plus the score and value products, (dn + dr) +
// dv per head for each position a token sees (start_pos + t + 1 for token t). With start_pos 0,
// all phases less those score and value products sum to T * CountTokenMacs(config, k).layers +
// CountTokenMacs(config, k).lm_head.
struct PhaseMacs {
  std::array<int64_t, kNumPhases> macs{};
};
PhaseMacs CountPrefillMacsByPhase(const ModelConfig& config, int64_t T, int64_t start_pos,
                                  int64_t k = 0);

// The format of a loaded model's bulk weights (those `dsv3 quantize` converts), from the dtype of
// the first layer's o_proj: "f32", "f16", "bf16", "fp8", "q8_0" or "q4_0".
std::string_view WeightFormatName(const ModelWeights& weights);

}  // namespace dsv3
