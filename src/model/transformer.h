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

struct LoadOptions {
  io::LoadMode load_mode = io::LoadMode::kRead;
  // Reorder q8_0 / q4_0 product matrices into the int8 kernels' 16-row tiles (TileInt8Weights):
  // for runs on AVX-512 or AVX2 with int8 activations, where it makes the GEMV cheaper per weight;
  // any other path reads tiles through the scalar reference (correct, slow). Ignored for kMmap
  // (the mapping is read-only).
  bool tile_int8_rows = false;
  // Tile q8_0 matrices too (AVX-512 and AVX2). On AVX2 the row-major q8_0 kernel once streamed as
  // fast (session 10: tg64 61.2 tok/s row-major, 53.4 tiled); since the tiled GEMV stopped
  // requesting its weights (ec201a8) the tiles are far ahead: bench-medium q8_0, DSV3_ISA=avx2,
  // runs alternating (session 30): tg32 29.5-30.8 -> 50.2-50.8 tok/s, pp512 126-128 -> 179-184.
  bool tile_q8_0_rows = true;
  // Reorder BF16 and FP8 product matrices into the bf16-dot kernel's 32-row tiles
  // (TileBf16Weights), which its prefill products read in place instead of packing each weight per
  // call, and the AVX-512 exact kernel reads with no reduction across lanes (decode): for runs on
  // AVX-512 BF16 with bf16_dot. A product of 8+ tokens on tiles without bf16_dot takes the dot
  // form there. AVX2 reads the tiles natively too (decode one stream a tile, prefill packing 8
  // rows a load); the scalar ISA takes the reference (correct, slow). Ignored for kMmap.
  bool tile_bf16_rows = false;
  // Decoding will run on int8 activations (ops::KernelContext::int8_dot): q8_0 / q4_0 kv_b_proj's
  // W_UK halves get the int8 column layout (SplitKvBProj, KvBSplit::int8_dot) on any ISA.
  bool int8_dot = false;
  // An FP8 kv_b_proj's W_UK halves get the FP8 column layout (SplitKvBProj, KvBSplit::fp8_columns)
  // on any ISA: decoding's q_lat = W_UK^T q_nope in f32 with the block scales taken out of the
  // sums, read front to back. Off: AccumulateRows on W_UK's rows (each code scaled, then summed).
  bool fp8_columns = true;
  // Threads for the load's own work (the tiling), not owned; null: this thread.
  ThreadPool* pool = nullptr;
};

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
