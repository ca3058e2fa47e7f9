// dsv3 init: a random checkpoint in the Hugging Face layout from a named preset.
#include <fmt/format.h>

#include "app/cli/args.h"
#include "app/cli/command.h"
#include "io/files.h"
#include "model/presets.h"
#include "model/random_checkpoint.h"

namespace dsv3::cli {

namespace {

struct InitOptions {
  std::string out;
  std::string preset;
  std::string config_file;
  uint64_t seed = 0;
  std::string dtype = "f32";
  bool mtp = false;
  int shards = 1;
  std::vector<int64_t> fp8_block = {128, 128};
  bool list = false;
};

Status RunInit(const InitOptions& o) {
  if (o.list) {
    for (const Preset& p : AllPresets()) fmt::print("{:16} {}\n", p.name, p.description);
    return Status::Ok();
  }
  if (o.out.empty()) return Status::Error("-o DIR is required");
  if (o.preset.empty() == o.config_file.empty())
    return Status::Error("give exactly one of --preset NAME or --config FILE");
  if (o.shards < 1) return Status::Error("--shards must be >= 1");
  if (o.fp8_block.size() != 2 || o.fp8_block[0] < 1 || o.fp8_block[1] < 1)
    return Status::Error("--fp8-block must be ROWS,COLS with positive values");
  ModelConfig config;
  if (!o.preset.empty()) {
    DSV3_ASSIGN_OR_RETURN(config, PresetConfig(o.preset));
  } else {
    DSV3_ASSIGN_OR_RETURN(auto json, io::ReadJsonFile(o.config_file));
    auto parsed = ParseModelConfig(json);
    if (!parsed.ok()) return parsed.status().WithContext(o.config_file);
    config = *parsed;
  }
  RandomCheckpointOptions options;
  options.seed = o.seed;
  DSV3_ASSIGN_OR_RETURN(options.dtype, ParseWeightDType(o.dtype));
  options.mtp = o.mtp;
  options.num_shards = o.shards;
  options.fp8_block_rows = o.fp8_block[0];
  options.fp8_block_cols = o.fp8_block[1];
  DSV3_RETURN_IF_ERROR(WriteRandomCheckpoint(config, options, o.out));
  fmt::print(stderr, "wrote {} ({}, {}{}, seed {})\n", o.out,
             o.preset.empty() ? o.config_file : o.preset, o.dtype, o.mtp ? ", MTP" : "", o.seed);
  return Status::Ok();
}

}  // namespace

Command RegisterInit(CLI::App& root) {
  auto o = std::make_shared<InitOptions>();
  CLI::App* app = root.add_subcommand("init", "write a random checkpoint from a preset");
  app->add_option("-o,--out", o->out, "output directory");
  app->add_option("--preset", o->preset, "model shape (see --list)");
  app->add_option("--config", o->config_file, "a config.json to use instead of a preset");
  app->add_option("--seed", o->seed, "random seed (the checkpoint is fully determined by it)");
  app->add_option("--dtype", o->dtype, "weight dtype: f32 | bf16 | fp8");
  app->add_flag("--mtp", o->mtp, "add a multi-token-prediction layer");
  app->add_option("--shards", o->shards, "number of safetensors shards (index.json when > 1)");
  app->add_option("--fp8-block", o->fp8_block, "FP8 scale block ROWS,COLS (default 128,128)")
      ->delimiter(',')
      ->expected(2);
  app->add_flag("--list", o->list, "list the presets");
  return {app, [o] { return RunInit(*o); }};
}

}  // namespace dsv3::cli
