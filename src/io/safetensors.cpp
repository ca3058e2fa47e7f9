#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <optional>
#include <set>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

#include "backend/thread_pool.h"
#include "io/files.h"

namespace dsv3::io {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kMetadataKey = "__metadata__";
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

std::string ErrnoText(int err) {
  return std::error_code(err, std::generic_category()).message();
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

Status PreadAll(int fd, uint64_t offset, void* dst, size_t size) {
  auto* out = static_cast<uint8_t*>(dst);
  while (size > 0) {
    const ssize_t n = ::pread(fd, out, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Err("read failed at offset {}: {}", offset, ErrnoText(errno));
    }
    if (n == 0)
      return Err("file ended at offset {} while reading it (truncated meanwhile?)", offset);
    out += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// The smallest piece ReadData gives a thread: below it a wake-up of the pool costs more than
// the copy it shares.
constexpr uint64_t kMinReadPiece = uint64_t{4} << 20;

// size bytes at offset of fd into dst: in pieces on pool's threads where it has 2+ and there are
// at least two pieces, each thread reading its contiguous share front to back. bench-medium q4_0
// (one 1.4 GB file, 2 threads), `dsv3 bench -p 16 -n 0 -r 1` wall time, binaries alternating:
// 0.63-0.74 s against 0.87-1.50 (5 each); where this VM's fresh pages are slow to zero (most of a
// read into them), q8_0 3.9 s against 7.6.
Status ReadData(int fd, uint64_t offset, uint8_t* dst, uint64_t size, ThreadPool* pool) {
  const int threads = pool != nullptr ? pool->num_threads() : 1;
  const uint64_t piece = std::max(kMinReadPiece, (size / (4 * threads) + 4095) / 4096 * 4096);
  const auto pieces = static_cast<int64_t>((size + piece - 1) / piece);
  if (threads < 2 || pieces < 2) return PreadAll(fd, offset, dst, size);
  std::vector<Status> status(static_cast<size_t>(pieces), Status::Ok());
  pool->ParallelFor(pieces, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint64_t first = static_cast<uint64_t>(i) * piece;
      status[i] = PreadAll(fd, offset + first, dst + first, std::min(piece, size - first));
    }
  });
  for (const Status& s : status)
    if (!s.ok()) return s;
  return Status::Ok();
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// Element count and byte size of a shape, or an error on negative dims or 64-bit overflow.
Result<std::pair<int64_t, uint64_t>> CheckedSize(const std::vector<int64_t>& shape, DType dtype) {
  int64_t numel = 1;
  for (int64_t dim : shape) {
    if (dim < 0) return Err("negative dimension {} in shape {}", dim, ShapeText(shape));
    if (__builtin_mul_overflow(numel, dim, &numel))
      return Err("shape {} has too many elements (overflows 64 bits)", ShapeText(shape));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(numel), DTypeSize(dtype), &nbytes))
    return Err("shape {} is too many bytes (overflows 64 bits)", ShapeText(shape));
  return std::pair{numel, nbytes};
}

// nlohmann::json keeps only the last of duplicate keys, which would let a file hold two
// different tensors of the same name; the parser callback sees every key, so it catches them.
Result<json> ParseHeaderJson(std::string_view text) {
  struct Level {
    std::set<std::string, std::less<>> keys;
    std::string last_key;
  };
  std::vector<Level> levels;
  std::optional<std::string> duplicate;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      levels.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      if (!levels.empty()) levels.pop_back();
    } else if (event == json::parse_event_t::key && !levels.empty()) {
      Level& level = levels.back();
      const auto& key = parsed.get_ref<const std::string&>();
      if (!duplicate && !level.keys.insert(key).second) {
        if (levels.size() == 1) {
          duplicate = key == kMetadataKey ? fmt::format("duplicate '{}'", key)
                                          : fmt::format("duplicate tensor name '{}'", key);
        } else {
          duplicate = fmt::format("duplicate key '{}' inside '{}'", key,
                                  levels[levels.size() - 2].last_key);
        }
      }
      level.last_key = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), callback);
  } catch (const json::exception& e) {
    return Err("invalid JSON header: {}", e.what());
  }
  if (duplicate) return Status::Error(*duplicate);
  return header;
}

