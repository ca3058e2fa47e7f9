// dsv3 perplexity: the model's perplexity on a text file, tokenized with the model's tokenizer and
// evaluated in windows of --ctx tokens (which tokens count: engine/perplexity.h).
#include <unistd.h>

#include <chrono>
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "engine/perplexity.h"
#include "io/files.h"
#include "tokenizer/tokenizer_config.h"

namespace dsv3::cli {

namespace {

struct PerplexityCliOptions {
  RunOptions run;
  std::string file;
  int64_t context = 512;
  int64_t stride = 0;
  int64_t max_tokens = 0;
  int64_t batch = 256;
  bool json = false;
};

Status RunPerplexity(const PerplexityCliOptions& o) {
  if (o.file.empty()) return Status::Error("-f FILE is required");
  if (o.context < 2) return Err("--ctx must be >= 2, got {}", o.context);
  if (o.stride < 0 || o.stride > o.context)
    return Err("--stride must be in [1, --ctx = {}] (0: = --ctx), got {}", o.context, o.stride);
  if (o.max_tokens < 0) return Err("--max-tokens must be >= 0 (0: all), got {}", o.max_tokens);
  if (o.batch < 1) return Err("--batch must be >= 1, got {}", o.batch);
  DSV3_ASSIGN_OR_RETURN(std::string text, io::ReadFile(o.file));
  if (text.empty()) return Err("{}: the file is empty", o.file);
  auto tok = tokenizer::LoadModelTokenizer(o.run.model_dir);
  if (!tok.ok()) return tok.status().WithContext("perplexity needs the model's tokenizer");
  auto encoded = tok->EncodeWithSpecial(text, /*force_bos=*/false);
  if (!encoded.ok()) return encoded.status().WithContext(o.file);
  std::vector<int32_t> tokens = std::move(*encoded);
  if (o.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > o.max_tokens)
    tokens.resize(static_cast<size_t>(o.max_tokens));
  if (tokens.size() < 2)
    return Err("{}: {} token(s) after tokenizing; perplexity needs at least 2", o.file,
               tokens.size());

  DSV3_ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(o.run));
  const int64_t V = rt.model->config().vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] >= V)
      return Err(
          "{}: token {} (id {}) is outside the model's vocab_size {}: the tokenizer does not "
          "belong to this model",
          o.file, i, tokens[i], V);
  }

  PerplexityOptions options;
  options.context = o.context;
  options.stride = o.stride;
  options.batch = o.batch;
  options.forward.experts_per_token = o.run.experts_per_token;
  const bool tty = isatty(2) != 0;
  options.progress = [&](const PerplexityProgress& p) {
    fmt::print(stderr, "{}[{}/{}] {} tokens scored, perplexity {:.4f}{}", tty ? "\r" : "",
               p.windows_done, p.windows_total, p.tokens_scored, p.perplexity, tty ? "" : "\n");
    if (tty && p.windows_done == p.windows_total) fmt::print(stderr, "\n");
    std::fflush(stderr);
  };
  const auto start = std::chrono::steady_clock::now();
  DSV3_ASSIGN_OR_RETURN(PerplexityResult r, ComputePerplexity(*rt.model, rt.ctx, tokens, options));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (o.json) {
    nlohmann::json j = {{"model", o.run.model_dir},
                        {"file", o.file},
                        {"tokens", tokens.size()},
                        {"ctx", r.context},
                        {"stride", r.stride},
                        {"windows", r.windows},
                        {"tokens_scored", r.tokens_scored},
                        {"tokens_evaluated", r.tokens_evaluated},
                        {"mean_nll", r.mean_nll},
                        {"nll_stderr", r.nll_stderr},
                        {"perplexity", r.perplexity},
                        {"perplexity_stderr", r.perplexity_stderr},
                        {"seconds", seconds}};
    fmt::print("{}\n", j.dump());
    return Status::Ok();
  }
  fmt::print("perplexity: {:.4f} ± {:.4f}\n", r.perplexity, r.perplexity_stderr);
  fmt::print("mean NLL:   {:.6f} ± {:.6f} nats/token\n", r.mean_nll, r.nll_stderr);
  fmt::print(
      "scored:     {} of {} tokens in {} windows of {} (stride {}), {:.1f} s ({:.1f} tok/s)\n",
      r.tokens_scored, tokens.size(), r.windows, r.context, r.stride, seconds,
      static_cast<double>(r.tokens_evaluated) / std::max(seconds, 1e-9));
  return Status::Ok();
}

}  // namespace

Command RegisterPerplexity(CLI::App& root) {
  auto o = std::make_shared<PerplexityCliOptions>();
  CLI::App* app = root.add_subcommand("perplexity", "perplexity of the model on a text file");
  AddRunOptions(app, &o->run);
  app->add_option("-f,--file", o->file, "text file (UTF-8), tokenized with the model's tokenizer");
  app->add_option("--ctx", o->context, "tokens per window (512)");
  app->add_option("--stride", o->stride,
                  "tokens between window starts (default --ctx: non-overlapping windows)");
  app->add_option("--max-tokens", o->max_tokens, "use only the first N tokens of the file");
  app->add_option("--batch", o->batch, "tokens per forward call inside a window (256)");
  app->add_flag("--json", o->json, "the result as one JSON object");
  return {app, [o] { return RunPerplexity(*o); }};
}

}  // namespace dsv3::cli
