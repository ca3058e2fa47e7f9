// dsv3 bench: prefill (ppN) and decode (tgN) speed, like llama-bench, then the machine's limits
// measured in the same run (ops/roofline.h) and how close each test came to its limit:
//   tgN: read bandwidth / bytes one decode step reads (active weights + the KV cache at the mean
//        context of the test, D + (N + 1) / 2 positions at depth D)
//   ppN: peak dot rate of the format / FLOPs per prompt token (2 x the linear layers'
//        multiply-adds, plus the lm_head's once per prompt: bench computes only the last logits)
// The limits use each probe's best repetition, so a noisy probe cannot flatter the percentages;
// with a decode test the bandwidth probe also runs before the tests, and its best of both runs
// counts (a shared host's bandwidth moves between the two).
// -d D (llama-bench's --n-depth): each test starts with D tokens already in the KV cache
// ("tg128 @ d4096"), prefilled once per test, untimed; every repetition cuts the cache back to
// them. That measures long-context decode, where reading the cache adds to the weights.
// Each row also names the dot-product path that ran ("dot": int8 with --int8-dot on q8_0/q4_0
// weights, int8-vnni for AVX2's kernels with AVX-VNNI, f32 otherwise), since the same format can
// run on either.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "model/param_count.h"
#include "model/phase_profile.h"
#include "ops/roofline.h"

