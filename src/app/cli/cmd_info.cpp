// dsv3 info: the config, parameter counts, the KV cache cost of a model directory, and the bytes
// one decode step must read (the decode roofline) in its format and in every other one.
#include <string>
#include <vector>

#include <fmt/format.h>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "io/safetensors.h"
#include "model/param_count.h"

namespace dsv3::cli {

namespace {

// The format of the weights, from quantization_config when there is one (it names the format of
// the converted linear weights), else from the dtype the loaded weights have.
std::string WeightsDescription(const ModelConfig& c, const ModelWeights& weights) {
  if (!c.quantization_config) return fmt::format("{} (as stored)", WeightFormatName(weights));
  const QuantizationConfig& q = *c.quantization_config;
  if (q.quant_method == "fp8")
    return fmt::format("fp8 {}, {}x{} block scales{} (quantization_config)",
                       q.fmt.empty() ? "e4m3" : q.fmt, q.weight_block_size[0],
                       q.weight_block_size[1], q.scale_fmt.empty() ? "" : ", " + q.scale_fmt);
  if (q.fmt == "q8_0")
    return fmt::format("q8_0, int8 with an f32 scale per {} columns (quantization_config)",
                       q.group_size);
  if (q.fmt == "q4_0")
    return fmt::format("q4_0, 4-bit with an f32 scale per {} columns (quantization_config)",
                       q.group_size);
  return fmt::format("{} {} (quantization_config)", q.quant_method, q.fmt);
}

// "193.46 MB" (decimal units, as bandwidths are quoted).
std::string HumanBytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.2f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.2f} KB", b / 1e3);
  return fmt::format("{} B", bytes);
}

// Context lengths to show the decode cost at: 1, a few common lengths, and the longest.
std::vector<int64_t> Contexts(int64_t max_position) {
  std::vector<int64_t> contexts = {1};
  for (int64_t c : {512, 4096, 32768})
    if (c < max_position) contexts.push_back(c);
  if (max_position > 1) contexts.push_back(max_position);
  return contexts;
}

void PrintDecodeBytes(const ModelConfig& c, const Model& model, int64_t k) {
  const std::vector<int64_t> contexts = Contexts(c.max_position_embeddings);
  const DecodeBytes stored = CountDecodeBytes(c, model.weights(), k);
  fmt::print("decode step reads: active weights + f32 KV cache of the L cached positions\n");
  std::string header = fmt::format("  {:<14} {:>11}", "format", "weights");
  for (int64_t L : contexts) header += fmt::format(" {:>11}", fmt::format("L={}", L));
  fmt::print("{}\n", header);
  auto row = [&](const std::string& name, const DecodeBytes& bytes) {
    std::string line = fmt::format("  {:<14} {:>11}", name, HumanBytes(bytes.weights));
    for (int64_t L : contexts) line += fmt::format(" {:>11}", HumanBytes(bytes.AtContext(L)));
    fmt::print("{}\n", line);
  };
  row(fmt::format("{} (this)", WeightFormatName(model.weights())), stored);
  for (QuantType type : kAllQuantTypes) row(QuantTypeName(type), CountDecodeBytes(c, type, k));
  fmt::print(
      "  (the other formats as `dsv3 quantize --type` writes them from a BF16 model: embeddings,\n"
      "  router and lm_head at BF16; f32 keeps everything at F32)\n");
  fmt::print("decode weights:   {} bytes per step as stored\n", stored.weights);
}

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
  fmt::print("weights:          {}\n", WeightsDescription(c, model->weights()));
  fmt::print("params total:     {} ({})\n", Human(static_cast<double>(p.total)), p.total);
  fmt::print("params active:    {} ({}) per token\n", Human(static_cast<double>(p.active)),
             p.active);
  if (p.mtp > 0)
    fmt::print("params MTP:       {} ({})\n", Human(static_cast<double>(p.mtp)), p.mtp);
  fmt::print("KV cache:         {} values per token ({} per layer: latent {} + rope key {})\n",
             kv_values, c.kv_cache_values_per_token_layer(), c.kv_lora_rank, c.qk_rope_head_dim);
  fmt::print("KV bytes/token:   {} (f32 cache), {} at 16 bits\n", kv_values * 4, kv_values * 2);
  fmt::print("context:          {} (max_position_embeddings)\n", c.max_position_embeddings);
  PrintDecodeBytes(c, *model, options.experts_per_token);
  return Status::Ok();
}

}  // namespace

Command RegisterInfo(CLI::App& root) {
  auto options = std::make_shared<RunOptions>();
  CLI::App* app =
      root.add_subcommand("info", "config, parameters, KV cache and decode bytes per token");
  AddRunOptions(app, options.get());
  return {app, [options] { return RunInfo(*options); }};
}

}  // namespace dsv3::cli
