// A small deterministic generator (SplitMix64) whose whole state is one integer, so a training
// run's RNG can be saved in a checkpoint and resumed exactly. Standard-library distributions are
// implementation-defined, so the Gaussian transform is our own.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>

namespace dsv3::train {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}
  uint64_t state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; }

  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // [0, n), n > 0 (the tiny modulo bias is irrelevant for shuffling).
  uint64_t Below(uint64_t n) { return Next() % n; }
  // Box-Muller, one deviate per call (no cached spare: the state stays one integer).
  double Gaussian() {
    double u1 = Uniform();
    while (u1 <= 0.0) u1 = Uniform();
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  uint64_t state_;
};

}  // namespace dsv3::train
