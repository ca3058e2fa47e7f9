// dsv3 train: trains a DeepSeek-V3-architecture model from scratch (or a checkpoint) on text
// files with a tokenizer.json; checkpoints in the Hugging Face layout plus optimizer state.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <malloc.h>

#include <fmt/format.h>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "io/files.h"
#include "model/presets.h"
#include "ops/roofline.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/data_loader.h"
#include "train/flops.h"
#include "train/trainer.h"

namespace dsv3::cli {

namespace {

struct TrainCliOptions {
  std::string out, preset, config_file, tokenizer, init_from, metrics, dtype = "f32",
                                                                       compute = "f32";
  std::vector<std::string> data, val_data;
  bool mtp = false, resume = false, quiet = false, vocab_from_tokenizer = false;
  int64_t steps = 100, batch = 8, seq_len = 64, warmup = 10, eval_every = 50, eval_batches = 8;
  int64_t save_every = 50;
  int64_t stop_after = 0;  // stop (with a checkpoint) after this many steps of this run
  double lr = 3e-3, min_lr_ratio = 0.1, weight_decay = 0.1, clip = 1.0;
  double alpha = 0.0001, lambda = 0.3, gamma = 0.001, val_fraction = 0.05;
  uint64_t seed = 0;
  int threads = 0;
};

std::string Duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, s / 60 % 60);
  return fmt::format("{}m{:02}s", s / 60, s % 60);
}

// Mean main/MTP loss over up to max_batches fixed validation batches.
train::LossStats Validate(train::Trainer& trainer, const train::BatchLoader& val, int64_t B,
                          int64_t max_batches) {
  const int64_t T = val.seq_len();
  const int64_t batches = std::min(max_batches, std::max<int64_t>(1, val.num_windows() / B));
  train::LossStats mean;
  std::vector<int32_t> batch(static_cast<size_t>(B * (T + 1)));
  int64_t used = 0;
  for (int64_t i = 0; i < batches; ++i) {
    const int64_t b_now = std::min(B, val.num_windows() - i * B);
    if (b_now <= 0) break;
    for (int64_t b = 0; b < b_now; ++b) val.Window(i * B + b, batch.data() + b * (T + 1));
    const train::LossStats s = trainer.Evaluate(batch.data(), b_now, T);
    mean.main += s.main;
    mean.mtp += s.mtp;
    ++used;
  }
  mean.main /= static_cast<double>(used);
  mean.mtp /= static_cast<double>(used);
  return mean;
}

