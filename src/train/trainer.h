// One training step of the DeepSeek-V3 recipe: forward + backward of next-token CE + λ·MTP CE +
// α·balance loss, global-norm clipping, AdamW on fp32 master weights with the warmup + cosine
// schedule, then auxiliary-loss-free balancing: bias_e += γ·sign(mean load − load_e).
#pragma once

#include <cstdint>
#include <vector>

#include "train/optimizer.h"
#include "train/transformer.h"

namespace dsv3::train {

struct TrainerOptions {
  LossOptions loss;                  // α, λ
  double bias_update_speed = 0.001;  // γ
  AdamWOptions adamw;
  ScheduleOptions schedule;
  double clip_norm = 1.0;
  // DeepSeek-V3 shares the MTP module's embedding and output head with the main model; the
  // checkpoint stores copies (spec §8), kept equal here.
  bool share_mtp_embeddings = true;
};

struct StepResult {
  LossStats loss;
  double grad_norm = 0;
  double lr = 0;
  // Per MoE layer: max load / mean load of this step (1 = perfectly balanced).
  std::vector<double> imbalance;
};

class Trainer {
 public:
  Trainer(TrainModel<float> model, const TrainerOptions& options, const Context& ctx);

  // batch: [B, T+1]
  StepResult Step(const int32_t* batch, int64_t B, int64_t T);
  // Mean loss terms over the batch, no update.
  LossStats Evaluate(const int32_t* batch, int64_t B, int64_t T);

  TrainModel<float>& model() { return model_; }
  AdamW& optimizer() { return adamw_; }
  const TrainerOptions& options() const { return options_; }
  int64_t step() const { return adamw_.step_count(); }

 private:
  void TieMtp();
  TrainModel<float> model_;
  TrainerOptions options_;
  Context ctx_;
  ParamSet<float> grads_;
  AdamW adamw_;
};

// max load / mean load of one layer's expert counts.
double LoadImbalance(const std::vector<int64_t>& load);

}  // namespace dsv3::train
