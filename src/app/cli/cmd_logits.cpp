#include "app/cli/command.h"

namespace dsv3::cli {

Command RegisterLogits(CLI::App& root) {
  CLI::App* app = root.add_subcommand("logits", "(not yet implemented)");
  return {app, [] { return Status::Error("not implemented yet"); }};
}

}  // namespace dsv3::cli
