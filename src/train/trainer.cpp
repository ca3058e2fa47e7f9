#include "train/trainer.h"

#include <algorithm>

namespace dsv3::train {

double LoadImbalance(const std::vector<int64_t>& load) {
  if (load.empty()) return 1.0;
  int64_t total = 0, mx = 0;
  for (int64_t l : load) {
    total += l;
    mx = std::max(mx, l);
  }
  if (total == 0) return 1.0;
  return static_cast<double>(mx) * static_cast<double>(load.size()) / static_cast<double>(total);
}

Trainer::Trainer(TrainModel<float> model, const TrainerOptions& options, const Context& ctx)
    : model_(std::move(model)), options_(options), ctx_(ctx) {
  grads_ = ParamSet<float>::ZerosLike(model_.params());
  adamw_ = AdamW(model_.params(), options_.adamw);
  TieMtp();
}

void Trainer::TieMtp() {
  if (!options_.share_mtp_embeddings || !model_.has_mtp()) return;
  auto& p = model_.params();
  p.tensor(model_.mtp().embed_tokens).data = p.tensor(model_.embed_tokens()).data;
  p.tensor(model_.mtp().shared_head_head).data = p.tensor(model_.lm_head()).data;
}

StepResult Trainer::Step(const int32_t* batch, int64_t B, int64_t T) {
  StepResult r;
  grads_.SetZero();
  r.loss = model_.ForwardBackward(ctx_, batch, B, T, options_.loss, &grads_);
  if (options_.share_mtp_embeddings && model_.has_mtp()) {
    // One shared tensor: its gradient is the sum over both uses.
    const std::pair<int, int> pairs[] = {{model_.embed_tokens(), model_.mtp().embed_tokens},
                                         {model_.lm_head(), model_.mtp().shared_head_head}};
    for (const auto& [main, copy] : pairs) {
      auto& gm = grads_.tensor(main).data;
      auto& gc = grads_.tensor(copy).data;
      for (size_t i = 0; i < gm.size(); ++i) gm[i] += gc[i];
      std::fill(gc.begin(), gc.end(), 0.0f);
    }
  }
  r.grad_norm = ClipGradNorm(&grads_, options_.clip_norm);
  r.lr = LearningRate(options_.schedule, adamw_.step_count());
  adamw_.Step(&model_.params(), grads_, r.lr);
  TieMtp();
  // Auxiliary-loss-free balancing: overloaded experts get a lower selection bias.
  const auto& biases = model_.bias_params();
  for (const auto& load : r.loss.expert_load) r.imbalance.push_back(LoadImbalance(load));
  if (options_.bias_update_speed > 0 && biases.size() == r.loss.expert_load.size()) {
    const float gamma = static_cast<float>(options_.bias_update_speed);
    for (size_t l = 0; l < biases.size(); ++l) {
      const auto& load = r.loss.expert_load[l];
      double mean = 0;
      for (int64_t x : load) mean += static_cast<double>(x);
      mean /= static_cast<double>(load.size());
      float* bias = model_.params()[biases[l]];
      for (size_t e = 0; e < load.size(); ++e) {
        const double diff = mean - static_cast<double>(load[e]);
        bias[e] += diff > 0 ? gamma : (diff < 0 ? -gamma : 0.0f);
      }
    }
  }
  return r;
}

LossStats Trainer::Evaluate(const int32_t* batch, int64_t B, int64_t T) {
  return model_.ForwardBackward(ctx_, batch, B, T, options_.loss, nullptr);
}

}  // namespace dsv3::train
