#include "io/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

namespace dsv3::io {

namespace {

std::string ErrnoText(int err) {
  return std::error_code(err, std::generic_category()).message();
}

// Closes a descriptor on every exit path; Release() hands over ownership for an explicit close
// whose error must be checked.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

Status WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    // Linux writes at most ~2 GiB per call; larger requests just come back short.
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Err("write failed: {}", ErrnoText(errno));
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FsyncDirectory(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return Err("cannot open directory {} to sync it: {}", dir, ErrnoText(errno));
  if (::fsync(fd.get()) != 0) return Err("fsync of directory {} failed: {}", dir, ErrnoText(errno));
  return Status::Ok();
}

// A name nobody else is using right now; O_EXCL at creation settles any collision.
std::string TempName(const std::string& path, int attempt) {
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
  return fmt::format("{}.tmp-{}-{:x}-{}", path, ::getpid(), static_cast<uint64_t>(ticks), attempt);
}

// Python-literal parsing of the .npy header dict, just enough for what numpy writes.
class NpyHeaderParser {
 public:
  explicit NpyHeaderParser(std::string_view text) : text_(text) {}

  struct Header {
    std::string descr;
    bool fortran_order = false;
    std::vector<int64_t> shape;
  };

  Result<Header> Parse() {
    Header header;
    bool have_descr = false, have_order = false, have_shape = false;
    if (!Consume('{')) return Err("header does not start with '{{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      DSV3_ASSIGN_OR_RETURN(std::string key, ParseString());
      if (!Consume(':')) return Err("expected ':' after '{}' in header", key);
      if (key == "descr") {
        DSV3_ASSIGN_OR_RETURN(header.descr, ParseString());
        have_descr = true;
      } else if (key == "fortran_order") {
        DSV3_ASSIGN_OR_RETURN(header.fortran_order, ParseBool());
        have_order = true;
      } else if (key == "shape") {
        DSV3_ASSIGN_OR_RETURN(header.shape, ParseShape());
        have_shape = true;
      } else {
        return Err("unexpected key '{}' in header", key);
      }
      if (!Consume(',')) {
        if (!Consume('}')) return Err("expected ',' or '}}' in header");
        break;
      }
    }
    SkipSpace();
    if (pos_ != text_.size()) return Err("unexpected text after the header dict");
    if (!have_descr || !have_order || !have_shape)
      return Err("header lacks one of 'descr', 'fortran_order', 'shape'");
    return header;
  }

 private:
  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n')) ++pos_;
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  Result<std::string> ParseString() {
    SkipSpace();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"'))
      return Err("expected a quoted string in header at offset {}", pos_);
    const char quote = text_[pos_++];
    const size_t end = text_.find(quote, pos_);
    if (end == std::string_view::npos) return Err("unterminated string in header");
    std::string value(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return value;
  }
  Result<bool> ParseBool() {
    SkipSpace();
    for (auto [word, value] : {std::pair{"True", true}, std::pair{"False", false}}) {
      if (text_.substr(pos_).starts_with(word)) {
        pos_ += std::strlen(word);
        return value;
      }
    }
    return Err("expected True or False for 'fortran_order'");
  }
  Result<std::vector<int64_t>> ParseShape() {
    std::vector<int64_t> shape;
    if (!Consume('(')) return Err("expected '(' for 'shape'");
    while (true) {
      SkipSpace();
      if (Consume(')')) break;
      if (pos_ >= text_.size() || text_[pos_] < '0' || text_[pos_] > '9')
        return Err("expected a non-negative integer in 'shape'");
      int64_t dim = 0;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
        if (__builtin_mul_overflow(dim, 10, &dim) ||
            __builtin_add_overflow(dim, text_[pos_] - '0', &dim))
          return Err("dimension in 'shape' overflows 64 bits");
        ++pos_;
      }
      shape.push_back(dim);
      if (!Consume(',')) {
        if (!Consume(')')) return Err("expected ',' or ')' in 'shape'");
        break;
      }
    }
    return shape;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

constexpr std::string_view kNpyMagic = "\x93NUMPY";

}  // namespace

Result<std::string> ReadFile(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Err("{}: cannot open: {}", path, ErrnoText(errno));
  struct stat st;
  std::string content;
  if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode)) {
    content.reserve(static_cast<size_t>(st.st_size));
  }
  // Read to EOF rather than trusting st_size, which is 0 for pipes and /proc files.
  char chunk[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd.get(), chunk, sizeof(chunk));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Err("{}: read failed: {}", path, ErrnoText(errno));
    }
    if (n == 0) break;
    content.append(chunk, static_cast<size_t>(n));
  }
  return content;
}

