#include "model/phase_profile.h"

namespace dsv3 {

std::string_view PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kAttentionIn:
      return "attention_in";
    case Phase::kAttention:
      return "attention";
    case Phase::kAttentionOut:
      return "attention_out";
    case Phase::kRouter:
      return "router";
    case Phase::kExpertsIn:
      return "experts_in";
    case Phase::kExpertsOut:
      return "experts_out";
    case Phase::kDenseMlp:
      return "dense_mlp";
    case Phase::kLmHead:
      return "lm_head";
    case Phase::kOther:
      return "other";
  }
  return "unknown";
}

void PhaseClock::EndForward(int64_t tokens) {
  if (profile_ == nullptr) return;
  profile_->total_seconds += std::chrono::duration<double>(Clock::now() - last_).count();
  profile_->tokens += tokens;
  double named = 0;
  for (int i = 0; i < kNumPhases; ++i)
    if (i != static_cast<int>(Phase::kOther)) named += profile_->seconds[i];
  profile_->seconds[static_cast<int>(Phase::kOther)] = profile_->total_seconds - named;
}

}  // namespace dsv3