struct Entry {
  TensorInfo info;
  uint64_t begin = 0, end = 0;
};

Result<Entry> ParseEntry(const std::string& name, const json& value) {
  auto error = [&](const Status& status) { return status.WithContext("tensor '" + name + "'"); };
  if (!value.is_object()) return error(Err("entry must be an object, not {}", value.type_name()));
  Entry entry;
  entry.info.name = name;

  const auto dtype_it = value.find("dtype");
  if (dtype_it == value.end()) return error(Err("missing 'dtype'"));
  if (!dtype_it->is_string())
    return error(Err("'dtype' must be a string, not {}", dtype_it->type_name()));
  const auto& dtype_name = dtype_it->get_ref<const std::string&>();
  const std::optional<DType> dtype = DTypeFromString(dtype_name);
  if (!dtype) return error(Err("unknown dtype '{}'", dtype_name));
  entry.info.dtype = *dtype;

  const auto shape_it = value.find("shape");
  if (shape_it == value.end()) return error(Err("missing 'shape'"));
  if (!shape_it->is_array())
    return error(Err("'shape' must be an array of integers, not {}", shape_it->type_name()));
  for (const json& dim : *shape_it) {
    if (!dim.is_number_integer())
      return error(Err("'shape' must be an array of integers, but has a {}", dim.type_name()));
    if (dim.is_number_unsigned() && dim.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      return error(Err("dimension {} in shape overflows 64 bits", dim.get<uint64_t>()));
    entry.info.shape.push_back(dim.get<int64_t>());
  }
  auto size = CheckedSize(entry.info.shape, entry.info.dtype);
  if (!size.ok()) return error(size.status());

  const auto offsets_it = value.find("data_offsets");
  if (offsets_it == value.end()) return error(Err("missing 'data_offsets'"));
  const json& offsets = *offsets_it;
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    return error(Err("'data_offsets' must be [begin, end] of non-negative integers, not {}",
                     offsets.dump()));
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  if (entry.end < entry.begin)
    return error(
        Err("data_offsets [{}, {}) are out of order (end before begin)", entry.begin, entry.end));
  entry.info.nbytes = entry.end - entry.begin;
  if (entry.info.nbytes != size->second)
    return error(Err("data_offsets [{}, {}) hold {} bytes but shape {} of {} needs {}", entry.begin,
                     entry.end, entry.info.nbytes, ShapeText(entry.info.shape),
                     DTypeName(entry.info.dtype), size->second));
  return entry;
}

struct ParsedHeader {
  std::vector<Entry> entries;  // sorted by offset
  std::map<std::string, std::string> metadata;
};

Result<ParsedHeader> ParseHeader(std::string_view text, uint64_t data_size) {
  DSV3_ASSIGN_OR_RETURN(json header, ParseHeaderJson(text));
  if (!header.is_object()) return Err("header must be a JSON object, not {}", header.type_name());
  ParsedHeader parsed;
  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object())
        return Err("'{}' must be an object of strings, not {}", kMetadataKey, value.type_name());
      for (const auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string())
          return Err("'{}' must map strings to strings, but '{}' is a {}", kMetadataKey, meta_key,
                     meta_value.type_name());
        parsed.metadata[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    DSV3_ASSIGN_OR_RETURN(Entry entry, ParseEntry(key, value));
    parsed.entries.push_back(std::move(entry));
  }

  // As in the reference implementation, the tensors must tile the data section exactly: no
  // overlaps (two names aliasing the same bytes) and no gaps (bytes nobody accounts for).
  std::stable_sort(parsed.entries.begin(), parsed.entries.end(),
                   [](const Entry& a, const Entry& b) {
                     return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
                   });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry& entry : parsed.entries) {
    const std::string& name = entry.info.name;
    if (entry.end > data_size)
      return Err(
          "tensor '{}': data_offsets [{}, {}) run past the end of the file (the data "
          "section has {} bytes)",
          name, entry.begin, entry.end, data_size);
    if (entry.begin < covered)
      return Err("tensor '{}': data_offsets [{}, {}) overlap the previous tensor '{}' [{}, {})",
                 name, entry.begin, entry.end, previous->info.name, previous->begin, previous->end);
    if (entry.begin > covered) {
      if (previous == nullptr)
        return Err(
            "tensor '{}': data_offsets [{}, {}) leave a gap of {} bytes at the start of the "
            "data section",
            name, entry.begin, entry.end, entry.begin);
      return Err("tensor '{}': data_offsets [{}, {}) leave a gap of {} bytes after tensor '{}'",
                 name, entry.begin, entry.end, entry.begin - covered, previous->info.name);
    }
    covered = entry.end;
    previous = &entry;
  }
  if (covered != data_size)
    return Err(
        "the data section has {} bytes but the tensors cover only {}: a gap of {} bytes at "
        "the end",
        data_size, covered, data_size - covered);
  return parsed;
}

