#include "app/cli/command.h"

namespace dsv3::cli {

Command RegisterInfo(CLI::App& root) {
  CLI::App* app = root.add_subcommand("info", "(not yet implemented)");
  return {app, [] { return Status::Error("not implemented yet"); }};
}

}  // namespace dsv3::cli