Status RunTrain(const TrainCliOptions& o) {
  namespace fs = std::filesystem;
  // Every step allocates and frees the same large activation buffers (the logits alone are
  // batch x seq x vocab floats): keep them in the heap instead of mmap/munmap-ing them each step,
  // which cost a quarter of the step time in page faults.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (o.out.empty()) return Status::Error("-o DIR is required");
  if (o.tokenizer.empty()) return Status::Error("--tokenizer FILE (a tokenizer.json) is required");
  if (o.data.empty()) return Status::Error("give at least one training text file");
  if (o.steps < 1 || o.batch < 1 || o.seq_len < 2)
    return Status::Error("--steps and --batch must be >= 1 and --seq-len >= 2");
  DSV3_ASSIGN_OR_RETURN(DType dtype, ParseWeightDType(o.dtype));
  if (dtype != DType::kF32 && dtype != DType::kBF16)
    return Status::Error("--dtype must be f32 or bf16 for training checkpoints");
  if (o.compute != "f32" && o.compute != "bf16")
    return Status::Error("--compute must be f32 or bf16");

  // The output directory must be writable before any work is done.
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) return Err("{}: cannot create the output directory: {}", o.out, ec.message());
  DSV3_RETURN_IF_ERROR(io::WriteFileAtomic(o.out + "/.write_test", "ok\n")
                           .WithContext("the output directory is not writable"));
  fs::remove(o.out + "/.write_test", ec);

  DSV3_ASSIGN_OR_RETURN(auto tok, tokenizer::Tokenizer::Load(o.tokenizer));
  std::string resume_dir;
  ModelConfig config;
  if (o.resume) {
    auto found = train::FindResumableCheckpoint(
        o.out, [](const std::string& m) { fmt::print(stderr, "warning: {}\n", m); });
    if (found.ok())
      resume_dir = *found;
    else if (fs::exists(o.out + "/latest"))
      return found.status();
  }
  if (!resume_dir.empty()) {
    DSV3_ASSIGN_OR_RETURN(config, LoadModelConfig(resume_dir));
  } else if (!o.init_from.empty()) {
    DSV3_ASSIGN_OR_RETURN(config, LoadModelConfig(o.init_from));
  } else {
    if (o.preset.empty() == o.config_file.empty())
      return Status::Error("give exactly one of --preset NAME or --config FILE");
    if (!o.preset.empty()) {
      DSV3_ASSIGN_OR_RETURN(config, PresetConfig(o.preset));
      config.vocab_size = tok.id_limit();  // a preset takes the tokenizer's vocabulary
    } else {
      DSV3_ASSIGN_OR_RETURN(auto json, io::ReadJsonFile(o.config_file));
      auto parsed = ParseModelConfig(json);
      if (!parsed.ok()) return parsed.status().WithContext(o.config_file);
      config = *parsed;
    }
    if (o.mtp) config.num_nextn_predict_layers = 1;
    if (o.vocab_from_tokenizer) config.vocab_size = tok.id_limit();
  }
  if (config.vocab_size < tok.id_limit())
    return Err("vocab_size {} is smaller than the tokenizer's {} ids", config.vocab_size,
               tok.id_limit());
  if (config.max_position_embeddings < o.seq_len)
    config.max_position_embeddings = o.seq_len;  // positions beyond it are never used in training
  auto created = train::TrainModel<float>::Create(config);
  if (!created.ok()) return created.status().WithContext("the trainer cannot build this config");
  train::TrainModel<float> model = std::move(*created);
  model.InitRandom(o.seed);
  if (resume_dir.empty() && !o.init_from.empty()) DSV3_RETURN_IF_ERROR(model.LoadFrom(o.init_from));

  // Corpus: the training files, and validation files or a held-out tail.
  const int32_t eos = static_cast<int32_t>(config.eos_token_id);
  DSV3_ASSIGN_OR_RETURN(auto tokens, train::TokenizeFiles(tok, o.data, eos));
  if (tokens.size() <= static_cast<size_t>(o.data.size()))
    return Err("the training corpus is empty ({} file(s) without text)", o.data.size());
  std::vector<int32_t> val_tokens;
  if (!o.val_data.empty()) {
    DSV3_ASSIGN_OR_RETURN(val_tokens, train::TokenizeFiles(tok, o.val_data, eos));
  } else if (o.val_fraction > 0) {
    const size_t held = static_cast<size_t>(static_cast<double>(tokens.size()) * o.val_fraction);
    if (held >= static_cast<size_t>(o.seq_len + 1) &&
        tokens.size() - held >= static_cast<size_t>(o.seq_len + 1)) {
      val_tokens.assign(tokens.end() - static_cast<std::ptrdiff_t>(held), tokens.end());
      tokens.resize(tokens.size() - held);
    }
  }
  const uint64_t fingerprint = train::Fnv1a64(tokens.data(), tokens.size() * 4);
  auto loader_made = train::BatchLoader::Create(std::move(tokens), o.seq_len, o.seed);
  if (!loader_made.ok()) return loader_made.status().WithContext("training corpus");
  train::BatchLoader loader = std::move(*loader_made);
  std::optional<train::BatchLoader> val;
  if (val_tokens.size() > static_cast<size_t>(o.seq_len)) {
    auto v = train::BatchLoader::Create(std::move(val_tokens), o.seq_len, 0, false);
    if (v.ok()) val = std::move(*v);
  }

  train::TrainerOptions options;
  options.loss.balance_alpha = o.alpha;
  options.loss.mtp_lambda = o.lambda;
  options.bias_update_speed = o.gamma;
  options.adamw.weight_decay = o.weight_decay;
  options.schedule = {o.lr, o.min_lr_ratio, o.warmup, o.steps};
  options.clip_norm = o.clip;
  ThreadPool pool(o.threads);
  train::Context ctx{&pool, ops::BestIsa()};
  ctx.bf16_compute = o.compute == "bf16";
  train::Trainer trainer(std::move(model), options, ctx);
  train::TrainState state;
  state.seed = o.seed;
  state.corpus_fingerprint = fingerprint;
  if (!resume_dir.empty()) {
    DSV3_RETURN_IF_ERROR(
        train::LoadCheckpoint(resume_dir, &trainer.model(), &trainer.optimizer(), &state));
    if (state.corpus_fingerprint != fingerprint)
      fmt::print(stderr, "warning: the training corpus differs from the checkpoint's\n");
    loader.set_state(state.loader);
    fmt::print(stderr, "resumed from {} (step {})\n", resume_dir, state.step);
  }

  const std::string metrics_path = o.metrics.empty() ? o.out + "/metrics.jsonl" : o.metrics;
  std::ofstream metrics(metrics_path, std::ios::app);
  if (!metrics) return Err("{}: cannot open the metrics file", metrics_path);
  train::SaveOptions save;
  save.dtype = dtype;
  save.tokenizer_json = o.tokenizer;
  const std::string tok_config = fs::path(o.tokenizer).parent_path() / "tokenizer_config.json";
  if (fs::exists(tok_config)) save.tokenizer_config = tok_config;
  auto save_now = [&]() -> Status {
    state.loader = loader.state();
    DSV3_ASSIGN_OR_RETURN(std::string dir, train::SaveCheckpoint(o.out, trainer.model(),
                                                                 trainer.optimizer(), state, save));
    if (!o.quiet) fmt::print(stderr, "\nsaved {}\n", dir);
    return Status::Ok();
  };

  const int64_t B = o.batch, T = o.seq_len;
  const int64_t params = trainer.model().params().TotalNumel();
  if (!o.quiet)
    fmt::print(stderr, "training {} parameters, {} windows of {} tokens, batch {}, {} threads\n",
               params, loader.num_windows(), T, B, pool.num_threads());
  // Model-FLOPs utilisation: the FLOPs of a training token (train/flops.h) at the measured
  // step throughput, against this machine's peak for the products' instruction, measured now on
  // the same threads (fp32 FMA; bf16 dot with --compute bf16 where the CPU has it).
  const double flops_per_token = train::CountTrainingFlops(trainer.model().config(), T).PerToken();
  double peak_flops = 0;
  std::string peak_name = "fp32_fma";
  {
    auto peak = ctx.bf16_compute ? ops::MeasureBf16DotPeak(&pool, ctx.isa, {})
                                 : ops::MeasureFp32FmaPeak(&pool, ctx.isa, {});
    if (peak.ok() && !peak->available) peak = ops::MeasureFp32FmaPeak(&pool, ctx.isa, {});
    if (peak.ok() && peak->available) {
      peak_flops = peak->median * 1e9;
      peak_name = peak->name;
    }
  }
  if (!o.quiet)
    fmt::print(stderr,
               "{:.1f} MFLOP per training token; machine peak {:.0f} GFLOP/s ({}, {} threads)\n",
               flops_per_token / 1e6, peak_flops / 1e9, peak_name, pool.num_threads());
  double step_seconds = 0;  // time inside optimizer steps (not validation or checkpoints)
  std::vector<int32_t> batch;
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = state.step;
  double smooth = 0;
  while (state.step < o.steps) {
    loader.Next(B, &batch);
    const auto step_start = std::chrono::steady_clock::now();
    const train::StepResult r = trainer.Step(batch.data(), B, T);
    step_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    ++state.step;
    state.tokens_seen += B * T;
    if (!std::isfinite(r.loss.total))
      return Err("the loss became {} at step {}; lower --lr", r.loss.total, state.step);
    smooth = state.step - first_step == 1 ? r.loss.main : 0.9 * smooth + 0.1 * r.loss.main;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tok_s = static_cast<double>((state.step - first_step) * B * T) / elapsed;
    nlohmann::json m = {{"step", state.step},
                        {"loss", r.loss.total},
                        {"main_loss", r.loss.main},
                        {"mtp_loss", r.loss.mtp},
                        {"balance_loss", r.loss.balance},
                        {"lr", r.lr},
                        {"grad_norm", r.grad_norm},
                        {"tokens", state.tokens_seen},
                        {"tokens_per_s", tok_s},
                        {"expert_max_over_mean", r.imbalance}};
    const double step_tok_s = static_cast<double>((state.step - first_step) * B * T) / step_seconds;
    m["step_tokens_per_s"] = step_tok_s;
    if (peak_flops > 0) m["mfu"] = step_tok_s * flops_per_token / peak_flops;
    const bool eval_now =
        val && o.eval_every > 0 && (state.step % o.eval_every == 0 || state.step == o.steps);
    if (eval_now) {
      const train::LossStats v = Validate(trainer, *val, B, o.eval_batches);
      m["val_loss"] = v.main;
      m["val_ppl"] = std::exp(v.main);
      if (trainer.model().has_mtp()) m["val_mtp_loss"] = v.mtp;
    }
    metrics << m.dump() << "\n";
    metrics.flush();
    if (!o.quiet) {
      const double frac = static_cast<double>(state.step) / static_cast<double>(o.steps);
      const int width = 24, filled = static_cast<int>(frac * width);
      std::string bar = std::string(static_cast<size_t>(filled), '=') +
                        std::string(static_cast<size_t>(width - filled), ' ');
      double imb = 0;
      for (double x : r.imbalance) imb = std::max(imb, x);
      const double eta = static_cast<double>(o.steps - state.step) * B * T / tok_s;
      fmt::print(stderr,
                 "\r[{}] step {}/{} loss {:.3f} | {:.0f} tok/s | load max/mean {:.2f} | "
                 "ETA {}   ",
                 bar, state.step, o.steps, smooth, tok_s, imb, Duration(eta));
      if (eval_now)
        fmt::print(stderr, "\nval loss {:.4f} (ppl {:.2f})\n", m["val_loss"].get<double>(),
                   m["val_ppl"].get<double>());
    }
    const bool stop = o.stop_after > 0 && state.step - first_step >= o.stop_after;
    if ((o.save_every > 0 && state.step % o.save_every == 0) || state.step == o.steps || stop)
      DSV3_RETURN_IF_ERROR(save_now());
    if (stop) break;
  }
  if (!o.quiet && !batch.empty()) {
    // Per-layer expert load of the last batch, so balance is visible at the end of a run.
    fmt::print(stderr, "done: {} steps\n", state.step);
    const double step_tok_s =
        static_cast<double>((state.step - first_step) * B * T) / std::max(step_seconds, 1e-9);
    fmt::print(stderr, "throughput: {:.0f} tok/s in training steps = {:.1f} GFLOP/s", step_tok_s,
               step_tok_s * flops_per_token / 1e9);
    if (peak_flops > 0)
      fmt::print(stderr, " = {:.1f}% of the measured {} peak",
                 100 * step_tok_s * flops_per_token / peak_flops, peak_name);
    fmt::print(stderr, "\n");
    const train::LossStats last = trainer.Evaluate(batch.data(), B, T);
    for (size_t l = 0; l < last.expert_load.size(); ++l)
      fmt::print(stderr, "MoE layer {}: expert load max/mean {:.2f}\n", l,
                 train::LoadImbalance(last.expert_load[l]));
  }
  return Status::Ok();
}

}  // namespace

