#include "app/cli/args.h"

#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "app/cli/command.h"
#include "engine/generation_config.h"

namespace dsv3::cli {

Result<std::vector<int32_t>> ParseTokenList(const std::string& text) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == ',' || text[i] == ' ' || text[i] == '\t' || text[i] == '\n') {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && text[end] != ',' && text[end] != ' ' && text[end] != '\t' &&
           text[end] != '\n')
      ++end;
    const std::string item = text.substr(i, end - i);
    int64_t value = 0;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    if (ec != std::errc() || ptr != item.data() + item.size() || value < 0 || value > INT32_MAX)
      return Err("--tokens: '{}' is not a token id", item);
    ids.push_back(static_cast<int32_t>(value));
    i = end;
  }
  return ids;
}

Result<DType> ParseWeightDType(const std::string& name) {
  if (name == "f32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  if (name == "fp8") return DType::kF8E4M3;
  return Err("--dtype: '{}' is not one of f32, bf16, fp8", name);
}

Result<io::LoadMode> ParseLoadMode(const std::string& name) {
  if (name == "mmap") return io::LoadMode::kMmap;
  if (name == "read") return io::LoadMode::kRead;
  return Err("--load: '{}' is not one of mmap, read", name);
}

void AddRunOptions(CLI::App* app, RunOptions* options, bool exact_default) {
  options->model_dir = DefaultModelDir();
  options->bf16_dot = !exact_default;
  app->add_option("-m,--model", options->model_dir, "model directory (Hugging Face layout)");
  app->add_option("-t,--threads", options->threads, "threads (default: all cores)");
  app->add_option("--load", options->load, "how weights get into memory: read | mmap");
  app->add_option("--experts-per-token", options->experts_per_token,
                  "routed experts per token (default: the config's num_experts_per_tok)");
  app->add_flag("--int8-dot,!--no-int8-dot", options->int8_dot,
                "q8_0/q4_0 weights: quantize activations to int8 per 32-column block and take "
                "integer dot products (VNNI; the default): faster, each activation off by up to "
                "half a step. --no-int8-dot: dequantise the weights and use f32 FMA");
  app->add_flag("--bf16-dot,!--no-bf16-dot", options->bf16_dot,
                "bf16 and fp8 weights: run prefill products (8+ tokens) as bf16 x bf16 dot "
                "products (vdpbf16ps, AVX-512 BF16; fp8 values are exact in bf16, block scales "
                "applied to each block's sums): up to twice as fast, activations rounded to bf16. "
                "On by default but for `dsv3 logits`; --no-bf16-dot: f32 FMA on the exact "
                "weights");
  app->add_flag("--f32-attention", options->f32_attention,
                "keep the prefill attention's score and value products f32 where --int8-dot (the "
                "default for q8_0/q4_0) or --bf16-dot would run them as bf16 x bf16 products");
}

Result<Runtime> LoadRuntime(const RunOptions& options) {
  if (options.threads < 0) return Err("--threads must be >= 0");
  DSV3_ASSIGN_OR_RETURN(io::LoadMode mode, ParseLoadMode(options.load));
  Runtime rt;
  const ops::Isa isa = ops::BestIsa();
  LoadOptions load{mode};
  // The int8 kernels' tiled layout where they read it natively (AVX-512 VNNI, AVX2), q8_0 and q4_0
  // alike (LoadOptions::tile_q8_0_rows).
  load.tile_int8_rows = options.int8_dot && (isa == ops::Isa::kAvx512 || isa == ops::Isa::kAvx2);
  // BF16 / FP8 pair tiles where the bf16-dot path reads them (AVX-512 BF16), and on AVX2, whose
  // exact kernels read them natively.
  load.tile_bf16_rows = (options.bf16_dot && isa == ops::Isa::kAvx512) || isa == ops::Isa::kAvx2;
  load.int8_dot = options.int8_dot;
  rt.pool = std::make_unique<ThreadPool>(options.threads);
  load.pool = rt.pool.get();
  DSV3_ASSIGN_OR_RETURN(rt.model, Model::Load(options.model_dir, load));
  rt.ctx.pool = rt.pool.get();
  rt.ctx.isa = isa;
  rt.ctx.int8_dot = options.int8_dot;
  rt.ctx.bf16_dot = options.bf16_dot;
  rt.ctx.f32_attention = options.f32_attention;
  return rt;
}

void AddSamplingOptions(CLI::App* app, SamplingOptions* o) {
  o->app = app;
  app->add_option("--temp", o->params.temperature,
                  "temperature (0 = greedy; default: the model's generation_config.json, else 0)");
  app->add_option("--top-k", o->params.top_k, "keep the k most likely tokens (0 = off)");
  app->add_option("--top-p", o->params.top_p, "nucleus sampling mass (1 = off)");
  app->add_option("--min-p", o->params.min_p, "drop tokens below min-p x the top probability");
  app->add_option("--repeat-penalty", o->params.repetition_penalty,
                  "penalty for tokens already in the sequence (1 = off)");
  app->add_option("--seed", o->params.seed, "random seed (same seed, same output)");
}

Result<SamplingParams> ResolveSampling(const SamplingOptions& o, const std::string& model_dir) {
  DSV3_ASSIGN_OR_RETURN(SamplingParams p, LoadGenerationConfig(model_dir, SamplingParams{}));
  auto given = [&](const char* flag) { return o.app != nullptr && o.app->count(flag) > 0; };
  if (given("--temp")) p.temperature = o.params.temperature;
  if (given("--top-k")) p.top_k = o.params.top_k;
  if (given("--top-p")) p.top_p = o.params.top_p;
  if (given("--min-p")) p.min_p = o.params.min_p;
  if (given("--repeat-penalty")) p.repetition_penalty = o.params.repetition_penalty;
  if (given("--seed")) p.seed = o.params.seed;
  return p;
}

void PrintGenerateStats(const GenerateStats& s) {
  fmt::print(stderr,
             "prompt {} tokens ({} reused) in {:.3f} s ({:.1f} tok/s); generated {} in {:.3f} s "
             "({:.1f} tok/s)\n",
             s.prompt_tokens, s.reused_tokens, s.prefill_seconds,
             static_cast<double>(s.prompt_tokens) / std::max(s.prefill_seconds, 1e-9),
             s.generated_tokens, s.decode_seconds,
             static_cast<double>(s.generated_tokens) / std::max(s.decode_seconds, 1e-9));
}

}  // namespace dsv3::cli
