#include "model/rope_yarn.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace dsv3 {

double YarnMscale(double scale, double c) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * c * std::log(scale) + 1.0;
}

RopeParams MakeRopeParams(const ModelConfig& config) {
  RopeParams p;
  const int64_t d = config.qk_rope_head_dim;
  const double theta = config.rope_theta;
  p.interleaved = config.rope_interleave;
  p.inv_freq.resize(static_cast<size_t>(d / 2));
  for (int64_t m = 0; m < d / 2; ++m)
    p.inv_freq[m] = std::pow(theta, -2.0 * static_cast<double>(m) / static_cast<double>(d));
  p.softmax_scale = 1.0 / std::sqrt(static_cast<double>(config.qk_head_dim()));
  if (!config.has_yarn()) return p;

  const RopeScaling& ys = config.rope_scaling;
  const double s = ys.factor;
  const double L0 = static_cast<double>(ys.original_max_position_embeddings);
  // dim(n_rot): the pair index whose wavelength fits n_rot times into L0.
  auto correction_dim = [&](double n_rot) {
    return static_cast<double>(d) * std::log(L0 / (n_rot * 2.0 * std::numbers::pi)) /
           (2.0 * std::log(theta));
  };
  double low = std::max(std::floor(correction_dim(ys.beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(ys.beta_slow)), static_cast<double>(d - 1));
  if (low == high) high += 0.001;
  for (int64_t m = 0; m < d / 2; ++m) {
    const double ramp = std::clamp((static_cast<double>(m) - low) / (high - low), 0.0, 1.0);
    p.inv_freq[m] = p.inv_freq[m] / s * ramp + p.inv_freq[m] * (1.0 - ramp);
  }
  if (ys.mscale_all_dim != 0.0) {
    const double m = YarnMscale(s, ys.mscale_all_dim);
    p.softmax_scale *= m * m;
  }
  p.cos_sin_factor = YarnMscale(s, ys.mscale) / YarnMscale(s, ys.mscale_all_dim);
  return p;
}

void RopeTable(const RopeParams& params, int64_t start, int64_t T, std::vector<float>* cos_sin) {
  const int64_t half = static_cast<int64_t>(params.inv_freq.size());
  cos_sin->resize(static_cast<size_t>(2 * T * half));
  float* cos = cos_sin->data();
  float* sin = cos + T * half;
  for (int64_t t = 0; t < T; ++t) {
    const double pos = static_cast<double>(start + t);
    for (int64_t m = 0; m < half; ++m) {
      const double angle = pos * params.inv_freq[m];
      cos[t * half + m] = static_cast<float>(std::cos(angle) * params.cos_sin_factor);
      sin[t * half + m] = static_cast<float>(std::sin(angle) * params.cos_sin_factor);
    }
  }
}

void ApplyRope(const RopeParams& params, const float* cos, const float* sin, float* x, int64_t d) {
  const int64_t half = d / 2;
  for (int64_t m = 0; m < half; ++m) {
    // Interleaved: pair m is (x[2m], x[2m+1]) as in every DeepSeek checkpoint; half-split:
    // (x[m], x[m+d/2]) for weights converted to that layout.
    float* a = params.interleaved ? &x[2 * m] : &x[m];
    float* b = params.interleaved ? &x[2 * m + 1] : &x[m + half];
    const float a0 = *a, b0 = *b;
    *a = a0 * cos[m] - b0 * sin[m];
    *b = a0 * sin[m] + b0 * cos[m];
  }
}

}  // namespace dsv3
