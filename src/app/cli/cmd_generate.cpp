// dsv3 generate: prefill a prompt and decode new tokens, streaming them out.
#include <cstdio>

#include <fmt/format.h>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "engine/generate.h"

namespace dsv3::cli {

namespace {

struct GenerateCliOptions {
  RunOptions run;
  std::string prompt;
  std::string tokens;
  int64_t max_new_tokens = 64;
  SamplingParams sampling;
  bool ignore_eos = false;
  bool stats = false;
};

Status RunGenerate(const GenerateCliOptions& o) {
  if (!o.prompt.empty())
    return Status::Error("-p TEXT needs the tokenizer, which is not built in yet; use --tokens");
  DSV3_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, ParseTokenList(o.tokens));
  if (prompt.empty()) return Status::Error("empty prompt: give --tokens IDS");
  DSV3_ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(o.run));
  GenerateOptions options;
  options.max_new_tokens = o.max_new_tokens;
  options.sampling = o.sampling;
  options.forward.experts_per_token = o.run.experts_per_token;
  if (!o.ignore_eos)
    options.stop_tokens.push_back(static_cast<int32_t>(rt.model->config().eos_token_id));
  std::vector<int32_t> output;
  bool first = true;
  auto print = [&](int32_t token) {
    fmt::print("{}{}", first ? "" : " ", token);
    std::fflush(stdout);
    first = false;
    return true;
  };
  DSV3_ASSIGN_OR_RETURN(GenerateStats stats,
                        Generate(*rt.model, rt.ctx, prompt, options, print, &output));
  fmt::print("\n");
  if (o.stats) {
    fmt::print(
        stderr,
        "prompt {} tokens in {:.3f} s ({:.1f} tok/s); generated {} in {:.3f} s ({:.1f} tok/s)\n",
        stats.prompt_tokens, stats.prefill_seconds,
        stats.prompt_tokens / std::max(stats.prefill_seconds, 1e-9), stats.generated_tokens,
        stats.decode_seconds, stats.generated_tokens / std::max(stats.decode_seconds, 1e-9));
  }
  return Status::Ok();
}

}  // namespace

Command RegisterGenerate(CLI::App& root) {
  auto o = std::make_shared<GenerateCliOptions>();
  CLI::App* app = root.add_subcommand("generate", "generate tokens after a prompt");
  AddRunOptions(app, &o->run);
  app->add_option("-p,--prompt", o->prompt, "prompt text");
  app->add_option("--tokens", o->tokens, "prompt token ids, e.g. 1,2,3");
  app->add_option("-n,--max-tokens", o->max_new_tokens, "tokens to generate (default 64)");
  app->add_option("--temp", o->sampling.temperature, "temperature (0 = greedy, the default)");
  app->add_option("--top-k", o->sampling.top_k, "keep the k most likely tokens (0 = off)");
  app->add_option("--top-p", o->sampling.top_p, "nucleus sampling mass (1 = off)");
  app->add_option("--min-p", o->sampling.min_p, "drop tokens below min-p x the top probability");
  app->add_option("--repeat-penalty", o->sampling.repetition_penalty,
                  "penalty for tokens already in the sequence (1 = off)");
  app->add_option("--seed", o->sampling.seed, "random seed (same seed, same output)");
  app->add_flag("--ignore-eos", o->ignore_eos, "do not stop at the end-of-sequence token");
  app->add_flag("--stats", o->stats, "print prefill and decode speed to stderr");
  return {app, [o] { return RunGenerate(*o); }};
}

}  // namespace dsv3::cli
