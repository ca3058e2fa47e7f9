// Named model shapes for `dsv3 init`: tiny ones covering every architectural variant (for tests)
// and the benchmark shapes of the CPU performance work.
#pragma once

#include <string>
#include <vector>

#include "model/config.h"

namespace dsv3 {

struct Preset {
  std::string name;
  std::string description;
  ModelConfig config;
};

const std::vector<Preset>& AllPresets();
Result<ModelConfig> PresetConfig(const std::string& name);

}  // namespace dsv3
