// Small file helpers: whole-file reads, atomic writes, JSON files, .npy arrays.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/status.h"

namespace dsv3::io {

Result<std::string> ReadFile(const std::string& path);

// Temp file in the same directory, write, fsync, rename over path, fsync the directory. Whatever
// was at path before stays intact if anything fails.
Status WriteFileAtomic(const std::string& path, std::string_view content);
// The same, writing the concatenation of chunks without first joining them in memory (safetensors
// files are written straight from the callers' tensor buffers).
Status WriteFileAtomicChunks(const std::string& path, const std::vector<std::string_view>& chunks);

// Parses a JSON file; errors name the file (and the parse position).
Result<nlohmann::json> ReadJsonFile(const std::string& path);

// .npy version 1.0, '<f4', C order. Written atomically.
Status WriteNpyF32(const std::string& path, const float* data, const std::vector<int64_t>& shape);

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
// Reads a '<f4' C-order .npy file (what WriteNpyF32 writes; numpy's own files too).
Result<NpyArray> ReadNpyF32(const std::string& path);

}  // namespace dsv3::io
