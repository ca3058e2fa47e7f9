// The Multi-Token Prediction module for training (spec §8, depth 1):
// x_i = eh_proj([RMSNorm(emb(t_{i+1}), enorm) ; RMSNorm(h_i, hnorm)]) → a decoder layer →
// RMSNorm(shared_head.norm); the caller applies shared_head.head and the loss (predicting t_{i+2}).
#pragma once

#include <cstdint>
#include <vector>

#include "train/layer.h"

namespace dsv3::train {

struct MtpParams {
  int embed_tokens = -1, enorm = -1, hnorm = -1, eh_proj = -1;
  LayerParams layer;
  int shared_head_norm = -1, shared_head_head = -1;
};

// Adds model.layers.{num_hidden_layers}.* (the MTP module's tensors).
template <typename Real>
MtpParams AddMtpParams(const ModelConfig& cfg, ParamSet<Real>* params);

template <typename Real>
struct MtpCache {
  std::vector<int32_t> next_ids;  // [B*(T-1)] t_{i+1}
  std::vector<Real> e, inv_e;     // [B*(T-1), H] embeddings, their RMS statistic
  std::vector<Real> hsel, inv_h;  // [B*(T-1), H] main hidden rows 0..T-2
  std::vector<Real> cat;          // [B*(T-1), 2H] [RMSNorm(e) ; RMSNorm(h)]
  LayerCache<Real> layer;
  std::vector<Real> x, inv_x;  // [B*(T-1), H] layer output, its statistic
};

// tokens: [B, T] the main model's inputs; h_final: [B*T, H] the main hidden states after
// model.norm. out: [B*(T-1), H] = RMSNorm(layer output, shared_head.norm). Returns the MTP
// layer's balance loss.
template <typename Real>
Real MtpForward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                const MtpParams& mp, const ParamSet<Real>& p, const int32_t* tokens, int64_t B,
                int64_t T, double alpha, const Real* h_final, Real* out, MtpCache<Real>* cache);

// dout: [B*(T-1), H]; dh_final: [B*T, H] accumulated.
template <typename Real>
void MtpBackward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                 const MtpParams& mp, const ParamSet<Real>& p, const MtpCache<Real>& cache,
                 int64_t B, int64_t T, double alpha, const Real* dout, Real* dh_final,
                 ParamSet<Real>* grads);

}  // namespace dsv3::train
