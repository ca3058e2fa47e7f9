#include "model/transformer.h"

#include <cstring>

#include "model/parallel_rows.h"
#include "model/router.h"
#include "ops/vector_ops.h"

namespace dsv3 {

Result<std::unique_ptr<Model>> Model::Load(const std::string& dir, const LoadOptions& options) {
  auto model = std::unique_ptr<Model>(new Model());
  model->dir_ = dir;
  DSV3_ASSIGN_OR_RETURN(model->config_, LoadModelConfig(dir));
  DSV3_ASSIGN_OR_RETURN(model->checkpoint_,
                        io::Checkpoint::Open(dir, options.load_mode, options.pool));
  DSV3_ASSIGN_OR_RETURN(model->weights_, BindWeights(model->config_, *model->checkpoint_));
  if (options.tile_int8_rows && options.load_mode == io::LoadMode::kRead)
    TileInt8Weights(&model->weights_, options.tile_q8_0_rows, options.pool);
  if (options.tile_bf16_rows && options.load_mode == io::LoadMode::kRead)
    TileBf16Weights(&model->weights_, options.pool);
  SplitKvBProj(&model->weights_, model->config_, options);
  model->rope_ = MakeRopeParams(model->config_);
  return model;
}

InferenceState::InferenceState(const Model& model, int64_t capacity)
    : cache_(model.config(), model.config().num_hidden_layers, capacity),
      mtp_cache_(model.config(), static_cast<int64_t>(model.weights().mtp.size()), capacity) {}

Status CheckForwardInput(const Model& model, const InferenceState& state,
                         std::span<const int32_t> tokens, const ForwardOptions& options) {
  const ModelConfig& c = model.config();
  if (tokens.empty()) return Status::Error("empty input: at least one token is needed");
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      return Err("token id {} at position {} is outside the vocabulary [0, {})", tokens[i], i,
                 c.vocab_size);
  }
  const int64_t end = state.length() + static_cast<int64_t>(tokens.size());
  if (end > state.capacity())
    return Err("sequence of {} tokens exceeds the context capacity {}", end, state.capacity());
  if (options.experts_per_token != 0 && c.n_routed_experts > 0) {
    const int64_t max_k = MaxSelectableExperts(c);
    if (options.experts_per_token < 1 || options.experts_per_token > max_k)
      return Err("experts per token must be in [1, {}] for this model, got {}", max_k,
                 options.experts_per_token);
  }
  return Status::Ok();
}

namespace {

// normed[t] = RmsNorm(x[t]) for t < T; with branch, x[t] += branch[t] first (the residual add).
// Row by row, the same operations as apart: the same bits on any thread. The row-wise passes
// (these, the residual adds, the embedding) split a prefill's tokens over the threads: on the
// calling thread alone they were ~3.6 % of a bench-medium q4_0 pp512 forward; split, forwards
// alternating between both in one process took 0.8-4.3 % less time (3 runs).
void NormRows(const ops::KernelContext& ctx, float* x, const float* branch, int64_t T, int64_t H,
              const std::vector<float>& weight, float eps, float* normed) {
  ParallelRows(ctx, T, kTokenGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (branch != nullptr) ops::Axpy(ctx.isa, 1.0f, branch + t * H, H, x + t * H);
      ops::RmsNorm(ctx.isa, x + t * H, weight.data(), H, eps, normed + t * H);
    }
  });
}

// One decoder layer (spec §2) on the residual stream x [T, H], in place.
void DecoderLayer(const Model& model, const LayerWeights& lw, const ops::KernelContext& ctx,
                  float* x, int64_t T, int64_t start_pos, const float* rope_table,
                  const ForwardOptions& options, LayerKvCache& cache, float* normed, float* branch,
                  MlaScratch& mla, MoeScratch& moe, MlpScratch& mlp) {
  const ModelConfig& c = model.config();
  const int64_t H = c.hidden_size;
  NormRows(ctx, x, nullptr, T, H, lw.input_layernorm, c.rms_norm_eps, normed);
  MlaForward(c, model.rope(), lw.attn, ctx, normed, T, start_pos, rope_table, options.attention,
             cache, mla, branch, options.profile);
  NormRows(ctx, x, branch, T, H, lw.post_attention_layernorm, c.rms_norm_eps, normed);
  if (lw.is_moe) {
    const int64_t k =
        options.experts_per_token > 0 ? options.experts_per_token : c.num_experts_per_tok;
    MoeForward(c, lw.moe, ctx, normed, T, k, moe, branch, options.profile);
  } else {
    PhaseClock clock(options.profile);
    MlpForward(lw.mlp, ctx, normed, T, mlp, branch);
    clock.Lap(Phase::kDenseMlp);
  }
  ParallelRows(ctx, T, kTokenGrain, [&](int64_t begin, int64_t end) {
    ops::Axpy(ctx.isa, 1.0f, branch + begin * H, (end - begin) * H, x + begin * H);
  });
}

}  // namespace

