// The dsv3 subcommands (DESIGN.md §5). Each lives in its own file cmd_<name>.cpp and exposes one
// Register function that adds its CLI11 subcommand and returns how to run it.
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "util/status.h"

namespace dsv3::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<Status()> run;  // errors are printed by main with a non-zero exit
};

// The model directory used when -m is not given: the shipped default model.
std::string DefaultModelDir();

Command RegisterInfo(CLI::App& root);
Command RegisterInit(CLI::App& root);
Command RegisterLogits(CLI::App& root);
Command RegisterGenerate(CLI::App& root);
Command RegisterChat(CLI::App& root);
Command RegisterBench(CLI::App& root);
Command RegisterTokenize(CLI::App& root);
Command RegisterDetokenize(CLI::App& root);
Command RegisterTrain(CLI::App& root);
Command RegisterTokenizerTrain(CLI::App& root);
Command RegisterQuantize(CLI::App& root);
Command RegisterPerplexity(CLI::App& root);

}  // namespace dsv3::cli
