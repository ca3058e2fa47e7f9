// dsv3 quantize: converts a model directory to f32 | bf16 | fp8 | q8_0 | q4_0 (model/quantize.h).
#include <cstdio>

#include <fmt/format.h>

#include "app/cli/command.h"
#include "model/quantize.h"

namespace dsv3::cli {

namespace {

struct QuantizeCliOptions {
  std::string model_dir;
  std::string out;
  std::string type;
  std::string lm_head_type;
  bool quantize_lm_head = false;
  bool quiet = false;
};

// "\rquantize [#######.............]  35/120 tensors" on stderr, redrawn in place.
void DrawProgress(int64_t done, int64_t total) {
  constexpr int kWidth = 30;
  const int filled = total > 0 ? static_cast<int>(kWidth * done / total) : kWidth;
  fmt::print(stderr, "\rquantize [{}{}] {}/{} tensors", std::string(filled, '#'),
             std::string(kWidth - filled, '.'), done, total);
  if (done == total) fmt::print(stderr, "\n");
  std::fflush(stderr);
}

Status RunQuantize(const QuantizeCliOptions& o) {
  if (o.out.empty()) return Status::Error("-o DIR is required");
  if (o.out == o.model_dir) return Status::Error("-o must differ from -m");
  QuantizeOptions options;
  DSV3_ASSIGN_OR_RETURN(options.type, ParseQuantType(o.type));
  if (o.quantize_lm_head && !o.lm_head_type.empty())
    return Status::Error("--quantize-lm-head and --lm-head-type: give one of them");
  if (o.quantize_lm_head) options.lm_head_type = options.type;
  if (!o.lm_head_type.empty()) {
    Result<QuantType> head = ParseQuantType(o.lm_head_type);
    if (!head.ok())
      return Err("--lm-head-type: '{}' is not one of f32, bf16, fp8, q8_0, q4_0", o.lm_head_type);
    options.lm_head_type = *head;
  }
  // Redrawn once per percent, so a log file of a large model's run stays short.
  int64_t last_percent = -1;
  if (!o.quiet)
    options.progress = [&last_percent](int64_t done, int64_t total) {
      const int64_t percent = total > 0 ? 100 * done / total : 100;
      if (percent == last_percent && done != total) return;
      last_percent = percent;
      DrawProgress(done, total);
    };
  const std::string in = o.model_dir.empty() ? DefaultModelDir() : o.model_dir;
  DSV3_RETURN_IF_ERROR(QuantizeModel(in, o.out, options));
  if (!o.quiet) fmt::print(stderr, "wrote {} ({})\n", o.out, o.type);
  return Status::Ok();
}

}  // namespace

Command RegisterQuantize(CLI::App& root) {
  auto o = std::make_shared<QuantizeCliOptions>();
  CLI::App* app = root.add_subcommand("quantize", "convert a model's weights to another format");
  app->add_option("-m,--model", o->model_dir, "model directory (default: the shipped model)");
  app->add_option("-o,--out", o->out, "output directory");
  app->add_option("--type", o->type, "f32 | bf16 | fp8 | q8_0 | q4_0")->required();
  app->add_option("--lm-head-type", o->lm_head_type,
                  "lm_head (and the MTP head) format: f32 | bf16 | fp8 | q8_0 | q4_0 (default: "
                  "q8_0 for q8_0 and q4_0 models, else kept at >= BF16)");
  app->add_flag("--quantize-lm-head", o->quantize_lm_head, "lm_head in --type's format");
  app->add_flag("-q,--quiet", o->quiet, "no progress output");
  return {app, [o] { return RunQuantize(*o); }};
}

}  // namespace dsv3::cli
