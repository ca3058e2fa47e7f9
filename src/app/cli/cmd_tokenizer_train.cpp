// dsv3 tokenizer train: a byte-level BPE tokenizer with DeepSeek-V3's pre-tokenizer, special
// tokens and chat template, learnt from text files; written as tokenizer.json +
// tokenizer_config.json into a model directory.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "app/cli/command.h"
#include "io/files.h"
#include "tokenizer/bpe_trainer.h"

namespace dsv3::cli {
namespace {

struct TrainOptions {
  std::vector<std::string> files;
  std::string out;
  int32_t vocab_size = 32000;
  int64_t min_frequency = 2;
};

// A one-line bar redrawn in place on a terminal; on a pipe or file, a line per quarter.
class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), tty_(isatty(2) != 0) {}
  void Update(int64_t done, int64_t total) {
    if (total <= 0) return;
    const int percent = static_cast<int>(100 * done / total);
    if (tty_) {
      const auto now = std::chrono::steady_clock::now();
      if (done != total && now - last_ < std::chrono::milliseconds(100)) return;
      last_ = now;
      const int filled = percent * 30 / 100;
      std::fprintf(stderr, "\r%s [%s%s] %lld/%lld (%d%%)", label_.c_str(),
                   std::string(filled, '#').c_str(), std::string(30 - filled, '.').c_str(),
                   static_cast<long long>(done), static_cast<long long>(total), percent);
      if (done == total) std::fputc('\n', stderr);
    } else if (percent >= next_percent_ || done == total) {
      std::fprintf(stderr, "%s: %lld/%lld (%d%%)\n", label_.c_str(), static_cast<long long>(done),
                   static_cast<long long>(total), percent);
      next_percent_ = percent / 25 * 25 + 25;
    }
  }
  void Finish() {
    if (tty_) std::fputc('\n', stderr);
  }

 private:
  std::string label_;
  bool tty_;
  int next_percent_ = 0;
  std::chrono::steady_clock::time_point last_{};
};

Status RunTrain(const TrainOptions& o) {
  if (o.out.empty()) return Status::Error("-o/--out DIR is required");
  if (o.files.empty()) return Status::Error("give at least one training text file");
  DSV3_ASSIGN_OR_RETURN(tokenizer::BpeTrainer trainer, tokenizer::BpeTrainer::Create());
  ProgressBar reading("reading");
  for (size_t i = 0; i < o.files.size(); ++i) {
    DSV3_ASSIGN_OR_RETURN(std::string text, io::ReadFile(o.files[i]));
    DSV3_RETURN_IF_ERROR(trainer.AddText(text).WithContext(o.files[i]));
    reading.Update(static_cast<int64_t>(i + 1), static_cast<int64_t>(o.files.size()));
  }
  tokenizer::BpeTrainerOptions options;
  options.vocab_size = o.vocab_size;
  options.min_frequency = o.min_frequency;
  ProgressBar merging("merges");
  options.progress = [&](int64_t done, int64_t total) { merging.Update(done, total); };
  DSV3_ASSIGN_OR_RETURN(tokenizer::TrainedTokenizer trained, trainer.Train(options));
  DSV3_RETURN_IF_ERROR(tokenizer::WriteTrainedTokenizer(trained, o.out));
  std::fprintf(
      stderr,
      "%lld distinct pieces, %lld merges; wrote %s/tokenizer.json and %s/tokenizer_config.json\n",
      static_cast<long long>(trainer.distinct_pieces()), static_cast<long long>(trained.merges),
      o.out.c_str(), o.out.c_str());
  return Status::Ok();
}

}  // namespace

Command RegisterTokenizerTrain(CLI::App& root) {
  auto o = std::make_shared<TrainOptions>();
  CLI::App* tokenizer = root.add_subcommand("tokenizer", "tokenizer tools");
  tokenizer->require_subcommand(1);
  CLI::App* train = tokenizer->add_subcommand(
      "train", "train a byte-level BPE with DeepSeek-V3's pre-tokenizer and special tokens");
  train->add_option("files", o->files, "training text files (UTF-8)")->required();
  train->add_option("-o,--out", o->out, "output directory")->required();
  train->add_option("--vocab-size", o->vocab_size,
                    "BPE vocabulary size (3 special + 256 bytes + merges); 15 added tokens follow");
  train->add_option("--min-frequency", o->min_frequency, "never merge pairs seen fewer times");
  return {tokenizer, [o] { return RunTrain(*o); }};
}

}  // namespace dsv3::cli
