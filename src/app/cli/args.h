// Option parsing shared by the subcommands.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "backend/thread_pool.h"
#include "engine/generate.h"
#include "model/transformer.h"
#include "ops/matmul.h"
#include "util/dtype.h"
#include "util/status.h"

namespace dsv3::cli {

// "1,2,3" (commas and/or spaces) -> ids. Errors name the offending entry.
Result<std::vector<int32_t>> ParseTokenList(const std::string& text);

// f32 | bf16 | fp8
Result<DType> ParseWeightDType(const std::string& name);

// mmap | read
Result<io::LoadMode> ParseLoadMode(const std::string& name);

// The options every model-running command has.
struct RunOptions {
  std::string model_dir;
  int threads = 0;  // 0: all cores
  std::string load = "read";
  int64_t experts_per_token = 0;
  // q8_0 / q4_0 weights: activations quantized to int8 per 32-column block, integer block dots
  // (ops::KernelContext::int8_dot). On by default: perplexity moves by < 0.01 % (far inside the
  // weights' own quantisation error) and prefill runs 2x faster. --no-int8-dot for the f32 path.
  bool int8_dot = true;
  // BF16 and FP8 weights, prefill products (8+ tokens) on AVX-512 BF16: activations rounded to
  // bf16 and vdpbf16ps (ops::KernelContext::bf16_dot), twice the f32 FMA rate. On by default (as
  // the official inference runs a BF16 model's activations in bf16, and its FP8 products on FP8
  // activations): held-out perplexity of dsv3-tiny moves by -0.02 %, prefill runs 1.6-1.8x faster.
  // Off by default for `dsv3 logits` only (AddRunOptions' exact_default), whose output is checked
  // against the f32 reference to FP32 rounding: each activation moves by up to 2^-9 relative.
  bool bf16_dot = true;
  // Under int8 or bf16 activations the prefill attention's scores and values run as bf16 x bf16
  // products (ops::KernelContext::f32_attention); --f32-attention keeps them f32.
  bool f32_attention = false;
};

// exact_default: --bf16-dot off unless asked for (dsv3 logits).
void AddRunOptions(CLI::App* app, RunOptions* options, bool exact_default = false);

// A loaded model with the thread pool and kernel choice to run it.
struct Runtime {
  std::unique_ptr<Model> model;
  std::unique_ptr<ThreadPool> pool;
  ops::KernelContext ctx;
};

Result<Runtime> LoadRuntime(const RunOptions& options);

// --temp, --top-k, --top-p, --min-p, --repeat-penalty, --seed
struct SamplingOptions {
  SamplingParams params;  // as parsed from the flags
  CLI::App* app = nullptr;
};
void AddSamplingOptions(CLI::App* app, SamplingOptions* options);
// The model's generation_config.json defaults (greedy without one), overridden by every sampling
// flag given on the command line.
Result<SamplingParams> ResolveSampling(const SamplingOptions& options,
                                       const std::string& model_dir);

// Prefill and decode speed on stderr.
void PrintGenerateStats(const GenerateStats& stats);

}  // namespace dsv3::cli
