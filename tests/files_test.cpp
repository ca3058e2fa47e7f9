#include "io/files.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_util.h"

namespace dsv3::io {
namespace {

namespace fs = std::filesystem;
using dsv3::testing::TempDir;

void WriteBytes(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

size_t EntriesIn(const std::string& dir) {
  return static_cast<size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

::testing::AssertionResult Mentions(const Status& status, std::string_view a, std::string_view b) {
  if (status.ok()) return ::testing::AssertionFailure() << "expected an error, got ok";
  const std::string& message = status.message();
  if (message.find(a) == std::string::npos || message.find(b) == std::string::npos)
    return ::testing::AssertionFailure()
           << "error \"" << message << "\" does not mention \"" << a << "\" and \"" << b << "\"";
  return ::testing::AssertionSuccess();
}

TEST(ReadFile, ReadsBinaryContent) {
  TempDir dir;
  const std::string content("a\0b\xff\n", 5);
  WriteBytes(dir / "f", content);
  auto read = ReadFile(dir / "f");
  ASSERT_TRUE(read.ok()) << read.status().message();
  EXPECT_EQ(*read, content);
}

TEST(ReadFile, MissingFileNamesIt) {
  TempDir dir;
  EXPECT_TRUE(Mentions(ReadFile(dir / "nope").status(), dir / "nope", "cannot open"));
}

TEST(WriteFileAtomic, CreatesAndReplaces) {
  TempDir dir;
  const std::string path = dir / "out.txt";
  ASSERT_TRUE(WriteFileAtomic(path, "first").ok());
  EXPECT_EQ(ReadBytes(path), "first");
  ASSERT_TRUE(WriteFileAtomic(path, "second, longer").ok());
  EXPECT_EQ(ReadBytes(path), "second, longer");
  ASSERT_TRUE(WriteFileAtomic(path, "").ok());
  EXPECT_EQ(ReadBytes(path), "");
  EXPECT_EQ(EntriesIn(dir.path()), 1u);  // no temp files left behind
}

TEST(WriteFileAtomic, ChunksAreConcatenated) {
  TempDir dir;
  const std::string path = dir / "out.bin";
  ASSERT_TRUE(WriteFileAtomicChunks(path, {"ab", "", std::string_view("c\0d", 3)}).ok());
  EXPECT_EQ(ReadBytes(path), std::string("abc\0d", 5));
}

TEST(WriteFileAtomic, ParentIsARegularFile) {
  TempDir dir;
  const std::string parent = dir / "parent";
  WriteBytes(parent, "previous content");
  const std::string path = parent + "/child";
  EXPECT_TRUE(Mentions(WriteFileAtomic(path, "new"), path, "cannot create temporary file"));
  EXPECT_EQ(ReadBytes(parent), "previous content");
  EXPECT_EQ(EntriesIn(dir.path()), 1u);
}

TEST(WriteFileAtomic, MissingDirectory) {
  TempDir dir;
  const std::string path = dir / "no/such/dir/file";
  EXPECT_TRUE(Mentions(WriteFileAtomic(path, "x"), path, "No such file or directory"));
}

TEST(WriteFileAtomic, FailedRenameRemovesTempAndKeepsTarget) {
  TempDir dir;
  // A non-empty directory at the target makes the final rename fail after the data is written.
  const std::string path = dir / "target";
  fs::create_directories(path);
  WriteBytes(path + "/keep", "previous content");
  EXPECT_TRUE(Mentions(WriteFileAtomic(path, "new"), path, "cannot rename"));
  EXPECT_EQ(ReadBytes(path + "/keep"), "previous content");
  EXPECT_EQ(EntriesIn(dir.path()), 1u);
}

TEST(WriteFileAtomic, RelativePathInCurrentDirectory) {
  TempDir dir;
  const fs::path old_cwd = fs::current_path();
  fs::current_path(dir.path());
  const Status status = WriteFileAtomic("relative.txt", "x");
  fs::current_path(old_cwd);
  ASSERT_TRUE(status.ok()) << status.message();
  EXPECT_EQ(ReadBytes(dir / "relative.txt"), "x");
}

TEST(ReadJsonFile, Parses) {
  TempDir dir;
  WriteBytes(dir / "a.json", R"({"x": [1, 2], "y": "z"})");
  auto json = ReadJsonFile(dir / "a.json");
  ASSERT_TRUE(json.ok()) << json.status().message();
  EXPECT_EQ((*json)["x"][1], 2);
  EXPECT_EQ((*json)["y"], "z");
}

TEST(ReadJsonFile, InvalidJsonNamesFileAndPosition) {
  TempDir dir;
  WriteBytes(dir / "bad.json", "{\"x\": [1, 2}");
  auto json = ReadJsonFile(dir / "bad.json");
  EXPECT_TRUE(Mentions(json.status(), dir / "bad.json", "parse error at line 1, column 12"));
}

TEST(ReadJsonFile, MissingFile) {
  TempDir dir;
  EXPECT_TRUE(Mentions(ReadJsonFile(dir / "none.json").status(), dir / "none.json", "cannot open"));
}

// The bytes numpy writes for a float32 array, to compare with exactly.
std::string NpyPreamble(std::string_view dict) {
  std::string header(dict);
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += '\x01';
  bytes += '\x00';
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  return bytes + header;
}

std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

TEST(Npy, WritesNumpyV1Layout) {
  TempDir dir;
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  ASSERT_TRUE(WriteNpyF32(dir / "a.npy", values.data(), {2, 3}).ok());
  const std::string bytes = ReadBytes(dir / "a.npy");
  const std::string expected =
      NpyPreamble("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
  EXPECT_EQ(expected.size() % 64, 0u);
  EXPECT_EQ(bytes, expected + FloatBytes(values));

  ASSERT_TRUE(WriteNpyF32(dir / "b.npy", values.data(), {6}).ok());
  EXPECT_EQ(ReadBytes(dir / "b.npy"),
            NpyPreamble("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }") +
                FloatBytes(values));
}

TEST(Npy, RoundTripsShapes) {
  TempDir dir;
  const std::vector<std::vector<int64_t>> shapes = {{}, {5}, {2, 3}, {2, 1, 3}, {0}, {3, 0, 2}};
  for (const auto& shape : shapes) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    std::vector<float> values(static_cast<size_t>(count));
    for (size_t i = 0; i < values.size(); ++i) values[i] = 0.5f * static_cast<float>(i) - 1.0f;
    const std::string path = dir / "r.npy";
    ASSERT_TRUE(WriteNpyF32(path, values.data(), shape).ok());
    EXPECT_EQ(ReadBytes(path).find('\n') % 64, 63u);  // data starts on a 64-byte boundary
    auto array = ReadNpyF32(path);
    ASSERT_TRUE(array.ok()) << array.status().message();
    EXPECT_EQ(array->shape, shape);
    EXPECT_EQ(array->data, values);
  }
}

TEST(Npy, WriteRejectsNegativeDims) {
  TempDir dir;
  const float x = 0;
  EXPECT_TRUE(Mentions(WriteNpyF32(dir / "n.npy", &x, {2, -1}), dir / "n.npy", "negative"));
  EXPECT_FALSE(fs::exists(dir / "n.npy"));
}

TEST(Npy, ReadsVersion2AndNumpyStyleSpacing) {
  TempDir dir;
  std::string header = "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}";
  header.append((64 - (12 + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += '\x02';
  bytes += '\x00';
  for (int i = 0; i < 4; ++i) bytes += static_cast<char>(header.size() >> (8 * i));
  bytes += header + FloatBytes({1.5f, -2.0f});
  WriteBytes(dir / "v2.npy", bytes);
  auto array = ReadNpyF32(dir / "v2.npy");
  ASSERT_TRUE(array.ok()) << array.status().message();
  EXPECT_EQ(array->shape, std::vector<int64_t>{2});
  EXPECT_EQ(array->data, (std::vector<float>{1.5f, -2.0f}));
}

void ExpectNpyRejected(std::string_view bytes, std::string_view problem) {
  TempDir dir;
  const std::string path = dir / "bad.npy";
  WriteBytes(path, bytes);
  EXPECT_TRUE(Mentions(ReadNpyF32(path).status(), path, problem));
}

TEST(Npy, RejectsOtherDtypes) {
  ExpectNpyRejected(NpyPreamble("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }") +
                        std::string(8, '\0'),
                    "dtype '<f8' is not supported");
  ExpectNpyRejected(NpyPreamble("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }") +
                        std::string(4, '\0'),
                    "dtype '>f4' is not supported");
}

TEST(Npy, RejectsFortranOrder) {
  ExpectNpyRejected(NpyPreamble("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }") +
                        std::string(16, '\0'),
                    "Fortran-order");
}

TEST(Npy, RejectsBadMagicAndVersion) {
  ExpectNpyRejected("PK\x03\x04 not numpy", "bad magic");
  std::string bytes = NpyPreamble("{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
  bytes[6] = '\x04';
  ExpectNpyRejected(bytes + std::string(4, '\0'), "unsupported .npy version 4.0");
}

TEST(Npy, RejectsWrongDataSize) {
  const std::string preamble =
      NpyPreamble("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }");
  ExpectNpyRejected(preamble + std::string(12, '\0'), "12 bytes of data");
  ExpectNpyRejected(preamble + std::string(20, '\0'), "expected 16");
}

TEST(Npy, RejectsMalformedHeaders) {
  ExpectNpyRejected(NpyPreamble("{'descr': '<f4', 'shape': (1,), }"), "lacks");
  ExpectNpyRejected(NpyPreamble("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }"),
                    "non-negative integer");
  ExpectNpyRejected(
      NpyPreamble("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1, }"),
      "unexpected key 'extra'");
  ExpectNpyRejected(
      NpyPreamble("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }"),
      "overflows");
  std::string truncated = NpyPreamble("{'descr': '<f4', 'fortran_order': False, 'shape': (), }");
  truncated.resize(40);
  ExpectNpyRejected(truncated, "runs past the end of the file");
}

}  // namespace
}  // namespace dsv3::io