Command RegisterTrain(CLI::App& root) {
  auto o = std::make_shared<TrainCliOptions>();
  CLI::App* app = root.add_subcommand("train", "train a DeepSeek-V3-architecture model on text");
  app->add_option("data", o->data, "training text files (UTF-8)");
  app->add_option("-o,--out", o->out, "output directory (checkpoints, metrics.jsonl)");
  app->add_option("--preset", o->preset, "model shape (dsv3 init --list); vocab from tokenizer");
  app->add_option("--config", o->config_file, "a config.json instead of a preset");
  app->add_option("--init-from", o->init_from, "start from this checkpoint's weights");
  app->add_flag("--mtp", o->mtp, "add a multi-token-prediction layer");
  app->add_flag("--vocab-from-tokenizer", o->vocab_from_tokenizer,
                "set --config's vocab_size to the tokenizer's id count");
  app->add_option("--tokenizer", o->tokenizer, "tokenizer.json");
  app->add_option("--val", o->val_data, "validation text files (default: hold out a tail)")
      ->allow_extra_args(false);
  app->add_option("--val-fraction", o->val_fraction, "tail fraction held out (default 0.05)");
  app->add_option("--steps", o->steps, "optimizer steps (default 100)");
  app->add_option("--batch", o->batch, "sequences per step (default 8)");
  app->add_option("--seq-len", o->seq_len, "tokens per sequence (default 64)");
  app->add_option("--lr", o->lr, "peak learning rate (default 3e-3)");
  app->add_option("--min-lr-ratio", o->min_lr_ratio, "cosine floor / peak (default 0.1)");
  app->add_option("--warmup", o->warmup, "warmup steps (default 10)");
  app->add_option("--weight-decay", o->weight_decay, "AdamW weight decay (default 0.1)");
  app->add_option("--clip", o->clip, "global gradient-norm clip (default 1; 0 = off)");
  app->add_option("--alpha", o->alpha, "sequence-wise balance loss weight (default 0.0001)");
  app->add_option("--lambda", o->lambda, "MTP loss weight (default 0.3)");
  app->add_option("--gamma", o->gamma, "bias update speed (default 0.001)");
  app->add_option("--seed", o->seed, "seed of init and data order");
  app->add_option("--threads", o->threads, "threads (default: all cores)");
  app->add_option("--eval-every", o->eval_every, "validate every N steps (default 50)");
  app->add_option("--eval-batches", o->eval_batches, "validation batches (default 8)");
  app->add_option("--save-every", o->save_every, "checkpoint every N steps (default 50)");
  app->add_option("--dtype", o->dtype, "model.safetensors dtype: f32 | bf16");
  app->add_option("--compute", o->compute,
                  "matrix products in f32 or bf16 (f32 master weights either way)");
  app->add_option("--metrics", o->metrics, "JSON-lines metrics file (default OUT/metrics.jsonl)");
  app->add_option("--stop-after", o->stop_after,
                  "stop after N steps of this run, with a checkpoint (resume later)");
  app->add_flag("--resume", o->resume, "continue from the newest valid checkpoint in OUT");
  app->add_flag("-q,--quiet", o->quiet, "no progress output");
  return {app, [o] { return RunTrain(*o); }};
}

}  // namespace dsv3::cli