Status WriteFileAtomicChunks(const std::string& path, const std::vector<std::string_view>& chunks) {
  if (path.empty()) return Err("cannot write a file with an empty path");
  std::string dir = std::filesystem::path(path).parent_path().string();
  if (dir.empty()) dir = ".";

  std::string temp;
  int raw_fd = -1;
  for (int attempt = 0; attempt < 100 && raw_fd < 0; ++attempt) {
    temp = TempName(path, attempt);
    // 0666 lets the umask decide the final permissions, as for any newly created file.
    raw_fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (raw_fd < 0 && errno != EEXIST) break;
  }
  if (raw_fd < 0) return Err("{}: cannot create temporary file: {}", path, ErrnoText(errno));
  Fd fd(raw_fd);

  // Anything failing before the rename leaves the old file alone and removes the temp file.
  auto fail = [&](const Status& status) {
    if (fd.get() >= 0) ::close(fd.Release());
    ::unlink(temp.c_str());
    return status.WithContext(path);
  };
  for (std::string_view chunk : chunks) {
    Status status = WriteAll(fd.get(), chunk.data(), chunk.size());
    if (!status.ok()) return fail(status);
  }
  if (::fsync(fd.get()) != 0) return fail(Err("fsync failed: {}", ErrnoText(errno)));
  // close() can report deferred write errors (NFS), so it is checked too.
  if (::close(fd.Release()) != 0) return fail(Err("close failed: {}", ErrnoText(errno)));
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    return fail(Err("cannot rename {} over it: {}", temp, ErrnoText(errno)));
  }
  return FsyncDirectory(dir).WithContext(path);
}

Status WriteFileAtomic(const std::string& path, std::string_view content) {
  return WriteFileAtomicChunks(path, {content});
}

Result<nlohmann::json> ReadJsonFile(const std::string& path) {
  DSV3_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return Err("{}: invalid JSON: {}", path, e.what());
  }
}

Status WriteNpyF32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  static_assert(std::endian::native == std::endian::little, "'<f4' is written from memory as is");
  uint64_t count = 1;
  std::string shape_text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) return Err("{}: negative dimension {} in shape", path, shape[i]);
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(shape[i]), &count) ||
        count > SIZE_MAX / sizeof(float))
      return Err("{}: shape has too many elements", path);
    shape_text += (i == 0 ? "" : ", ") + std::to_string(shape[i]);
  }
  shape_text += shape.size() == 1 ? ",)" : ")";
  if (count > 0 && data == nullptr) return Err("{}: no data for a non-empty array", path);

  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape_text + ", }";
  // numpy pads with spaces so that the data starts on a 64-byte boundary; the header ends in \n.
  const size_t prefix = kNpyMagic.size() + 2 + 2;  // magic, version, uint16 length
  const size_t unpadded = prefix + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  if (header.size() > UINT16_MAX) return Err("{}: shape too long for a version 1.0 header", path);
  std::string preamble(kNpyMagic);
  preamble += '\x01';
  preamble += '\x00';
  preamble += static_cast<char>(header.size() & 0xff);
  preamble += static_cast<char>(header.size() >> 8);
  preamble += header;
  const std::string_view body(reinterpret_cast<const char*>(data), count * sizeof(float));
  return WriteFileAtomicChunks(path, {preamble, count == 0 ? std::string_view() : body});
}

Result<NpyArray> ReadNpyF32(const std::string& path) {
  DSV3_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  auto error = [&](const Status& status) { return status.WithContext(path); };
  if (bytes.size() < kNpyMagic.size() + 2 || !std::string_view(bytes).starts_with(kNpyMagic))
    return error(Err("not a .npy file (bad magic)"));
  const auto major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  const auto byte_at = [&](size_t i) {
    return static_cast<size_t>(static_cast<uint8_t>(bytes[i]));
  };
  if (major == 1) {
    if (bytes.size() < 10) return error(Err("truncated .npy preamble"));
    header_len = byte_at(8) | byte_at(9) << 8;
    header_start = 10;
  } else if (major == 2 || major == 3) {  // 3.0 only changes the header encoding to UTF-8
    if (bytes.size() < 12) return error(Err("truncated .npy preamble"));
    header_len = byte_at(8) | byte_at(9) << 8 | byte_at(10) << 16 | byte_at(11) << 24;
    header_start = 12;
  } else {
    return error(Err("unsupported .npy version {}.{}", major, byte_at(7)));
  }
  if (header_len > bytes.size() - header_start)
    return error(Err("header length {} runs past the end of the file", header_len));
  NpyHeaderParser parser(std::string_view(bytes).substr(header_start, header_len));
  auto header = parser.Parse();
  if (!header.ok()) return error(header.status());
  if (header->descr != "<f4")
    return error(
        Err("dtype '{}' is not supported; only '<f4' (little-endian float32) is", header->descr));
  if (header->fortran_order)
    return error(Err("Fortran-order (column-major) arrays are not supported"));
  uint64_t count = 1;
  for (int64_t dim : header->shape) {
    if (__builtin_mul_overflow(count, static_cast<uint64_t>(dim), &count) ||
        count > SIZE_MAX / sizeof(float))
      return error(Err("shape has too many elements"));
  }
  const size_t data_start = header_start + header_len;
  const size_t expected = count * sizeof(float), found = bytes.size() - data_start;
  if (found != expected)
    return error(Err("{} bytes of data for a float32 array of {} elements, expected {}", found,
                     count, expected));
  NpyArray array;
  array.shape = std::move(header->shape);
  array.data.resize(count);
  if (count > 0) std::memcpy(array.data.data(), bytes.data() + data_start, expected);
  return array;
}

}  // namespace dsv3::io