// Shard names come from a file we did not write: they must stay inside the checkpoint directory.
// This is a lexical check on purpose: the Hugging Face cache stores shards as symlinks into a
// blobs/ directory outside the snapshot, and those must keep working.
Result<fs::path> CheckShardName(const std::string& shard, const std::string& tensor) {
  const fs::path path(shard);
  if (shard.empty()) return Err("weight_map gives an empty shard name for tensor '{}'", tensor);
  if (path.is_absolute() || path.has_root_directory() || path.has_root_name())
    return Err(
        "shard '{}' (for tensor '{}') is an absolute path; it must be relative to the "
        "checkpoint directory",
        shard, tensor);
  for (const fs::path& part : path) {
    if (part == "..")
      return Err(
          "shard '{}' (for tensor '{}') contains '..' and could point outside the checkpoint "
          "directory",
          shard, tensor);
  }
  fs::path normal = path.lexically_normal();
  if (normal.empty() || normal == "." || !normal.has_filename())
    return Err("shard '{}' (for tensor '{}') does not name a file", shard, tensor);
  return normal;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t dim : shape) n *= dim;  // validated not to overflow at Open()
  return n;
}

std::string TensorInfo::ShapeString() const {
  return ShapeText(shape);
}

Result<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path,
                                                               LoadMode mode, ThreadPool* pool) {
  try {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return Err("{}: cannot open: {}", path, ErrnoText(errno));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return Err("{}: cannot stat: {}", path, ErrnoText(errno));
    if (!S_ISREG(st.st_mode)) return Err("{}: not a regular file", path);
    const auto file_size = static_cast<uint64_t>(st.st_size);
    if (file_size < 8)
      return Err("{}: file is truncated: {} bytes, too short for the 8-byte header length", path,
                 file_size);

    uint8_t length_bytes[8];
    DSV3_RETURN_IF_ERROR(PreadAll(fd.get(), 0, length_bytes, 8).WithContext(path));
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = header_size << 8 | length_bytes[i];
    if (header_size > kMaxHeaderBytes)
      return Err("{}: header length {} exceeds the limit of {} bytes", path, header_size,
                 kMaxHeaderBytes);
    if (header_size > file_size - 8)
      return Err("{}: header length {} runs past the end of the file ({} bytes)", path, header_size,
                 file_size);
    std::string header_text(header_size, '\0');
    DSV3_RETURN_IF_ERROR(
        PreadAll(fd.get(), 8, header_text.data(), header_text.size()).WithContext(path));
    const uint64_t data_start = 8 + header_size;
    const uint64_t data_size = file_size - data_start;
    auto parsed = ParseHeader(header_text, data_size);
    if (!parsed.ok()) return parsed.status().WithContext(path);

    std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
    file->path_ = path;
    const uint8_t* data = nullptr;
    if (mode == LoadMode::kMmap) {
      void* mapping = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
      if (mapping == MAP_FAILED) return Err("{}: mmap failed: {}", path, ErrnoText(errno));
      file->mapping_ = mapping;
      file->mapping_size_ = file_size;
      data = static_cast<const uint8_t*>(mapping) + data_start;
    } else if (data_size > 0) {
      file->buffer_ = AllocateLargeBuffer(data_size);
      if (!file->buffer_) return Err("{}: cannot allocate {} bytes", path, data_size);
      DSV3_RETURN_IF_ERROR(
          ReadData(fd.get(), data_start, file->buffer_.get(), data_size, pool).WithContext(path));
      data = file->buffer_.get();
    }

    file->metadata_ = std::move(parsed->metadata);
    file->tensors_.reserve(parsed->entries.size());
    for (Entry& entry : parsed->entries) {
      entry.info.data = data != nullptr ? data + entry.begin : nullptr;
      entry.info.file = path;
      file->index_.emplace(entry.info.name, file->tensors_.size());
      file->tensors_.push_back(std::move(entry.info));
    }
    return file;
  } catch (const std::exception& e) {
    return Err("{}: {}", path, e.what());
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_size_);
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Result<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir, LoadMode mode,
                                                     ThreadPool* pool) {
  try {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return Err("{}: not a directory", dir);
    auto checkpoint = std::make_unique<Checkpoint>();
    checkpoint->dir_ = dir;
    auto add_file = [&](std::unique_ptr<SafetensorsFile> file) -> Status {
      for (const TensorInfo& tensor : file->tensors()) {
        auto [it, inserted] = checkpoint->tensors_.emplace(tensor.name, &tensor);
        if (!inserted)
          return Err("{}: tensor '{}' is in both {} and {}", dir, tensor.name, it->second->file,
                     tensor.file);
      }
      checkpoint->files_.push_back(std::move(file));
      return Status::Ok();
    };

    const fs::path root(dir);
    const std::string index_path = (root / kIndexName).string();
    if (fs::exists(index_path, ec)) {
      DSV3_ASSIGN_OR_RETURN(json index, ReadJsonFile(index_path));
      auto error = [&](const Status& status) { return status.WithContext(index_path); };
      if (!index.is_object())
        return error(Err("index must be a JSON object, not {}", index.type_name()));
      const auto map_it = index.find("weight_map");
      if (map_it == index.end()) return error(Err("missing 'weight_map'"));
      if (!map_it->is_object())
        return error(Err("'weight_map' must be an object, not {}", map_it->type_name()));
      // Shard (normalised, so "./a" and "a" are one file) -> the tensors the index puts there.
      std::map<fs::path, std::vector<std::string>> shards;
      for (const auto& [tensor, shard] : map_it->items()) {
        if (!shard.is_string())
          return error(Err("weight_map value for tensor '{}' must be a file name string, not {}",
                           tensor, shard.type_name()));
        auto shard_path = CheckShardName(shard.get<std::string>(), tensor);
        if (!shard_path.ok()) return error(shard_path.status());
        shards[*shard_path].push_back(tensor);
      }
      for (const auto& [shard, names] : shards) {
        const fs::path shard_path = root / shard;
        if (!fs::exists(shard_path, ec))
          return error(Err("shard file '{}' (holding tensor '{}') does not exist in {}",
                           shard.string(), names.front(), dir));
        DSV3_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(shard_path.string(), mode, pool));
        for (const std::string& name : names) {
          if (file->Find(name) == nullptr)
            return error(Err("tensor '{}' is mapped to shard '{}', which does not contain it", name,
                             shard.string()));
        }
        DSV3_RETURN_IF_ERROR(add_file(std::move(file)));
      }
      return checkpoint;
    }

    const std::string single_path = (root / kSingleName).string();
    if (!fs::exists(single_path, ec)) return Err("{}: no {} or {}", dir, kSingleName, kIndexName);
    DSV3_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single_path, mode, pool));
    DSV3_RETURN_IF_ERROR(add_file(std::move(file)));
    return checkpoint;
  } catch (const std::exception& e) {
    return Err("{}: {}", dir, e.what());
  }
}

