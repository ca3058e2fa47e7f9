// dsv3 bench: prefill (ppN) and decode (tgN) speed, like llama-bench.
#include <chrono>
#include <cmath>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/cli/args.h"
#include "app/cli/command.h"

namespace dsv3::cli {

namespace {

struct BenchOptions {
  RunOptions run;
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 128;
  int repetitions = 3;
  bool json = false;
};

struct Measurement {
  std::string test;
  std::vector<double> tokens_per_second;
};

std::string WeightFormat(const Model& model) {
  // The dtype of the largest matrices (the ones a token reads most of).
  return std::string(DTypeName(model.weights().layers.empty()
                                   ? model.weights().lm_head.dtype
                                   : model.weights().layers.back().attn.o_proj.dtype));
}

Status RunBench(const BenchOptions& o) {
  if (o.prompt_tokens < 0 || o.gen_tokens < 0 || o.repetitions < 1)
    return Status::Error("-p and -n must be >= 0 and -r >= 1");
  DSV3_ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(o.run));
  const Model& model = *rt.model;
  const int64_t V = model.config().vocab_size;
  std::mt19937_64 rng(1234);
  auto random_tokens = [&](int64_t n) {
    std::vector<int32_t> t(static_cast<size_t>(n));
    for (auto& id : t) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(V));
    return t;
  };
  ForwardOptions forward;
  forward.experts_per_token = o.run.experts_per_token;
  forward.last_logits_only = true;
  std::vector<float> logits(static_cast<size_t>(V));
  std::vector<Measurement> results;
  using Clock = std::chrono::steady_clock;

  if (o.prompt_tokens > 0) {
    Measurement m{fmt::format("pp{}", o.prompt_tokens), {}};
    const auto tokens = random_tokens(o.prompt_tokens);
    for (int r = 0; r <= o.repetitions; ++r) {  // r == 0 is a warm-up run
      InferenceState state(model, o.prompt_tokens);
      const auto start = Clock::now();
      DSV3_RETURN_IF_ERROR(Forward(model, rt.ctx, state, tokens, forward, logits.data()));
      const double s = std::chrono::duration<double>(Clock::now() - start).count();
      if (r > 0) m.tokens_per_second.push_back(static_cast<double>(o.prompt_tokens) / s);
    }
    results.push_back(m);
  }
  if (o.gen_tokens > 0) {
    Measurement m{fmt::format("tg{}", o.gen_tokens), {}};
    const auto tokens = random_tokens(o.gen_tokens);
    for (int r = 0; r <= o.repetitions; ++r) {
      InferenceState state(model, o.gen_tokens);
      const auto start = Clock::now();
      for (int64_t i = 0; i < o.gen_tokens; ++i) {
        DSV3_RETURN_IF_ERROR(Forward(model, rt.ctx, state,
                                     std::span<const int32_t>(tokens).subspan(i, 1), forward,
                                     logits.data()));
      }
      const double s = std::chrono::duration<double>(Clock::now() - start).count();
      if (r > 0) m.tokens_per_second.push_back(static_cast<double>(o.gen_tokens) / s);
    }
    results.push_back(m);
  }

  const std::string format = WeightFormat(model);
  if (!o.json) {
    fmt::print("| model | format | isa | threads | test | t/s |\n");
    fmt::print("|---|---|---|---:|---|---:|\n");
  }
  for (const Measurement& m : results) {
    double mean = 0, var = 0;
    for (double v : m.tokens_per_second) mean += v;
    mean /= static_cast<double>(m.tokens_per_second.size());
    for (double v : m.tokens_per_second) var += (v - mean) * (v - mean);
    const double sd = m.tokens_per_second.size() > 1
                          ? std::sqrt(var / static_cast<double>(m.tokens_per_second.size() - 1))
                          : 0.0;
    if (o.json) {
      nlohmann::json j = {{"model", o.run.model_dir},
                          {"test", m.test},
                          {"threads", rt.pool->num_threads()},
                          {"format", format},
                          {"isa", std::string(ops::IsaName(rt.ctx.isa))},
                          {"tokens_per_second", mean},
                          {"sd", sd},
                          {"samples", m.tokens_per_second}};
      fmt::print("{}\n", j.dump());
    } else {
      fmt::print("| {} | {} | {} | {} | {} | {:.2f} ± {:.2f} |\n", o.run.model_dir, format,
                 ops::IsaName(rt.ctx.isa), rt.pool->num_threads(), m.test, mean, sd);
    }
  }
  return Status::Ok();
}

}  // namespace

Command RegisterBench(CLI::App& root) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* app = root.add_subcommand("bench", "prefill and decode speed (tok/s)");
  AddRunOptions(app, &o->run);
  app->add_option("-p,--n-prompt", o->prompt_tokens, "prompt tokens for the prefill test (512)");
  app->add_option("-n,--n-gen", o->gen_tokens, "tokens for the decode test (128)");
  app->add_option("-r,--repetitions", o->repetitions, "repetitions (3)");
  app->add_flag("--json", o->json, "one JSON object per line");
  return {app, [o] { return RunBench(*o); }};
}

}  // namespace dsv3::cli
