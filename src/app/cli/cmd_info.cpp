// dsv3 info: the config, parameter counts and the KV cache cost of a model directory.
#include <fmt/format.h>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "io/safetensors.h"
#include "model/param_count.h"

namespace dsv3::cli {

namespace {

std::string Human(double n) {
  if (n >= 1e9) return fmt::format("{:.2f} B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f} M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.2f} K", n / 1e3);
  return fmt::format("{:.0f}", n);
}

Status RunInfo(const RunOptions& options) {
  DSV3_ASSIGN_OR_RETURN(io::LoadMode mode, ParseLoadMode(options.load));
  // Loading binds and checks every tensor, so `info` also validates the checkpoint.
  DSV3_ASSIGN_OR_RETURN(auto model, Model::Load(options.model_dir, LoadOptions{mode}));
  const ModelConfig& c = model->config();
  const ParamCounts p = CountParams(c, options.experts_per_token);
  const int64_t kv_values = c.kv_cache_values_per_token_layer() * c.num_hidden_layers;
  fmt::print("model:            {}\n", options.model_dir);
  fmt::print("model_type:       {}\n", c.model_type);
  fmt::print(
      "layers:           {} ({} dense, {} MoE){}\n", c.num_hidden_layers,
      [&] {
        int64_t n = 0;
        for (int64_t i = 0; i < c.num_hidden_layers; ++i) n += !c.IsMoeLayer(i);
        return n;
      }(),
      [&] {
        int64_t n = 0;
        for (int64_t i = 0; i < c.num_hidden_layers; ++i) n += c.IsMoeLayer(i);
        return n;
      }(),
      model->has_mtp() ? " + 1 MTP layer" : "");
  fmt::print("hidden_size:      {}\n", c.hidden_size);
  fmt::print(
      "attention:        MLA, {} heads, q_lora_rank {}, kv_lora_rank {}, nope/rope/v {}/{}/{}\n",
      c.num_attention_heads, c.has_q_lora() ? std::to_string(c.q_lora_rank) : "null",
      c.kv_lora_rank, c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim);
  fmt::print("rope:             theta {}, {}, {}\n", c.rope_theta,
             c.has_yarn() ? fmt::format("YaRN factor {}", c.rope_scaling.factor) : "no scaling",
             c.rope_interleave ? "interleaved" : "half-split");
  if (c.n_routed_experts > 0) {
    fmt::print("experts:          {} routed (top-{}), {} shared, {}/{}, n_group {} topk_group {}\n",
               c.n_routed_experts,
               options.experts_per_token > 0 ? options.experts_per_token : c.num_experts_per_tok,
               c.n_shared_experts, c.scoring_func, c.topk_method, c.n_group, c.topk_group);
  }
  fmt::print("vocab_size:       {}\n", c.vocab_size);
  fmt::print("weights:          {}\n",
             c.quantization_config ? "fp8 e4m3, block-scaled" : "as stored (see dtypes)");
  fmt::print("params total:     {} ({})\n", Human(static_cast<double>(p.total)), p.total);
  fmt::print("params active:    {} ({}) per token\n", Human(static_cast<double>(p.active)),
             p.active);
  if (p.mtp > 0)
    fmt::print("params MTP:       {} ({})\n", Human(static_cast<double>(p.mtp)), p.mtp);
  fmt::print("KV cache:         {} values per token ({} per layer: latent {} + rope key {})\n",
             kv_values, c.kv_cache_values_per_token_layer(), c.kv_lora_rank, c.qk_rope_head_dim);
  fmt::print("KV bytes/token:   {} (f32 cache), {} at 16 bits\n", kv_values * 4, kv_values * 2);
  fmt::print("context:          {} (max_position_embeddings)\n", c.max_position_embeddings);
  return Status::Ok();
}

}  // namespace

Command RegisterInfo(CLI::App& root) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* app = root.add_subcommand("info", "config, parameters, KV cache bytes per token");
  AddRunOptions(app, options.get());
  return {app, [options] { return RunInfo(*options); }};
}

}  // namespace dsv3::cli