namespace dsv3::cli {

namespace {

struct BenchOptions {
  RunOptions run;
  int64_t prompt_tokens = 512;
  int64_t gen_tokens = 128;
  int64_t depth = 0;  // tokens in the cache before each test
  int repetitions = 3;
  bool json = false;
  bool no_limits = false;
  bool profile = false;
  int64_t bandwidth_mib = 1024;
};

struct Measurement {
  std::string test;
  bool decode = false;
  int64_t tokens = 0;
  int64_t depth = 0;
  std::vector<double> tokens_per_second;
  double mean = 0, sd = 0;
  std::optional<PhaseProfile> phases;  // --profile: the timed repetitions' phases
};

// A test's roofline: the limit it is against and what that allows.
struct Roofline {
  const ops::LimitMeasurement* limit = nullptr;
  double cost_per_token = 0;  // bytes (decode) or FLOPs (prefill)
  double tokens_per_second = 0;
  double percent = 0;
};

void Summarise(Measurement* m) {
  const auto& v = m->tokens_per_second;
  double sum = 0, var = 0;
  for (double x : v) sum += x;
  m->mean = sum / static_cast<double>(v.size());
  for (double x : v) var += (x - m->mean) * (x - m->mean);
  m->sd = v.size() > 1 ? std::sqrt(var / static_cast<double>(v.size() - 1)) : 0.0;
}

// The dot product the kernels of a format can at best run on: BF16 dot for bf16/fp8 weights and
// the int8 VNNI dot for q8_0/q4_0 (where the CPU has them), FP32 FMA otherwise.
const ops::LimitMeasurement& PrefillLimit(const ops::MachineLimits& limits,
                                          std::string_view format) {
  if ((format == "bf16" || format == "f16" || format == "fp8") && limits.bf16_dot.available)
    return limits.bf16_dot;
  if ((format == "q8_0" || format == "q4_0") && limits.int8_dot.available) return limits.int8_dot;
  return limits.fp32_fma;
}

// Cached positions a decode test's steps read on average: the depth, then (N + 1) / 2.
double MeanContext(const Measurement& m) {
  return static_cast<double>(m.depth) + 0.5 * static_cast<double>(m.tokens + 1);
}

Roofline ComputeRoofline(const Measurement& m, const Model& model, int64_t k,
                         const ops::MachineLimits& limits) {
  Roofline r;
  if (m.decode) {
    const DecodeBytes bytes = CountDecodeBytes(model.config(), model.weights(), k);
    const double mean_context = MeanContext(m);
    r.cost_per_token = static_cast<double>(bytes.weights) +
                       mean_context * static_cast<double>(bytes.kv_per_position);
    r.limit = &limits.read_bandwidth;
  } else {
    const TokenMacs macs = CountTokenMacs(model.config(), k);
    r.cost_per_token = 2.0 * (static_cast<double>(macs.layers) +
                              static_cast<double>(macs.lm_head) / static_cast<double>(m.tokens));
    r.limit = &PrefillLimit(limits, WeightFormatName(model.weights()));
  }
  r.tokens_per_second = r.limit->best * 1e9 / r.cost_per_token;
  r.percent = 100.0 * m.mean / r.tokens_per_second;
  return r;
}

// "190.3 MB/token", "1.10 GFLOP/token".
std::string HumanCost(const Roofline& r, bool decode) {
  const char* unit = decode ? "B" : "FLOP";
  const double v = r.cost_per_token;
  if (v >= 1e9) return fmt::format("{:.2f} G{}/token", v / 1e9, unit);
  if (v >= 1e6) return fmt::format("{:.1f} M{}/token", v / 1e6, unit);
  return fmt::format("{:.1f} K{}/token", v / 1e3, unit);
}

Result<Measurement> RunTest(const Runtime& rt, bool decode, int64_t tokens_n, int64_t depth,
                            int repetitions, ForwardOptions forward, bool profile,
                            std::mt19937_64& rng) {
  const Model& model = *rt.model;
  const int64_t V = model.config().vocab_size;
  std::vector<int32_t> tokens(static_cast<size_t>(depth + tokens_n));
  for (auto& id : tokens) id = static_cast<int32_t>(rng() % static_cast<uint64_t>(V));
  std::vector<float> logits(static_cast<size_t>(V));
  Measurement m{fmt::format("{}{}", decode ? "tg" : "pp", tokens_n),
                decode,
                tokens_n,
                depth,
                {},
                0,
                0,
                std::nullopt};
  if (depth > 0) m.test += fmt::format(" @ d{}", depth);
  using Clock = std::chrono::steady_clock;
  // One state per test, its cache emptied before each repetition (as llama-bench reuses its
  // context): the timings measure the forward passes, not a fresh state's first-touch page
  // faults (~12 % of a bench-medium pp512 when each repetition made its own).
  InferenceState state(model, depth + tokens_n);
  const std::span<const int32_t> context = std::span<const int32_t>(tokens).first(depth);
  const std::span<const int32_t> test = std::span<const int32_t>(tokens).subspan(depth);
  if (depth > 0) {
    // The depth's tokens in the cache, untimed, unprofiled, once: each repetition starts there.
    // In chunks, so the fill's scratch stays that of a kFillChunk-token prefill at any depth.
    constexpr int64_t kFillChunk = 512;
    ForwardOptions fill = forward;
    fill.profile = nullptr;
    for (int64_t t = 0; t < depth; t += kFillChunk) {
      DSV3_RETURN_IF_ERROR(Forward(model, rt.ctx, state,
                                   context.subspan(t, std::min(kFillChunk, depth - t)), fill,
                                   logits.data()));
    }
    if (state.length() != depth)
      return Status::Error(
          fmt::format("bench: the cache holds {} tokens after filling {}", state.length(), depth));
  }
  PhaseProfile phases;
  if (profile) forward.profile = &phases;
  for (int r = 0; r <= repetitions; ++r) {  // r == 0 is a warm-up run
    if (r == 1) phases.Clear();
    state.cache().set_length(depth);
    state.mtp_cache().Clear();
    const auto start = Clock::now();
    if (decode) {
      for (int64_t i = 0; i < tokens_n; ++i) {
        DSV3_RETURN_IF_ERROR(
            Forward(model, rt.ctx, state, test.subspan(i, 1), forward, logits.data()));
      }
    } else {
      DSV3_RETURN_IF_ERROR(Forward(model, rt.ctx, state, test, forward, logits.data()));
    }
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    if (r > 0) m.tokens_per_second.push_back(static_cast<double>(tokens_n) / s);
  }
  Summarise(&m);
  if (profile) m.phases = phases;
  return m;
}

// --profile: each phase's share of the test's forward passes, in ms per token, and its rate: for
// a decode test the bytes the phase reads per token (CountDecodeBytesByPhase, the cache at the
// test's mean context) over its time, for a prefill test its operations (2 per multiply-add,
// CountPrefillMacsByPhase) over its time; with the test's limit (nullptr without), that rate as a
// percentage of it.
void PrintPhases(const Measurement& m, const Model& model, int64_t k,
                 const ops::LimitMeasurement* limit, bool json) {
  const PhaseProfile& p = *m.phases;
  const double per_token = p.tokens > 0 ? 1e3 / static_cast<double>(p.tokens) : 0.0;
  const PhaseBytes bytes =
      m.decode ? CountDecodeBytesByPhase(model.config(), model.weights(), k) : PhaseBytes{};
  const PhaseMacs macs =
      m.decode ? PhaseMacs{} : CountPrefillMacsByPhase(model.config(), m.tokens, m.depth, k);
  const double mean_context = MeanContext(m);
  const char* unit = m.decode ? "GB/s" : "G op/s";
  if (!json) {
    fmt::print("\nphases of {} (ms per token over the timed repetitions):\n\n", m.test);
    const std::string limit_column = limit ? fmt::format(" % of {} |", limit->name) : "";
    fmt::print("| phase | ms/token | % of forward | {} | {} |{}\n|---|---:|---:|---:|---:|{}\n",
               m.decode ? "MB/token" : "M op/token", unit, limit_column, limit ? "---:|" : "");
  }
  // amount: bytes or operations per token
  const auto row = [&](std::string_view name, double ms, double percent, double amount) {
    const double rate = ms > 0 ? amount / ms * 1e-6 : 0.0;  // GB/s or G op/s
    const double of_limit = limit && limit->best > 0 ? 100.0 * rate / limit->best : 0.0;
    if (json) {
      nlohmann::json j = {{"test", m.test},
                          {"phase", std::string(name)},
                          {"ms_per_token", ms},
                          {"percent", percent}};
      j[m.decode ? "bytes_per_token" : "ops_per_token"] = amount;
      j[m.decode ? "gb_per_second" : "gops_per_second"] = rate;
      if (limit) j["percent_of_limit"] = of_limit;
      fmt::print("{}\n", j.dump());
      return;
    }
    fmt::print("| {} | {:.3f} | {:.1f} % | {:.2f} | {:.1f} |", name, ms, percent, amount * 1e-6,
               rate);
    if (limit) fmt::print(" {:.1f} % |", of_limit);
    fmt::print("\n");
  };
  double total = 0;
  for (int i = 0; i < kNumPhases; ++i) {
    const double ms = p.seconds[i] * per_token;
    const double percent = p.total_seconds > 0 ? 100.0 * p.seconds[i] / p.total_seconds : 0.0;
    const double amount =
        m.decode ? static_cast<double>(bytes.weights[i]) +
                       mean_context * static_cast<double>(bytes.per_position[i])
                 : 2.0 * static_cast<double>(macs.macs[i]) / static_cast<double>(m.tokens);
    total += amount;
    row(PhaseName(static_cast<Phase>(i)), ms, percent, amount);
  }
  if (!json) row("total", p.total_seconds * per_token, 100.0, total);
}

nlohmann::json ProbeJson(const ops::MachineLimits& limits, const ops::LimitMeasurement& p) {
  nlohmann::json j = {{"probe", p.name},
                      {"method", p.method},
                      {"unit", p.unit},
                      {"isa", std::string(ops::IsaName(limits.isa))},
                      {"threads", limits.threads},
                      {"available", p.available}};
  if (p.available) {
    j["best"] = p.best;
    j["median"] = p.median;
    j["samples"] = p.samples;
  } else {
    j["best"] = nullptr;
    j["median"] = nullptr;
  }
  return j;
}

std::string Rate(const ops::LimitMeasurement& p, double value) {
  return p.available ? fmt::format("{:.1f}", value) : "n/a";
}

// The read-bandwidth probe run before the tests and again after them, as one measurement: on a
// shared host the memory bandwidth left to this process moves within minutes, and a probe taken
// at one moment flattered or belittled a decode test run at another (one run showed "104 %").
// The best of both sets is the limit; the median is over all samples.
ops::LimitMeasurement MergeProbeRuns(const ops::LimitMeasurement& before,
                                     const ops::LimitMeasurement& after) {
  ops::LimitMeasurement m = after;
  m.method += ", before and after the tests";
  m.samples.insert(m.samples.begin(), before.samples.begin(), before.samples.end());
  std::vector<double> sorted = m.samples;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  m.best = sorted.back();
  m.median = n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  return m;
}

Status RunBench(const BenchOptions& o) {
  if (o.prompt_tokens < 0 || o.gen_tokens < 0 || o.depth < 0 || o.repetitions < 1)
    return Status::Error("-p, -n and -d must be >= 0 and -r >= 1");
  if (o.bandwidth_mib < 1) return Status::Error("--bw-mib must be >= 1");
  DSV3_ASSIGN_OR_RETURN(Runtime rt, LoadRuntime(o.run));
  const Model& model = *rt.model;
  // As dsv3 generate: a sequence stays within the positions the model was made for (which also
  // bounds the KV cache bench allocates).
  const int64_t max_positions = model.config().max_position_embeddings;
  if (o.depth > max_positions ||
      std::max(o.prompt_tokens, o.gen_tokens) > max_positions - o.depth) {
    return Status::Error(
        fmt::format("-d ({}) + the longest test (-p {}, -n {}) exceed max_position_embeddings {}",
                    o.depth, o.prompt_tokens, o.gen_tokens, max_positions));
  }
  std::mt19937_64 rng(1234);
  ForwardOptions forward;
  forward.experts_per_token = o.run.experts_per_token;
  forward.last_logits_only = true;
  ops::BandwidthOptions bandwidth;
  bandwidth.buffer_bytes = o.bandwidth_mib << 20;
  std::optional<ops::LimitMeasurement> bandwidth_before;
  if (!o.no_limits && o.gen_tokens > 0) {
    auto measured = ops::MeasureReadBandwidth(rt.pool.get(), rt.ctx.isa, bandwidth);
    if (!measured.ok()) return measured.status().WithContext("machine limits");
    bandwidth_before = std::move(*measured);
  }
  std::vector<Measurement> results;
  if (o.prompt_tokens > 0) {
    DSV3_ASSIGN_OR_RETURN(Measurement m, RunTest(rt, false, o.prompt_tokens, o.depth, o.repetitions,
                                                 forward, o.profile, rng));
    results.push_back(std::move(m));
  }
  if (o.gen_tokens > 0) {
    DSV3_ASSIGN_OR_RETURN(Measurement m, RunTest(rt, true, o.gen_tokens, o.depth, o.repetitions,
                                                 forward, o.profile, rng));
    results.push_back(std::move(m));
  }

  std::optional<ops::MachineLimits> limits;
  if (!o.no_limits) {
    auto measured = ops::MeasureMachineLimits(rt.pool.get(), rt.ctx.isa, bandwidth, {});
    if (!measured.ok()) return measured.status().WithContext("machine limits");
    limits = std::move(*measured);
    if (bandwidth_before)
      limits->read_bandwidth = MergeProbeRuns(*bandwidth_before, limits->read_bandwidth);
  }

  const std::string format(WeightFormatName(model.weights()));
  const std::string isa(ops::IsaName(rt.ctx.isa));
  // The dot-product path the format's prefill products ran on: "int8" (activations quantized per
  // block, integer dots; q8_0/q4_0 with --int8-dot), "bf16" (bf16/fp8 weights with --bf16-dot on
  // AVX-512 BF16; decode stays f32) or "f32" (weights converted to f32, f32 FMA).
  const bool bf16_dot =
      rt.ctx.bf16_dot && (format == "bf16" || format == "fp8") && rt.ctx.isa == ops::Isa::kAvx512;
  // "int8-vnni": AVX2's int8 kernels with AVX-VNNI (ops/isa.h).
  const bool int8 = rt.ctx.int8_dot && (format == "q8_0" || format == "q4_0");
  const bool vnni = int8 && rt.ctx.isa == ops::Isa::kAvx2 && ops::AvxVnniEnabled();
  const std::string dot = vnni ? "int8-vnni" : int8 ? "int8" : bf16_dot ? "bf16" : "f32";
  const int threads = rt.pool->num_threads();
  if (!o.json) {
    fmt::print("| model | format | isa | dot | threads | test | t/s |{}\n",
               limits ? " limit | limit t/s | % of limit |" : "");
    fmt::print("|---|---|---|---|---:|---|---:|{}\n", limits ? "---|---:|---:|" : "");
  }
  for (const Measurement& m : results) {
    std::optional<Roofline> roof;
    if (limits) roof = ComputeRoofline(m, model, o.run.experts_per_token, *limits);
    if (o.json) {
      nlohmann::json j = {{"model", o.run.model_dir},
                          {"test", m.test},
                          {"depth", m.depth},
                          {"threads", threads},
                          {"format", format},
                          {"isa", isa},
                          {"dot", dot},
                          {"tokens_per_second", m.mean},
                          {"sd", m.sd},
                          {"samples", m.tokens_per_second}};
      if (roof) {
        j["limit"] = roof->limit->name;
        j["limit_value"] = roof->limit->best;
        j["limit_unit"] = roof->limit->unit;
        j[m.decode ? "bytes_per_token" : "flops_per_token"] = roof->cost_per_token;
        j["limit_tokens_per_second"] = roof->tokens_per_second;
        j["percent_of_limit"] = roof->percent;
      }
      fmt::print("{}\n", j.dump());
      continue;
    }
    fmt::print("| {} | {} | {} | {} | {} | {} | {:.2f} ± {:.2f} |", o.run.model_dir, format, isa,
               dot, threads, m.test, m.mean, m.sd);
    if (roof) {
      fmt::print(" {} {:.1f} {} ÷ {} | {:.1f} | {:.1f} % |", roof->limit->name, roof->limit->best,
                 roof->limit->unit, HumanCost(*roof, m.decode), roof->tokens_per_second,
                 roof->percent);
    }
    fmt::print("\n");
  }
  for (const Measurement& m : results) {
    if (!m.phases) continue;
    const ops::LimitMeasurement* limit =
        limits ? ComputeRoofline(m, model, o.run.experts_per_token, *limits).limit : nullptr;
    PrintPhases(m, model, o.run.experts_per_token, limit, o.json);
  }
  if (!limits) return Status::Ok();
  const ops::LimitMeasurement* probes[] = {&limits->read_bandwidth, &limits->fp32_fma,
                                           &limits->int8_dot, &limits->bf16_dot};
  if (o.json) {
    for (const auto* p : probes) fmt::print("{}\n", ProbeJson(*limits, *p).dump());
    return Status::Ok();
  }
  fmt::print("\nmachine limits ({}, {} threads; the percentages use the best repetition):\n\n", isa,
             threads);
  fmt::print("| probe | method | best | median | unit |\n|---|---|---:|---:|---|\n");
  for (const auto* p : probes) {
    fmt::print("| {} | {} | {} | {} | {} |\n", p->name, p->method, Rate(*p, p->best),
               Rate(*p, p->median), p->unit);
  }
  return Status::Ok();
}

}  // namespace

Command RegisterBench(CLI::App& root) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* app = root.add_subcommand(
      "bench", "prefill and decode speed (tok/s) and the percentage of the machine's limits");
  AddRunOptions(app, &o->run);
  app->add_option("-p,--n-prompt", o->prompt_tokens, "prompt tokens for the prefill test (512)");
  app->add_option("-n,--n-gen", o->gen_tokens, "tokens for the decode test (128)");
  app->add_option("-d,--n-depth", o->depth,
                  "tokens already in the KV cache when each test starts (0): long-context speed, "
                  "the test named e.g. \"tg128 @ d4096\"");
  app->add_option("-r,--repetitions", o->repetitions, "repetitions (3)");
  app->add_flag("--json", o->json,
                "one JSON object per line: tests, then with --profile their phases (lines with a "
                "\"phase\" key), then machine-limit probes");
  app->add_flag("--no-limits", o->no_limits, "skip the machine-limit micro-benchmarks");
  app->add_flag("--profile", o->profile,
                "also print where each test's time goes: attention projections, attention, "
                "router, experts, dense MLP, lm_head (ms per token and % of the forward passes), "
                "and each phase's rate (decode: GB/s read; prefill: G op/s) and % of the limit");
  app->add_option("--bw-mib", o->bandwidth_mib,
                  "buffer for the read-bandwidth probe in MiB (1024; >= 512 to measure DRAM)");
  return {app, [o] { return RunBench(*o); }};
}

}  // namespace dsv3::cli
