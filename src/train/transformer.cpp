#include "train/transformer.h"

#include <algorithm>
#include <cmath>

#include "io/safetensors.h"
#include "ops/matmul.h"
#include "train/embedding.h"
#include "train/loss.h"
#include "train/rmsnorm.h"
#include "train/rng.h"

namespace dsv3::train {

template <typename Real>
struct TrainModel<Real>::Activations {
  std::vector<int32_t> tokens;           // [N]
  std::vector<LayerCache<Real>> layers;  // per main layer
  std::vector<Real> h_pre;               // [N, H] before model.norm
  std::vector<Real> h_final, inv_final;  // [N, H] after model.norm
  std::vector<Real> logits;              // [N, V]
  MtpCache<Real> mtp;
  std::vector<Real> mtp_out;     // [B*(T-1), H]
  std::vector<Real> mtp_logits;  // [B*(T-1), V]
};

template <typename Real>
Result<TrainModel<Real>> TrainModel<Real>::Create(const ModelConfig& c) {
  DSV3_RETURN_IF_ERROR(c.Validate());
  if (c.tie_word_embeddings)
    return Err("tie_word_embeddings: the trainer supports only separate lm_head weights");
  if (c.quantization_config.has_value())
    return Err(
        "quantization_config: the trainer keeps fp32 master weights; use an unquantised "
        "config");
  if (c.num_nextn_predict_layers > 1)
    return Err("num_nextn_predict_layers: the trainer supports 0 or 1 MTP layers, not {}",
               c.num_nextn_predict_layers);
  TrainModel m;
  m.config_ = c;
  m.rope_params_ = MakeRopeParams(c);
  const int64_t H = c.hidden_size, V = c.vocab_size;
  m.embed_ = m.params_.Add("model.embed_tokens.weight", {V, H});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    m.layers_.push_back(AddLayerParams(c, i, &m.params_));
    if (m.layers_.back().bias >= 0) m.bias_params_.push_back(m.layers_.back().bias);
  }
  m.norm_ = m.params_.Add("model.norm.weight", {H});
  m.lm_head_ = m.params_.Add("lm_head.weight", {V, H});
  m.has_mtp_ = c.num_nextn_predict_layers == 1;
  if (m.has_mtp_) {
    m.mtp_ = AddMtpParams(c, &m.params_);
    if (m.mtp_.layer.bias >= 0) m.bias_params_.push_back(m.mtp_.layer.bias);
  }
  return m;
}

template <typename Real>
void TrainModel<Real>::InitRandom(uint64_t seed) {
  Rng rng(seed);
  const double std_dev = 0.02;
  const double out_scale =
      1.0 / std::sqrt(2.0 * static_cast<double>(config_.num_hidden_layers + (has_mtp_ ? 1 : 0)));
  for (auto& t : params_.tensors()) {
    const std::string& n = t.name;
    auto ends_with = [&](const std::string& s) {
      return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
    };
    if (t.shape.size() == 1) {
      // Norm weights start at 1; the selection bias at 0.
      const Real v = ends_with("e_score_correction_bias") ? Real(0) : Real(1);
      std::fill(t.data.begin(), t.data.end(), v);
      continue;
    }
    // Residual-branch outputs are scaled down so the residual stream's variance stays bounded.
    const bool out_proj = ends_with("o_proj.weight") || ends_with("down_proj.weight");
    const double s = std_dev * (out_proj ? out_scale : 1.0);
    for (Real& v : t.data) v = static_cast<Real>(rng.Gaussian() * s);
  }
  if (has_mtp_) {
    params_.tensor(mtp_.embed_tokens).data = params_.tensor(embed_).data;
    params_.tensor(mtp_.shared_head_head).data = params_.tensor(lm_head_).data;
  }
}

