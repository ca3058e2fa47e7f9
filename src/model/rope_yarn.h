// Rotary position embedding with YaRN frequency scaling (spec §5.2, §5.3).
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace dsv3 {

// The rotation frequencies omega_m, m = 0 .. d/2-1, and the softmax scale, from the config.
struct RopeParams {
  std::vector<double> inv_freq;  // [d/2]
  double softmax_scale = 1.0;    // (dn+dr)^-0.5 * mscale(s, mscale_all_dim)^2
  double cos_sin_factor = 1.0;   // mscale(s, mscale) / mscale(s, mscale_all_dim)
  bool interleaved = true;       // pairs (x[2m], x[2m+1]); else (x[m], x[m+d/2])
};

RopeParams MakeRopeParams(const ModelConfig& config);

// YaRN's mscale(s, c) = 1 if s <= 1 else 0.1 c ln(s) + 1.
double YarnMscale(double scale, double c);

// cos/sin of every (position, pair) for positions start .. start+T-1, angles in double.
// table: [T, d/2] cos followed by [T, d/2] sin.
void RopeTable(const RopeParams& params, int64_t start, int64_t T, std::vector<float>* cos_sin);

// Rotates x [d] in place with one row of the table (cos, sin each [d/2]).
void ApplyRope(const RopeParams& params, const float* cos, const float* sin, float* x, int64_t d);

}  // namespace dsv3
