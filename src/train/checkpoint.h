// Training checkpoints that never get lost (issue 4 §3). Layout under the output directory:
//
//   step-N/config.json, model.safetensors        Hugging Face layout: `dsv3 generate -m step-N`
//   step-N/tokenizer.json (+ tokenizer_config.json when given)
//   step-N/optimizer.safetensors                 AdamW m./v. (+ master. F32 weights when the
//                                                model file is BF16), so resume is exact
//   step-N/trainer_state.json                    step, data position, seed, corpus fingerprint
//   step-N/manifest.json                         FNV-1a 64 of every file above, written last
//   latest                                       "step-N\n", replaced atomically
//
// A step directory is written as step-N.partial and renamed into place, then `latest` is
// replaced; every file write is temp + fsync + rename + directory fsync. The two newest step
// directories are kept. On resume a checkpoint whose manifest is missing or does not match falls
// back to the newest older one that does.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "train/data_loader.h"
#include "train/optimizer.h"
#include "train/transformer.h"
#include "util/dtype.h"

namespace dsv3::train {

struct TrainState {
  int64_t step = 0;
  uint64_t seed = 0;
  LoaderState loader;
  int64_t tokens_seen = 0;
  uint64_t corpus_fingerprint = 0;  // FNV-1a of the training token stream
};

struct SaveOptions {
  DType dtype = DType::kF32;     // model.safetensors dtype: kF32 or kBF16 (the bias stays F32)
  std::string tokenizer_json;    // copied into the checkpoint when not empty
  std::string tokenizer_config;  // likewise
  int keep = 2;
};

// Writes OUT/step-{state.step} and points OUT/latest at it; returns the step directory.
Result<std::string> SaveCheckpoint(const std::string& out_dir, const TrainModel<float>& model,
                                   const AdamW& optimizer, const TrainState& state,
                                   const SaveOptions& options);

// The newest step directory under out_dir whose manifest verifies, trying `latest` first.
// Each rejected candidate is reported through warn. Error when none is usable.
Result<std::string> FindResumableCheckpoint(const std::string& out_dir,
                                            const std::function<void(const std::string&)>& warn);

// Verifies step_dir's manifest (every listed file present with its checksum).
Status VerifyCheckpoint(const std::string& step_dir);

// Loads weights, optimizer moments and the trainer state from a verified step directory into a
// model created from step_dir/config.json.
Status LoadCheckpoint(const std::string& step_dir, TrainModel<float>* model, AdamW* optimizer,
                      TrainState* state);

uint64_t Fnv1a64(const void* data, size_t n, uint64_t hash = 0xcbf29ce484222325ull);

}  // namespace dsv3::train
