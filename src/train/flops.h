// Model FLOPs of one training token (the numerator of model-FLOPs utilisation): every linear
// layer's multiply-adds, attention's score and value products over a causal window, the output
// head, and the MTP module; times 2 FLOPs per multiply-add and times 3 for forward + backward
// (the backward pass computes both the input and the weight gradient of every product).
#pragma once

#include <cstdint>

#include "model/config.h"

namespace dsv3::train {

struct TrainingFlops {
  int64_t linear_macs = 0;     // per token, main model: attention projections, MLPs, router
  int64_t attention_macs = 0;  // per token, main model: q·k and p·v, averaged over the window
  int64_t head_macs = 0;       // per token: lm_head
  int64_t mtp_macs = 0;        // per token: eh_proj, the MTP layer (with its attention), its head
  // 6 x all multiply-adds.
  double PerToken() const {
    return 6.0 * static_cast<double>(linear_macs + attention_macs + head_macs + mtp_macs);
  }
};

// seq_len: the training window (attention over positions 0..i averages (seq_len + 1) / 2 keys).
TrainingFlops CountTrainingFlops(const ModelConfig& config, int64_t seq_len);

}  // namespace dsv3::train
