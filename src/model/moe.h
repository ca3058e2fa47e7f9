// DeepSeekMoE layer (spec §6): route each token to k experts, run every expert once over all the
// tokens routed to it (its weights are read once per batch), add the shared expert.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"
#include "model/mlp.h"
#include "model/phase_profile.h"
#include "model/scratch.h"
#include "model/weights.h"

namespace dsv3 {

struct MoeScratch {
  ScratchBuffer gate_logits, routing_weights, gathered, gate, up, expert_out;
  ScratchBuffer x_int8;  // x quantized once for all gate and up products (int8 path)
  // A prefill's down projections on the int8 path (moe.cpp, SummedDownProjections): the pieces'
  // activation layouts, and per thread the rows of one piece's product.
  struct DownPiece {
    const ops::WeightView* w;
    float* x;           // [n, w->cols]: the gate rows, SiLU(gate) * up once laid out
    const float* up;    // [n, w->cols]
    int64_t n;          // tokens
    int64_t first_row;  // routed: expert-ordered row of its first token; shared: its first token
    int64_t offset;     // bytes into down_layouts
    bool shared;
  };
  std::vector<DownPiece> down_pieces;
  ScratchBuffer down_layouts, down_rows;
  // false: the general path even where SummedDownProjections applies (tests compare the two).
  bool sum_down_per_rows = true;
  std::vector<ops::MatMulJob> jobs;
  // token_order[i]: the (token, slot) pair at expert-ordered row i; position is its inverse;
  // row_token[i] its token.
  std::vector<int32_t> routing_experts, token_order, position, row_token, expert_offsets,
      expert_cursor;
  // Per expert, 1 where its gate and up products read its rows of x in place
  // (ops::ReadsRowsInPlace: bf16-dot with 8+ tokens, or int8 when not all experts are).
  std::vector<uint8_t> rows_in_place;
};

// x: [T, H] (normalised) -> out: [T, H] (overwritten). k = routed experts per token. profile:
// nullptr, or where the router's and the experts' wall time is added.
void MoeForward(const ModelConfig& config, const MoeWeights& w, const ops::KernelContext& ctx,
                const float* x, int64_t T, int64_t k, MoeScratch& scratch, float* out,
                PhaseProfile* profile = nullptr);

}  // namespace dsv3
