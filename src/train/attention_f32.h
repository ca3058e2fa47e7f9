// Causal softmax attention of one head over one sequence, in float, as matrix products on the
// packed SIMD GEMM of ops/ (the float path of train/mla.cpp; the generic Real path there is the
// plain loop the float64 gradient checks use). Rows of every operand are strided views into the
// MLA caches, so nothing is reshaped outside.
#pragma once

#include <cstdint>

#include "ops/isa.h"

namespace dsv3::train {

// A [rows, cols] matrix view: row i starts at data + i * stride.
struct RowsView {
  const float* data;
  int64_t stride;
};
struct MutableRowsView {
  float* data;
  int64_t stride;
};

struct HeadShape {
  int64_t T = 0;   // sequence length
  int64_t dn = 0;  // key/query no-rope dims
  int64_t dr = 0;  // rope dims
  int64_t dv = 0;  // value dims
  float scale = 1;
};

// p[i, j] = softmax_j≤i(scale · q_i·k_j) with k_j = [kn_j ; kp_j]; p: [T, T] dense, zero above
// the diagonal. o_i = Σ_j p[i, j] v_j (overwritten).
void CausalAttentionForward(ops::Isa isa, const HeadShape& s, RowsView q, RowsView kn, RowsView kp,
                            RowsView v, float* p, MutableRowsView o);

// Given d_o, accumulates dq (+=), dkn (+=), dkp (+=) and dv (+=).
void CausalAttentionBackward(ops::Isa isa, const HeadShape& s, RowsView q, RowsView kn, RowsView kp,
                             RowsView v, const float* p, RowsView d_o, MutableRowsView dq,
                             MutableRowsView dkn, MutableRowsView dkp, MutableRowsView dv);

}  // namespace dsv3::train