Status Forward(const Model& model, const ops::KernelContext& ctx, InferenceState& state,
               std::span<const int32_t> tokens, const ForwardOptions& options, float* logits) {
  DSV3_RETURN_IF_ERROR(CheckForwardInput(model, state, tokens, options));
  const ModelConfig& c = model.config();
  const ModelWeights& w = model.weights();
  const int64_t T = static_cast<int64_t>(tokens.size()), H = c.hidden_size;
  const int64_t start_pos = state.cache_.length();
  PhaseClock whole(options.profile);

  // x: [T, H] residual stream, starting from the embedding rows (no scaling).
  float* x = state.residual_.Get(T * H);
  ParallelRows(ctx, T, kTokenGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      ops::DequantizeRow(ctx.isa, w.embed_tokens, tokens[t], x + t * H);
  });
  RopeTable(model.rope(), start_pos, T, &state.rope_table_);
  float* normed = state.normed_.Get(T * H);
  float* branch = state.branch_.Get(T * H);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    DecoderLayer(model, w.layers[i], ctx, x, T, start_pos, state.rope_table_.data(), options,
                 state.cache_.layer(i), normed, branch, state.mla_, state.moe_, state.mlp_);
  }
  state.cache_.set_length(start_pos + T);

  // hidden: [T, H] after the final norm; logits: [T or 1, vocab]
  PhaseClock clock(options.profile);
  float* hidden = state.hidden_.Get(T * H);
  NormRows(ctx, x, nullptr, T, H, w.norm, c.rms_norm_eps, hidden);
  state.final_hidden_ = hidden;
  if (options.last_logits_only) {
    ops::MatMul(ctx, hidden + (T - 1) * H, 1, w.lm_head, logits);
  } else {
    ops::MatMul(ctx, hidden, T, w.lm_head, logits);
  }
  clock.Lap(Phase::kLmHead);
  whole.EndForward(T);
  return Status::Ok();
}

Status ForwardMtp(const Model& model, const ops::KernelContext& ctx, InferenceState& state,
                  std::span<const int32_t> next_tokens, const float* hidden,
                  int64_t experts_per_token, float* logits) {
  if (!model.has_mtp()) return Status::Error("this checkpoint has no MTP layer");
  ForwardOptions options;
  options.experts_per_token = experts_per_token;
  KvCache& cache = state.mtp_cache_;
  if (next_tokens.empty()) return Status::Error("MTP needs at least one token");
  for (size_t i = 0; i < next_tokens.size(); ++i) {
    if (next_tokens[i] < 0 || next_tokens[i] >= model.config().vocab_size)
      return Err("token id {} at position {} is outside the vocabulary", next_tokens[i], i);
  }
  const int64_t T = static_cast<int64_t>(next_tokens.size());
  if (cache.length() + T > cache.capacity())
    return Err("MTP sequence exceeds the context capacity {}", cache.capacity());
  const ModelConfig& c = model.config();
  const MtpWeights& m = model.weights().mtp[0];
  const int64_t H = c.hidden_size, start_pos = cache.length();

  // concat: [T, 2H] = [RMSNorm(emb(t_{i+1}), enorm) ; RMSNorm(h_i, hnorm)]  (order: emb first)
  float* concat = state.branch_.Get(T * 2 * H);
  float* emb = state.normed_.Get(T * H);
  for (int64_t t = 0; t < T; ++t) {
    ops::DequantizeRow(ctx.isa, m.embed_tokens, next_tokens[t], emb + t * H);
    ops::RmsNorm(ctx.isa, emb + t * H, m.enorm.data(), H, c.rms_norm_eps, concat + t * 2 * H);
    ops::RmsNorm(ctx.isa, hidden + t * H, m.hnorm.data(), H, c.rms_norm_eps,
                 concat + t * 2 * H + H);
  }
  // x: [T, H] = eh_proj(concat). Kept apart from the main model's buffers so that `hidden`
  // (which may point at the main model's final hidden states) stays valid.
  float* x = state.mtp_x_.Get(T * H);
  ops::MatMul(ctx, concat, T, m.eh_proj, x);
  RopeTable(model.rope(), start_pos, T, &state.rope_table_);
  float* normed = state.mtp_normed_.Get(T * H);
  float* branch = state.mtp_branch_.Get(T * H);
  DecoderLayer(model, m.layer, ctx, x, T, start_pos, state.rope_table_.data(), options,
               cache.layer(0), normed, branch, state.mla_, state.moe_, state.mlp_);
  cache.set_length(start_pos + T);
  for (int64_t t = 0; t < T; ++t)
    ops::RmsNorm(ctx.isa, x + t * H, m.shared_head_norm.data(), H, c.rms_norm_eps, normed + t * H);
  ops::MatMul(ctx, normed, T, m.shared_head_head, logits);
  return Status::Ok();
}

}  // namespace dsv3
