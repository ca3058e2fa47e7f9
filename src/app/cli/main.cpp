// dsv3: one binary, one subcommand per task. Errors go to stderr with a non-zero exit code.
#include <csignal>
#include <cstdio>
#include <vector>

#include "app/cli/command.h"

int main(int argc, char** argv) {
  // A write past the file-size limit then fails with EFBIG, reported like a full disk, instead of
  // killing the process in the middle of a checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
  CLI::App app{"dsv3: DeepSeek-V3 inference and training in C++"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "dsv3 0.1.0");
  std::vector<dsv3::cli::Command> commands = {
      dsv3::cli::RegisterInfo(app),           dsv3::cli::RegisterInit(app),
      dsv3::cli::RegisterLogits(app),         dsv3::cli::RegisterGenerate(app),
      dsv3::cli::RegisterBench(app),          dsv3::cli::RegisterTokenize(app),
      dsv3::cli::RegisterDetokenize(app),     dsv3::cli::RegisterChat(app),
      dsv3::cli::RegisterTokenizerTrain(app), dsv3::cli::RegisterTrain(app),
      dsv3::cli::RegisterQuantize(app),       dsv3::cli::RegisterPerplexity(app),
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& command : commands) {
    if (!command.app->parsed()) continue;
    const dsv3::Status status = command.run();
    if (!status.ok()) {
      std::fprintf(stderr, "dsv3 %s: error: %s\n", command.app->get_name().c_str(),
                   status.message().c_str());
      return 1;
    }
    return 0;
  }
  return 1;
}
