// The whole DeepSeek-V3 network for training (spec §2, §7, §8): parameters by HF name, the forward
// pass with saved activations, the loss (next-token cross-entropy + λ·MTP cross-entropy + the
// sequence-wise balance loss) and the backward pass. Generic over Real: float for training,
// double for gradient checks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/layer.h"
#include "train/mtp.h"
#include "train/params.h"
#include "util/status.h"

namespace dsv3::train {

struct LossOptions {
  double balance_alpha = 0.0001;  // α, DeepSeek-V3 report's default
  double mtp_lambda = 0.3;        // λ
};

struct LossStats {
  double total = 0, main = 0, mtp = 0, balance = 0;
  // Per MoE layer (main layers in order, then the MTP layer): tokens routed to each expert.
  std::vector<std::vector<int64_t>> expert_load;
};

template <typename Real>
class TrainModel {
 public:
  // Lays out every tensor the config needs (all zero). Errors for configs the trainer cannot
  // build (tied embeddings, FP8 training, more than one MTP layer).
  static Result<TrainModel> Create(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  ParamSet<Real>& params() { return params_; }
  const ParamSet<Real>& params() const { return params_; }
  // Bias parameter index of every MoE layer with a correction bias (main layers, then MTP).
  const std::vector<int>& bias_params() const { return bias_params_; }

  // N(0, 0.02²) linears and embeddings (output projections scaled by 1/sqrt(2·layers)), norms 1,
  // bias 0; the MTP embedding and head start as copies of the main ones. Determined by seed.
  void InitRandom(uint64_t seed);
  // Reads every tensor by name from a checkpoint directory (any stored dtype, dequantised).
  Status LoadFrom(const std::string& dir);

  // tokens: [B, T]. logits: [B*T, V]; mtp_logits (when the model has MTP and it is not null):
  // [B*(T-1), V], row i of a sequence predicting t_{i+2}.
  void Forward(const Context& ctx, const int32_t* tokens, int64_t B, int64_t T,
               std::vector<Real>* logits, std::vector<Real>* mtp_logits);

  // sequences: [B, T+1]; inputs are tokens 0..T-1, targets 1..T (MTP: 2..T). Accumulates the
  // gradient of stats.total into grads when it is not null.
  LossStats ForwardBackward(const Context& ctx, const int32_t* sequences, int64_t B, int64_t T,
                            const LossOptions& options, ParamSet<Real>* grads);

  int embed_tokens() const { return embed_; }
  int lm_head() const { return lm_head_; }
  bool has_mtp() const { return has_mtp_; }
  const MtpParams& mtp() const { return mtp_; }

 private:
  struct Activations;
  void RunForward(const Context& ctx, const int32_t* tokens, int64_t B, int64_t T, double alpha,
                  bool want_mtp, Activations* act, double* balance);

  ModelConfig config_;
  ParamSet<Real> params_;
  int embed_ = -1, norm_ = -1, lm_head_ = -1;
  std::vector<LayerParams> layers_;
  bool has_mtp_ = false;
  MtpParams mtp_;
  std::vector<int> bias_params_;
  RopeParams rope_params_;
};

}  // namespace dsv3::train