const TensorInfo* Checkpoint::Find(std::string_view name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, tensor] : tensors_) names.push_back(name);
  return names;
}

size_t Checkpoint::TotalBytes() const {
  size_t total = 0;
  for (const auto& [name, tensor] : tensors_) total += tensor->nbytes;
  return total;
}

Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  try {
    // ordered_json keeps the header in the order the tensors are laid out, which is easier to
    // read; __metadata__ first, as the reference writer does.
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    meta["format"] = "pt";
    for (const auto& [key, value] : metadata) meta[key] = value;
    header[kMetadataKey] = std::move(meta);

    std::vector<std::string_view> chunks(1);  // [0] becomes the length and header
    std::set<std::string_view> names;
    uint64_t offset = 0;
    // Larger elements first (stable otherwise): with the 8-byte aligned data section every
    // tensor then starts at a multiple of its element size, so kernels may read it as typed
    // arrays. The safetensors reference writer orders tensors the same way.
    std::vector<const TensorToWrite*> order;
    for (const TensorToWrite& tensor : tensors) order.push_back(&tensor);
    std::stable_sort(order.begin(), order.end(),
                     [](const TensorToWrite* a, const TensorToWrite* b) {
                       return DTypeSize(a->dtype) > DTypeSize(b->dtype);
                     });
    for (const TensorToWrite* tensor_ptr : order) {
      const TensorToWrite& tensor = *tensor_ptr;
      auto error = [&](const Status& status) {
        return status.WithContext(fmt::format("{}: tensor '{}'", path, tensor.name));
      };
      if (tensor.name == kMetadataKey) return error(Err("this name is reserved"));
      if (!names.insert(tensor.name).second) return error(Err("duplicate tensor name"));
      if (DTypeSize(tensor.dtype) == 0) return error(Err("invalid dtype"));
      auto size = CheckedSize(tensor.shape, tensor.dtype);
      if (!size.ok()) return error(size.status());
      if (size->second != tensor.nbytes)
        return error(Err("{} bytes given but shape {} of {} needs {}", tensor.nbytes,
                         ShapeText(tensor.shape), DTypeName(tensor.dtype), size->second));
      if (tensor.nbytes > 0 && tensor.data == nullptr) return error(Err("no data"));
      nlohmann::ordered_json entry = nlohmann::ordered_json::object();
      entry["dtype"] = std::string(DTypeName(tensor.dtype));
      entry["shape"] = tensor.shape;
      entry["data_offsets"] = nlohmann::ordered_json::array({offset, offset + tensor.nbytes});
      header[tensor.name] = std::move(entry);
      offset += tensor.nbytes;
      if (tensor.nbytes > 0)
        chunks.emplace_back(static_cast<const char*>(tensor.data), tensor.nbytes);
    }

    std::string text = header.dump();
    // Padding to 8 keeps the data section, and with it every 8-byte tensor, 8-byte aligned.
    text.append((8 - text.size() % 8) % 8, ' ');
    if (text.size() > kMaxHeaderBytes)
      return Err("{}: header of {} bytes exceeds the limit of {}", path, text.size(),
                 kMaxHeaderBytes);
    std::string preamble(8, '\0');
    for (int i = 0; i < 8; ++i) preamble[i] = static_cast<char>(text.size() >> (8 * i));
    preamble += text;
    chunks[0] = preamble;
    return WriteFileAtomicChunks(path, chunks);
  } catch (const std::exception& e) {
    return Err("{}: {}", path, e.what());
  }
}

