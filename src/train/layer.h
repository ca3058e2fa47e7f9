// One decoder layer for training (spec §2): pre-norm MLA and pre-norm SwiGLU or DeepSeekMoE, each
// with a residual. Its tensors are named by index into a ParamSet (HF names, spec §9.4).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/mla.h"
#include "train/moe.h"
#include "train/params.h"

namespace dsv3::train {

struct LayerParams {
  int input_layernorm = -1, post_attention_layernorm = -1;
  int q_proj = -1, q_a_proj = -1, q_a_layernorm = -1, q_b_proj = -1;
  int kv_a_proj = -1, kv_a_layernorm = -1, kv_b_proj = -1, o_proj = -1;
  bool is_moe = false;
  std::array<int, 3> mlp{-1, -1, -1};  // gate, up, down (dense layers)
  int gate = -1, bias = -1;            // router (MoE layers); bias -1 unless noaux_tc
  std::vector<std::array<int, 3>> experts;
  bool has_shared = false;
  std::array<int, 3> shared{-1, -1, -1};
  int64_t dense_width = 0;
};

// Adds layer `index`'s tensors (model.layers.{index}.*) to params.
template <typename Real>
LayerParams AddLayerParams(const ModelConfig& cfg, int64_t index, ParamSet<Real>* params);

template <typename Real>
struct LayerCache {
  std::vector<Real> h_in, a, inv_a;  // input [N, H], RMSNorm(h_in) [N, H], its statistic
  MlaCache<Real> mla;
  std::vector<Real> h_mid, f, inv_f;  // after the attention residual, RMSNorm(h_mid)
  MlpCache<Real> mlp;
  MoeCache<Real> moe;
};

// h: [B*T, H], updated in place. Returns the layer's balance loss (0 for dense layers).
template <typename Real>
Real LayerForward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                  const LayerParams& lp, const ParamSet<Real>& p, int64_t B, int64_t T,
                  double alpha, Real* h, LayerCache<Real>* cache);

// dh: [B*T, H], the gradient of the layer's output in, of its input out (in place).
template <typename Real>
void LayerBackward(const Context& ctx, const ModelConfig& cfg, const RopeTables<Real>& rope,
                   const LayerParams& lp, const ParamSet<Real>& p, const LayerCache<Real>& cache,
                   int64_t B, int64_t T, double alpha, Real* dh, ParamSet<Real>* grads);

}  // namespace dsv3::train
