// Wall time of a forward pass's phases, summed over calls: where a decoded token's milliseconds
// go (dsv3 bench --profile). Per request, owned by the caller and passed in ForwardOptions; with
// no profile nothing reads the clock.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string_view>

namespace dsv3 {

enum class Phase : int {
  kAttentionIn,   // q_a + kv_a (or q + kv_a) projections, q_a norm, q_b
  kAttention,     // rope, latent cache writes, scores / softmax / values (W_UK and W_UV included)
  kAttentionOut,  // o_proj
  kRouter,        // gate logits, routing, grouping tokens by expert
  kExpertsIn,     // gathering their x (where not read in place), routed + shared experts' gate
                  // and up projections, SiLU * up (in kExpertsOut where a prefill's down
                  // projections are summed per row range: moe.cpp, SummedDownProjections)
  kExpertsOut,    // their down projections and the weighted sum
  kDenseMlp,      // the first_k_dense_replace layers' MLP
  kLmHead,        // final norm and lm_head
  kOther,         // the rest of Forward: embedding, layer norms, residual adds
};
inline constexpr int kNumPhases = 9;
static_assert(kNumPhases == static_cast<int>(Phase::kOther) + 1);

// snake_case, as `dsv3 bench --profile --json` prints it: "attention_in", ..., "other".
std::string_view PhaseName(Phase phase);

struct PhaseProfile {
  std::array<double, kNumPhases> seconds{};  // kOther: total minus the named phases
  double total_seconds = 0;                  // whole Forward calls
  int64_t tokens = 0;                        // tokens those calls processed
  void Clear() { *this = PhaseProfile{}; }
};

// Lap timer over consecutive phases: Lap(p) adds the time since the last lap (or since
// construction) to phase p (not kOther, which EndForward derives). A no-op without a profile.
class PhaseClock {
 public:
  explicit PhaseClock(PhaseProfile* profile) : profile_(profile) {
    if (profile_ != nullptr) last_ = Clock::now();
  }
  void Lap(Phase phase) {
    if (profile_ == nullptr) return;
    const Clock::time_point now = Clock::now();
    profile_->seconds[static_cast<int>(phase)] +=
        std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }
  // For a clock started with a Forward call, at its end: adds the call's time and tokens to the
  // totals, and to kOther what the named phases did not take.
  void EndForward(int64_t tokens);

 private:
  using Clock = std::chrono::steady_clock;
  PhaseProfile* profile_;
  Clock::time_point last_{};
};

}  // namespace dsv3