Status WriteCheckpoint(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                       int num_shards) {
  try {
    if (num_shards < 1) return Err("{}: num_shards must be at least 1, got {}", dir, num_shards);
    const auto shard_count = static_cast<size_t>(num_shards);
    if (shard_count > 1 && shard_count > tensors.size())
      return Err("{}: cannot split {} tensors into {} non-empty shards", dir, tensors.size(),
                 num_shards);
    // Shards check their own names; a name repeated across shards must be caught before writing.
    std::set<std::string_view> names;
    for (const TensorToWrite& tensor : tensors) {
      if (!names.insert(tensor.name).second)
        return Err("{}: duplicate tensor name '{}'", dir, tensor.name);
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return Err("{}: cannot create directory: {}", dir, ec.message());
    const fs::path root(dir);
    const std::string index_path = (root / kIndexName).string();
    const std::string single_path = (root / kSingleName).string();

    // A stale file of the other layout would be picked up by readers (ours prefers the index,
    // transformers prefers model.safetensors), so the one not written is removed.
    auto remove_stale = [&](const std::string& path) -> Status {
      fs::remove(path, ec);
      if (ec) return Err("{}: cannot remove stale file: {}", path, ec.message());
      return Status::Ok();
    };
    // The bytes of a run of tensors, produced where a tensor has a producer instead of data.
    std::vector<std::vector<uint8_t>> produced;
    auto materialize = [&](std::vector<TensorToWrite>* part) -> Status {
      produced.clear();
      produced.reserve(part->size());
      for (TensorToWrite& tensor : *part) {
        if (!tensor.produce) continue;
        produced.emplace_back();
        DSV3_RETURN_IF_ERROR(
            tensor.produce(&produced.back()).WithContext(fmt::format("tensor '{}'", tensor.name)));
        if (produced.back().size() != tensor.nbytes)
          return Err("{}: tensor '{}': {} bytes produced, {} declared", dir, tensor.name,
                     produced.back().size(), tensor.nbytes);
        tensor.data = produced.back().data();
      }
      return Status::Ok();
    };
    if (shard_count == 1) {
      std::vector<TensorToWrite> all = tensors;
      DSV3_RETURN_IF_ERROR(materialize(&all));
      DSV3_RETURN_IF_ERROR(WriteSafetensors(single_path, all));
      return remove_stale(index_path);
    }

    // A failure part-way (a producer's error, a full disk) must not leave an older index or single
    // file that would load the new shards mixed with old ones: both go before the first shard.
    DSV3_RETURN_IF_ERROR(remove_stale(index_path));
    DSV3_RETURN_IF_ERROR(remove_stale(single_path));
    uint64_t remaining = 0;
    for (const TensorToWrite& tensor : tensors) remaining += tensor.nbytes;
    const uint64_t total_size = remaining;
    json weight_map = json::object();
    size_t next = 0;
    for (size_t shard = 0; shard < shard_count; ++shard) {
      // Greedy on contiguous runs: each shard aims at an equal share of what is left, takes a
      // tensor when that brings it closer to the share, and leaves one tensor per later shard.
      const size_t shards_left = shard_count - shard;
      const uint64_t target = remaining / shards_left;
      const size_t first = next;
      uint64_t bytes = 0;
      while (next < tensors.size() - (shards_left - 1)) {
        const uint64_t size = tensors[next].nbytes;
        if (shards_left > 1 && next > first && bytes + size / 2 > target) break;
        bytes += size;
        ++next;
      }
      remaining -= bytes;
      const std::string name =
          fmt::format("model-{:05d}-of-{:05d}.safetensors", shard + 1, shard_count);
      std::vector<TensorToWrite> part(tensors.begin() + static_cast<ptrdiff_t>(first),
                                      tensors.begin() + static_cast<ptrdiff_t>(next));
      for (const TensorToWrite& tensor : part) weight_map[tensor.name] = name;
      DSV3_RETURN_IF_ERROR(materialize(&part));
      DSV3_RETURN_IF_ERROR(WriteSafetensors((root / name).string(), part));
    }
    json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
    DSV3_RETURN_IF_ERROR(WriteFileAtomic(index_path, index.dump(2) + "\n"));
    return remove_stale(single_path);
  } catch (const std::exception& e) {
    return Err("{}: {}", dir, e.what());
  }
}

}  // namespace dsv3::io
