// dsv3 generate: prefill a prompt and decode new tokens, streaming them out (text with -p, ids
// with --tokens). A text prompt (TEXT or -p TEXT) is echoed before its continuation, as llama-cli
// does.
#include <cstdio>

#include <fmt/format.h>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "engine/generate.h"
#include "tokenizer/decode_stream.h"
#include "tokenizer/tokenizer_config.h"

namespace dsv3::cli {

namespace {

struct GenerateCliOptions {
  RunOptions run;
  std::string prompt;
  std::string positional_prompt;
  std::string tokens;
  bool no_echo = false;
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  bool ignore_eos = false;
  bool stats = false;
};

Status RunGenerate(GenerateCliOptions o) {
  if (!o.positional_prompt.empty()) {
    if (!o.prompt.empty()) return Status::Error("give the prompt either as -p TEXT or as TEXT");
    o.prompt = o.positional_prompt;
  }
  if (o.prompt.empty() == o.tokens.empty())
    return Status::Error("give exactly one of TEXT, -p TEXT or --tokens IDS");
  DSV3_ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(o.run));
  std::vector<int32_t> prompt;
  std::optional<tokenizer::ModelTokenizer> tok;
  if (!o.prompt.empty()) {
    auto loaded = tokenizer::LoadModelTokenizer(o.run.model_dir);
    if (!loaded.ok()) return loaded.status().WithContext("-p TEXT needs the model's tokenizer");
    tok.emplace(std::move(*loaded));
    DSV3_ASSIGN_OR_RETURN(prompt, tok->EncodeWithSpecial(o.prompt, /*force_bos=*/false));
  } else {
    DSV3_ASSIGN_OR_RETURN(prompt, ParseTokenList(o.tokens));
  }
  if (prompt.empty()) return Status::Error("empty prompt");

  GenerateOptions options;
  options.max_new_tokens = o.max_new_tokens;
  DSV3_ASSIGN_OR_RETURN(options.sampling, ResolveSampling(o.sampling, o.run.model_dir));
  options.forward.experts_per_token = o.run.experts_per_token;
  if (!o.ignore_eos)
    options.stop_tokens.push_back(static_cast<int32_t>(rt.model->config().eos_token_id));
  std::vector<int32_t> output;
  std::optional<tokenizer::DecodeStream> stream;
  if (tok) stream.emplace(tok->tokenizer, /*skip_special=*/true);
  bool first = true;
  if (tok && !o.no_echo) fmt::print("{}", o.prompt);  // the continuation follows the prompt
  auto print = [&](int32_t token) {
    if (stream) {
      fmt::print("{}", stream->Next(token));
    } else {
      fmt::print("{}{}", first ? "" : " ", token);
    }
    std::fflush(stdout);
    first = false;
    return true;
  };
  DSV3_ASSIGN_OR_RETURN(GenerateStats stats,
                        Generate(*rt.model, rt.ctx, prompt, options, print, &output));
  if (stream) fmt::print("{}", stream->Finish());
  fmt::print("\n");
  if (o.stats) PrintGenerateStats(stats);
  return Status::Ok();
}

}  // namespace

Command RegisterGenerate(CLI::App& root) {
  auto o = std::make_shared<GenerateCliOptions>();
  CLI::App* app = root.add_subcommand("generate", "generate text (or ids) after a prompt");
  AddRunOptions(app, &o->run);
  app->add_option("prompt", o->positional_prompt, "prompt text (same as -p)");
  app->add_option("-p,--prompt", o->prompt, "prompt text (uses the model's tokenizer.json)");
  app->add_flag("--no-echo", o->no_echo, "print only the generated text, not the prompt");
  app->add_option("--tokens", o->tokens, "prompt token ids instead of text, e.g. 1,2,3");
  app->add_option("-n,--max-tokens", o->max_new_tokens, "tokens to generate (default 64)");
  AddSamplingOptions(app, &o->sampling);
  app->add_flag("--ignore-eos", o->ignore_eos, "do not stop at the end-of-sequence token");
  app->add_flag("--stats", o->stats, "print prefill and decode speed to stderr");
  return {app, [o] { return RunGenerate(*o); }};
}

}  // namespace dsv3::cli
