#include "train/optimizer.h"

#include <cmath>
#include <numbers>

namespace dsv3::train {

double LearningRate(const ScheduleOptions& s, int64_t step) {
  if (s.warmup_steps > 0 && step < s.warmup_steps)
    return s.peak_lr * static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  const double floor = s.peak_lr * s.min_lr_ratio;
  const int64_t decay_steps = std::max<int64_t>(1, s.total_steps - s.warmup_steps);
  const double progress =
      std::min(1.0, static_cast<double>(step - s.warmup_steps) / static_cast<double>(decay_steps));
  return floor + (s.peak_lr - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

double ClipGradNorm(ParamSet<float>* grads, double max_norm) {
  double sum = 0;  // in double, tensor by tensor in layout order
  for (const auto& t : grads->tensors()) {
    if (!t.trainable) continue;
    for (float g : t.data) sum += static_cast<double>(g) * g;
  }
  const double norm = std::sqrt(sum);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / norm);
    for (auto& t : grads->tensors())
      for (float& g : t.data) g *= scale;
  }
  return norm;
}

AdamW::AdamW(const ParamSet<float>& params, const AdamWOptions& options)
    : options_(options),
      m_(ParamSet<float>::ZerosLike(params)),
      v_(ParamSet<float>::ZerosLike(params)) {}

void AdamW::Step(ParamSet<float>* params, const ParamSet<float>& grads, double lr) {
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double c1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double c2 = 1.0 - std::pow(b2, static_cast<double>(step_));
  for (int i = 0; i < params->size(); ++i) {
    auto& p = params->tensor(i);
    if (!p.trainable) continue;
    const float* g = grads[i];
    float* m = m_[i];
    float* v = v_[i];
    const bool decay = p.shape.size() >= 2;
    const float wd = decay ? static_cast<float>(lr * options_.weight_decay) : 0.0f;
    const float fb1 = static_cast<float>(b1), fb2 = static_cast<float>(b2);
    const float step_size = static_cast<float>(lr / c1);
    const float inv_c2 = static_cast<float>(1.0 / c2);
    const float eps = static_cast<float>(options_.eps);
    float* w = p.data.data();
    const int64_t n = p.numel();
    for (int64_t j = 0; j < n; ++j) {
      m[j] = fb1 * m[j] + (1.0f - fb1) * g[j];
      v[j] = fb2 * v[j] + (1.0f - fb2) * g[j] * g[j];
      w[j] -= wd * w[j];
      w[j] -= step_size * m[j] / (std::sqrt(v[j] * inv_c2) + eps);
    }
  }
}

}  // namespace dsv3::train