template <typename Real>
Status TrainModel<Real>::LoadFrom(const std::string& dir) {
  DSV3_ASSIGN_OR_RETURN(auto checkpoint, io::Checkpoint::Open(dir, io::LoadMode::kRead));
  for (auto& t : params_.tensors()) {
    const io::TensorInfo* info = checkpoint->Find(t.name);
    if (info == nullptr) return Err("{}: tensor {} is missing", dir, t.name);
    if (info->shape != t.shape)
      return Err("{}: tensor {} has shape {}, expected {} elements in shape of rank {}", dir,
                 t.name, info->ShapeString(), t.numel(), t.shape.size());
    ops::WeightView w;
    w.dtype = info->dtype;
    w.rows = t.shape.size() == 2 ? t.shape[0] : 1;
    w.cols = t.shape.size() == 2 ? t.shape[1] : t.shape[0];
    w.data = info->data;
    if (info->dtype == DType::kF8E4M3) {
      const io::TensorInfo* scale = checkpoint->Find(t.name + "_scale_inv");
      if (scale == nullptr || scale->dtype != DType::kF32)
        return Err("{}: tensor {} has no F32 {}_scale_inv", dir, t.name, t.name);
      w.scale = reinterpret_cast<const float*>(scale->data);
      if (config_.quantization_config) {
        w.block_rows = config_.quantization_config->weight_block_size[0];
        w.block_cols = config_.quantization_config->weight_block_size[1];
      }
    } else if (info->dtype != DType::kF32 && info->dtype != DType::kBF16 &&
               info->dtype != DType::kF16) {
      return Err("{}: tensor {} has unsupported dtype {}", dir, t.name, DTypeName(info->dtype));
    }
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
      ops::DequantizeRow(w, r, row.data());
      for (int64_t j = 0; j < w.cols; ++j) t.data[r * w.cols + j] = static_cast<Real>(row[j]);
    }
  }
  return Status::Ok();
}

template <typename Real>
void TrainModel<Real>::RunForward(const Context& ctx, const int32_t* tokens, int64_t B, int64_t T,
                                  double alpha, bool want_mtp, Activations* act, double* balance) {
  const ModelConfig& c = config_;
  const int64_t N = B * T, H = c.hidden_size, V = c.vocab_size;
  const RopeTables<Real> rope = MakeRopeTables<Real>(rope_params_, T);
  act->tokens.assign(tokens, tokens + N);
  std::vector<Real> h(static_cast<size_t>(N * H));  // h: [N, H]
  EmbeddingForward(params_[embed_], tokens, N, H, h.data());
  act->layers.resize(layers_.size());
  *balance = 0;
  for (size_t i = 0; i < layers_.size(); ++i)
    *balance += static_cast<double>(
        LayerForward(ctx, c, rope, layers_[i], params_, B, T, alpha, h.data(), &act->layers[i]));
  act->h_pre = std::move(h);
  act->h_final.resize(static_cast<size_t>(N * H));
  RmsNormForward(act->h_pre.data(), params_[norm_], N, H, c.rms_norm_eps, act->h_final.data(),
                 &act->inv_final);
  act->logits.resize(static_cast<size_t>(N * V));
  LinearForward(ctx, act->h_final.data(), N, params_[lm_head_], V, H, act->logits.data());
  if (!want_mtp || !has_mtp_ || T < 2) return;
  const int64_t Nm = B * (T - 1);
  const RopeTables<Real> rope_m = MakeRopeTables<Real>(rope_params_, T - 1);
  act->mtp_out.resize(static_cast<size_t>(Nm * H));
  *balance += static_cast<double>(MtpForward(ctx, c, rope_m, mtp_, params_, tokens, B, T, alpha,
                                             act->h_final.data(), act->mtp_out.data(), &act->mtp));
  act->mtp_logits.resize(static_cast<size_t>(Nm * V));
  LinearForward(ctx, act->mtp_out.data(), Nm, params_[mtp_.shared_head_head], V, H,
                act->mtp_logits.data());
}

template <typename Real>
void TrainModel<Real>::Forward(const Context& ctx, const int32_t* tokens, int64_t B, int64_t T,
                               std::vector<Real>* logits, std::vector<Real>* mtp_logits) {
  Activations act;
  double balance = 0;
  RunForward(ctx, tokens, B, T, 0.0, mtp_logits != nullptr, &act, &balance);
  *logits = std::move(act.logits);
  if (mtp_logits != nullptr) *mtp_logits = std::move(act.mtp_logits);
}

