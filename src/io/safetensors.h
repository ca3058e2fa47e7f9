// safetensors files and Hugging Face checkpoint directories (spec §9.1).
//
// A file is an 8-byte little-endian header length N, an N-byte JSON header mapping
// name -> {dtype, shape, data_offsets: [begin, end)} (offsets relative to the data section), an
// optional "__metadata__" of string pairs, then the raw little-endian row-major data.
// Everything is validated at Open(): any malformed file gives an error naming the file and the
// problem, never a crash. Tensors are used in place (zero-copy) from the mapping or buffer.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/dtype.h"
#include "util/huge_pages.h"
#include "util/status.h"

namespace dsv3 {
class ThreadPool;
}

namespace dsv3::io {

// How tensor bytes get into memory (DESIGN.md §4): kMmap maps the file read-only (zero-copy, the
// choice when the model is larger than RAM); kRead reads it into anonymous memory.
enum class LoadMode { kMmap, kRead };

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // nbytes bytes, inside the owning file's mapping or buffer
  size_t nbytes = 0;
  std::string file;  // path of the file it lives in, for error messages

  int64_t numel() const;
  std::string ShapeString() const;  // "[576, 7168]"
};

// Largest header accepted, as in the reference implementation: 100 MB.
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

class SafetensorsFile {
 public:
  // kRead with a pool of 2+ threads: the data section is read in pieces on its threads (the
  // kernel's copy into fresh pages, and their zeroing, then run on every core).
  static Result<std::unique_ptr<SafetensorsFile>> Open(const std::string& path, LoadMode mode,
                                                       ThreadPool* pool = nullptr);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in file order
  const TensorInfo* Find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
  void* mapping_ = nullptr;  // mmap'ed region, or nullptr
  size_t mapping_size_ = 0;
  // kRead: the data section only, 2 MiB aligned (so a tensor is as aligned as its offset) and
  // backed by huge pages where the kernel allows (util/huge_pages.h).
  LargeBuffer buffer_;
};

// A model directory in the Hugging Face layout: model.safetensors, or
// model.safetensors.index.json {"metadata": ..., "weight_map": {tensor: shard}} plus its shards.
// Every shard named by the index must exist inside the directory (no absolute paths, no "..");
// every tensor of the weight map must be found in the shard it names; a tensor name may appear
// only once across all shards.
class Checkpoint {
 public:
  // pool: as SafetensorsFile::Open's, for every file.
  static Result<std::unique_ptr<Checkpoint>> Open(const std::string& dir, LoadMode mode,
                                                  ThreadPool* pool = nullptr);

  const std::string& dir() const { return dir_; }
  const TensorInfo* Find(std::string_view name) const;
  std::vector<std::string> TensorNames() const;  // sorted
  size_t TotalBytes() const;                     // sum of tensor bytes

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*, std::less<>> tensors_;
};

// A tensor to write; the bytes are borrowed from the caller until the write returns.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
  // Instead of data (WriteCheckpoint only): called once, in tensor order, when the shard holding
  // the tensor is written, to produce its nbytes bytes; they are released after that shard, so a
  // converter writing many shards holds about one shard's bytes at a time.
  std::function<Status(std::vector<uint8_t>* bytes)> produce = nullptr;
};

// Writes one safetensors file atomically (temp file, fsync, rename, fsync of the directory).
// Tensors are laid out by decreasing element size, in the given order otherwise, so each starts at
// a multiple of its element size; the header is padded with spaces to a multiple of 8.
Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

// Writes a checkpoint into dir: one model.safetensors when num_shards == 1, otherwise
// model-0000i-of-0000n.safetensors files plus model.safetensors.index.json. Tensors are
// distributed over shards in order, balancing bytes.
Status WriteCheckpoint(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                       int num_shards = 1);

}  // namespace dsv3::io
