// Random checkpoints in the Hugging Face layout (`dsv3 init`): config.json plus safetensors with
// every tensor the config needs, fully determined by the seed. Used by tests and benchmarks,
// since no real model can be downloaded here.
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"
#include "util/dtype.h"

namespace dsv3 {

struct RandomCheckpointOptions {
  uint64_t seed = 0;
  DType dtype = DType::kF32;  // kF32, kBF16 or kF8E4M3 (block-scaled linear weights)
  bool mtp = false;           // add one MTP layer (num_nextn_predict_layers = 1)
  int64_t fp8_block_rows = 128;
  int64_t fp8_block_cols = 128;
  int num_shards = 1;
};

// Writes DIR/config.json and the weights. The config is adjusted for dtype and mtp (quantization
// config, num_nextn_predict_layers).
Status WriteRandomCheckpoint(const ModelConfig& config, const RandomCheckpointOptions& options,
                             const std::string& dir);

}  // namespace dsv3