template <typename Real>
LossStats TrainModel<Real>::ForwardBackward(const Context& ctx, const int32_t* sequences, int64_t B,
                                            int64_t T, const LossOptions& options,
                                            ParamSet<Real>* grads) {
  const ModelConfig& c = config_;
  const int64_t N = B * T, H = c.hidden_size, V = c.vocab_size;
  const bool use_mtp = has_mtp_ && T >= 2 && options.mtp_lambda > 0;
  std::vector<int32_t> inputs(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < T; ++i) {
      inputs[b * T + i] = sequences[b * (T + 1) + i];
      targets[b * T + i] = sequences[b * (T + 1) + i + 1];
    }
  }
  Activations act;
  LossStats stats;
  const double alpha = options.balance_alpha;
  RunForward(ctx, inputs.data(), B, T, alpha, use_mtp, &act, &stats.balance);
  const bool backward = grads != nullptr;
  std::vector<Real> dlogits(backward ? static_cast<size_t>(N * V) : 0);  // dlogits: [N, V]
  stats.main = CrossEntropy(ctx, act.logits.data(), targets.data(), N, V, 1.0,
                            backward ? dlogits.data() : nullptr);
  const int64_t Nm = B * (T - 1);
  std::vector<Real> dmtp_logits;
  if (use_mtp) {
    std::vector<int32_t> mtp_targets(static_cast<size_t>(Nm));  // t_{i+2}
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T - 1; ++i)
        mtp_targets[b * (T - 1) + i] = sequences[b * (T + 1) + i + 2];
    if (backward) dmtp_logits.resize(static_cast<size_t>(Nm * V));
    stats.mtp = CrossEntropy(ctx, act.mtp_logits.data(), mtp_targets.data(), Nm, V,
                             options.mtp_lambda, backward ? dmtp_logits.data() : nullptr);
  }
  stats.total = stats.main + options.mtp_lambda * stats.mtp + stats.balance;
  const int64_t k = c.num_experts_per_tok;
  auto count_load = [&](const LayerCache<Real>& lc) {
    std::vector<int64_t> load(static_cast<size_t>(c.n_routed_experts), 0);
    for (int32_t e : lc.moe.router.experts) ++load[e];
    (void)k;
    stats.expert_load.push_back(std::move(load));
  };
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].is_moe) count_load(act.layers[i]);
  if (use_mtp && mtp_.layer.is_moe) count_load(act.mtp.layer);
  if (!backward) return stats;

  ParamSet<Real>& g = *grads;
  std::vector<Real> dh_final(static_cast<size_t>(N * H), Real(0));  // [N, H]
  LinearBackward(ctx, act.h_final.data(), N, params_[lm_head_], V, H, dlogits.data(),
                 dh_final.data(), g[lm_head_]);
  if (use_mtp) {
    const RopeTables<Real> rope_m = MakeRopeTables<Real>(rope_params_, T - 1);
    std::vector<Real> dmtp_out(static_cast<size_t>(Nm * H), Real(0));
    LinearBackward(ctx, act.mtp_out.data(), Nm, params_[mtp_.shared_head_head], V, H,
                   dmtp_logits.data(), dmtp_out.data(), g[mtp_.shared_head_head]);
    MtpBackward(ctx, c, rope_m, mtp_, params_, act.mtp, B, T, alpha, dmtp_out.data(),
                dh_final.data(), &g);
  }
  std::vector<Real> dh(static_cast<size_t>(N * H), Real(0));
  RmsNormBackward(act.h_pre.data(), params_[norm_], act.inv_final, N, H, dh_final.data(), dh.data(),
                  g[norm_]);
  const RopeTables<Real> rope = MakeRopeTables<Real>(rope_params_, T);
  for (size_t i = layers_.size(); i-- > 0;)
    LayerBackward(ctx, c, rope, layers_[i], params_, act.layers[i], B, T, alpha, dh.data(), &g);
  EmbeddingBackward(inputs.data(), N, H, dh.data(), g[embed_]);
  return stats;
}

template class TrainModel<float>;
template class TrainModel<double>;

}  // namespace dsv3::train
