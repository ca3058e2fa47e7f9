#include <filesystem>

#include "app/cli/command.h"

namespace dsv3::cli {

std::string DefaultModelDir() {
  // The shipped model lives in the source tree; DSV3_MODEL overrides it.
  if (const char* env = std::getenv("DSV3_MODEL"); env != nullptr && *env != '\0') return env;
  return std::string(DSV3_SOURCE_DIR) + "/models/dsv3-tiny";
}

}  // namespace dsv3::cli
