// AdamW on fp32 master weights, the warmup + cosine learning-rate schedule and global-norm
// gradient clipping. Every reduction runs in a fixed order, so a step is bit-reproducible.
#pragma once

#include <cstdint>

#include "train/params.h"

namespace dsv3::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled; not applied to vectors (norm weights)
};

struct ScheduleOptions {
  double peak_lr = 3e-3;
  double min_lr_ratio = 0.1;  // the cosine ends at peak_lr · min_lr_ratio
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
};

// Linear warmup from peak/warmup to peak over warmup_steps, then cosine decay to the floor.
// step counts from 0.
double LearningRate(const ScheduleOptions& schedule, int64_t step);

// Scales grads so their global L2 norm is at most max_norm (max_norm <= 0: no clipping).
// Returns the norm before clipping. Non-trainable tensors are ignored.
double ClipGradNorm(ParamSet<float>* grads, double max_norm);

class AdamW {
 public:
  AdamW() = default;
  AdamW(const ParamSet<float>& params, const AdamWOptions& options);

  // One update with learning rate lr; step_count() goes up by one.
  void Step(ParamSet<float>* params, const ParamSet<float>& grads, double lr);

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  ParamSet<float>& m() { return m_; }
  ParamSet<float>& v() { return v_; }
  const ParamSet<float>& m() const { return m_; }
  const ParamSet<float>& v() const { return v_; }

 private:
  AdamWOptions options_;
  ParamSet<float> m_, v_;
  int64_t step_ = 0;
};

}  // namespace dsv3::train
