// The DeepSeek-V3 model (spec §2): immutable weights plus the forward pass over per-request state.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/mla.h"
#include "model/moe.h"
#include "model/phase_profile.h"
#include "model/rope_yarn.h"
#include "model/weights.h"

namespace dsv3 {

class Model {
 public:
  static Result<std::unique_ptr<Model>> Load(const std::string& dir, const LoadOptions& options);

  const std::string& dir() const { return dir_; }
  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const RopeParams& rope() const { return rope_; }
  bool has_mtp() const { return !weights_.mtp.empty(); }

 private:
  std::string dir_;
  ModelConfig config_;
  std::unique_ptr<io::Checkpoint> checkpoint_;  // owns the bytes the weights point into
  ModelWeights weights_;
  RopeParams rope_;
};

struct ForwardOptions {
  int64_t experts_per_token = 0;  // 0: the config's num_experts_per_tok
  AttentionPath attention = AttentionPath::kAuto;
  bool last_logits_only = false;  // logits for the last token only (decode, generation)
  // nullptr, or where each call adds its phases' wall time (model/phase_profile.h).
  PhaseProfile* profile = nullptr;
};

// Everything one sequence owns: its KV cache and the buffers its forward passes reuse.
class InferenceState {
 public:
  // capacity: the most tokens this sequence will hold (prompt + generated).
  InferenceState(const Model& model, int64_t capacity);

  KvCache& cache() { return cache_; }
  KvCache& mtp_cache() { return mtp_cache_; }
  int64_t length() const { return cache_.length(); }
  int64_t capacity() const { return cache_.capacity(); }
  // Final-norm hidden states [T, H] of the last Forward call (input of the MTP module).
  const float* last_hidden() const { return final_hidden_; }

 private:
  friend Status Forward(const Model&, const ops::KernelContext&, InferenceState&,
                        std::span<const int32_t>, const ForwardOptions&, float*);
  friend Status ForwardMtp(const Model&, const ops::KernelContext&, InferenceState&,
                           std::span<const int32_t>, const float*, int64_t, float*);
  KvCache cache_;
  KvCache mtp_cache_;
  ScratchBuffer residual_, normed_, branch_, hidden_;
  ScratchBuffer mtp_x_, mtp_normed_, mtp_branch_;  // apart from the main model's: see ForwardMtp
  std::vector<float> rope_table_;
  MlaScratch mla_;
  MoeScratch moe_;
  MlpScratch mlp_;
  const float* final_hidden_ = nullptr;
};

// Checks what the model and options can run: token ids in range, a non-empty input, the cache's
// capacity, and experts_per_token within what the routing can select.
Status CheckForwardInput(const Model& model, const InferenceState& state,
                         std::span<const int32_t> tokens, const ForwardOptions& options);

// Runs tokens at positions state.length() .. state.length()+T-1 and appends them to the cache
// (prefill when the cache is empty, chunked prefill when not, decode when T == 1).
//   logits: [T, vocab] or, with last_logits_only, [1, vocab]
Status Forward(const Model& model, const ops::KernelContext& ctx, InferenceState& state,
               std::span<const int32_t> tokens, const ForwardOptions& options, float* logits);

// The MTP module, depth 1 (spec §8): for main-model final hidden states h_i [n, H] (positions
// mtp_cache.length() ..) and the next tokens t_{i+1} [n], predicts t_{i+2}.
//   logits: [n, vocab]
Status ForwardMtp(const Model& model, const ops::KernelContext& ctx, InferenceState& state,
                  std::span<const int32_t> next_tokens, const float* hidden,
                  int64_t experts_per_token, float* logits);

}  // namespace dsv3
