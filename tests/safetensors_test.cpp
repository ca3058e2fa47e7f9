#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/files.h"
#include "test_util.h"

namespace dsv3::io {
namespace {

namespace fs = std::filesystem;
using dsv3::testing::TempDir;

constexpr LoadMode kModes[] = {LoadMode::kMmap, LoadMode::kRead};

std::string Le64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(value >> (8 * i));
  return bytes;
}

// A safetensors file from a hand-written header and data section.
std::string Craft(std::string_view header, std::string_view data = "") {
  return Le64(header.size()) + std::string(header) + std::string(data);
}

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

::testing::AssertionResult Mentions(const Status& status, std::string_view a, std::string_view b) {
  if (status.ok()) return ::testing::AssertionFailure() << "expected an error, got ok";
  const std::string& message = status.message();
  if (message.find(a) == std::string::npos || message.find(b) == std::string::npos)
    return ::testing::AssertionFailure()
           << "error \"" << message << "\" does not mention \"" << a << "\" and \"" << b << "\"";
  return ::testing::AssertionSuccess();
}

// Both load modes must reject the bytes, naming the file and the specific problem.
void ExpectRejected(std::string_view bytes, std::string_view problem) {
  TempDir dir;
  const std::string path = dir / "model.safetensors";
  WriteBytes(path, bytes);
  for (LoadMode mode : kModes) {
    auto file = SafetensorsFile::Open(path, mode);
    ASSERT_FALSE(file.ok()) << "mode " << static_cast<int>(mode);
    EXPECT_TRUE(Mentions(file.status(), path, problem)) << "mode " << static_cast<int>(mode);
  }
}

// Header entry for a tensor, for crafting files by hand.
std::string Entry(std::string_view name, std::string_view dtype, std::string_view shape,
                  uint64_t begin, uint64_t end) {
  return fmt::format(R"("{}": {{"dtype": "{}", "shape": {}, "data_offsets": [{}, {}]}})", name,
                     dtype, shape, begin, end);
}

// A header object from entries; built by appending because GCC 12 warns (-Wrestrict, falsely) on
// "literal" + std::string chains.
std::string Header(std::initializer_list<std::string> entries) {
  std::string header = "{";
  for (const std::string& entry : entries) {
    if (header.size() > 1) header += ", ";
    header += entry;
  }
  header += "}";
  return header;
}

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> bytes(n);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  return bytes;
}

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
  TensorToWrite View() const { return {name, dtype, shape, bytes.data(), bytes.size()}; }
};

OwnedTensor MakeTensor(std::string name, DType dtype, std::vector<int64_t> shape, uint32_t seed) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  auto bytes = RandomBytes(static_cast<size_t>(numel) * DTypeSize(dtype), seed);
  return {std::move(name), dtype, std::move(shape), std::move(bytes)};
}

std::vector<TensorToWrite> Views(const std::vector<OwnedTensor>& tensors) {
  std::vector<TensorToWrite> views;
  for (const auto& t : tensors) views.push_back(t.View());
  return views;
}

void ExpectSame(const OwnedTensor& expected, const TensorInfo* actual) {
  ASSERT_NE(actual, nullptr) << expected.name;
  EXPECT_EQ(actual->name, expected.name);
  EXPECT_EQ(actual->dtype, expected.dtype) << expected.name;
  EXPECT_EQ(actual->shape, expected.shape) << expected.name;
  ASSERT_EQ(actual->nbytes, expected.bytes.size()) << expected.name;
  if (!expected.bytes.empty()) {
    EXPECT_EQ(std::memcmp(actual->data, expected.bytes.data(), actual->nbytes), 0) << expected.name;
  }
}

std::vector<OwnedTensor> AllDTypes() {
  // Sizes chosen so that offsets are not all multiples of 8 (odd byte counts in between).
  return {
      MakeTensor("f32", DType::kF32, {3, 5}, 1),     MakeTensor("f16", DType::kF16, {7}, 2),
      MakeTensor("bf16", DType::kBF16, {2, 3}, 3),   MakeTensor("fp8", DType::kF8E4M3, {5, 3}, 4),
      MakeTensor("i8", DType::kI8, {9}, 5),          MakeTensor("u8", DType::kU8, {1, 1, 3}, 6),
      MakeTensor("i32", DType::kI32, {4}, 7),        MakeTensor("i64", DType::kI64, {2, 2}, 8),
      MakeTensor("f64", DType::kF64, {3}, 9),        MakeTensor("scalar", DType::kF32, {}, 10),
      MakeTensor("empty", DType::kBF16, {0, 4}, 11),
  };
}

class SafetensorsModeTest : public ::testing::TestWithParam<LoadMode> {};

TEST_P(SafetensorsModeTest, RoundTripsEveryDType) {
  TempDir dir;
  const std::string path = dir / "all.safetensors";
  const auto tensors = AllDTypes();
  ASSERT_TRUE(WriteSafetensors(path, Views(tensors), {{"producer", "test"}}).ok());

  auto file = SafetensorsFile::Open(path, GetParam());
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_EQ((*file)->path(), path);
  ASSERT_EQ((*file)->tensors().size(), tensors.size());
  // File order: larger elements first, the given order otherwise, so every tensor is aligned
  // to its element size.
  std::vector<const OwnedTensor*> expected_order;
  for (const auto& t : tensors) expected_order.push_back(&t);
  std::stable_sort(expected_order.begin(), expected_order.end(),
                   [](auto* a, auto* b) { return DTypeSize(a->dtype) > DTypeSize(b->dtype); });
  for (size_t i = 0; i < tensors.size(); ++i) {
    ExpectSame(*expected_order[i], &(*file)->tensors()[i]);
    ExpectSame(tensors[i], (*file)->Find(tensors[i].name));
    EXPECT_EQ((*file)->tensors()[i].file, path);
    const auto address = reinterpret_cast<uintptr_t>((*file)->tensors()[i].data);
    if ((*file)->tensors()[i].nbytes > 0) {
      EXPECT_EQ(address % DTypeSize((*file)->tensors()[i].dtype), 0u) << tensors[i].name;
    }
  }
  EXPECT_EQ((*file)->Find("missing"), nullptr);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"producer", "test"}};
  EXPECT_EQ((*file)->metadata(), metadata);

  const TensorInfo* scalar = (*file)->Find("scalar");
  EXPECT_EQ(scalar->numel(), 1);
  EXPECT_EQ(scalar->ShapeString(), "[]");
  const TensorInfo* empty = (*file)->Find("empty");
  EXPECT_EQ(empty->numel(), 0);
  EXPECT_EQ(empty->ShapeString(), "[0, 4]");
  EXPECT_EQ((*file)->Find("f32")->ShapeString(), "[3, 5]");
}

TEST_P(SafetensorsModeTest, DataIsAlignedAsTheOffsetAllows) {
  TempDir dir;
  const std::string path = dir / "a.safetensors";
  const std::vector<OwnedTensor> tensors = {MakeTensor("a", DType::kF64, {16}, 1),
                                            MakeTensor("b", DType::kF32, {3}, 2)};
  ASSERT_TRUE(WriteSafetensors(path, Views(tensors)).ok());
  auto file = SafetensorsFile::Open(path, GetParam());
  ASSERT_TRUE(file.ok()) << file.status().message();
  const auto address = reinterpret_cast<uintptr_t>((*file)->Find("a")->data);
  // mmap: page + 8 + header padded to 8; read: 64-byte aligned buffer.
  EXPECT_EQ(address % (GetParam() == LoadMode::kRead ? 64 : 8), 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*file)->Find("b")->data) % 8, 0u);
}

TEST_P(SafetensorsModeTest, EmptyTensorSetIsValid) {
  TempDir dir;
  const std::string written = dir / "written.safetensors";
  ASSERT_TRUE(WriteSafetensors(written, {}).ok());
  auto file = SafetensorsFile::Open(written, GetParam());
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_TRUE((*file)->tensors().empty());

  const std::string crafted = dir / "crafted.safetensors";
  WriteBytes(crafted, Craft("{}"));
  file = SafetensorsFile::Open(crafted, GetParam());
  ASSERT_TRUE(file.ok()) << file.status().message();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_TRUE((*file)->metadata().empty());
}

TEST_P(SafetensorsModeTest, HandWrittenFileInAnyKeyOrderWithZeroSizeTensors) {
  TempDir dir;
  const std::string path = dir / "h.safetensors";
  // Keys sorted differently from offsets; zero-size tensors at the start, middle and end.
  const std::string header =
      Header({Entry("z", "U8", "[2]", 0, 2), Entry("a", "U8", "[3]", 2, 5),
              Entry("e0", "F32", "[0]", 0, 0), Entry("e1", "I64", "[4, 0]", 2, 2),
              Entry("e2", "F16", "[0]", 5, 5), R"("__metadata__": {"k": "v"})"}) +
      "   ";
  WriteBytes(path, Craft(header, "ABcde"));
  auto file = SafetensorsFile::Open(path, GetParam());
  ASSERT_TRUE(file.ok()) << file.status().message();
  std::vector<std::string> names;
  for (const auto& t : (*file)->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"e0", "z", "e1", "a", "e2"}));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*file)->Find("a")->data), 3), "cde");
  EXPECT_EQ((*file)->metadata().at("k"), "v");
}

INSTANTIATE_TEST_SUITE_P(BothModes, SafetensorsModeTest,
                         ::testing::Values(LoadMode::kMmap, LoadMode::kRead), [](const auto& info) {
                           return info.param == LoadMode::kMmap ? "Mmap" : "Read";
                         });

TEST(SafetensorsWrite, HeaderIsPaddedAndLargerElementsComeFirst) {
  TempDir dir;
  const std::string path = dir / "w.safetensors";
  const std::vector<OwnedTensor> tensors = {MakeTensor("zz", DType::kU8, {3}, 1),
                                            MakeTensor("aa", DType::kBF16, {1}, 2)};
  ASSERT_TRUE(WriteSafetensors(path, Views(tensors)).ok());
  const std::string bytes = ReadBytes(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = header_size << 8 | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(header_size % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + header_size + 5);
  const std::string header = bytes.substr(8, header_size);
  EXPECT_TRUE(header.starts_with(R"({"__metadata__":{"format":"pt"})")) << header;
  const auto json = nlohmann::json::parse(header);
  EXPECT_EQ(json["aa"]["data_offsets"], nlohmann::json::array({0, 2}));
  EXPECT_EQ(json["zz"]["data_offsets"], nlohmann::json::array({2, 5}));
  EXPECT_EQ(json["aa"]["dtype"], "BF16");
  EXPECT_EQ(json["zz"]["shape"], nlohmann::json::array({3}));
}

TEST(SafetensorsWrite, RejectsBadTensors) {
  TempDir dir;
  const std::string path = dir / "bad.safetensors";
  const uint8_t data[8] = {};
  const std::vector<std::pair<std::vector<TensorToWrite>, std::string>> cases = {
      {{{"a", DType::kF32, {2}, data, 4}}, "4 bytes given but shape [2] of F32 needs 8"},
      {{{"a", DType::kU8, {1}, data, 1}, {"a", DType::kU8, {1}, data, 1}}, "duplicate"},
      {{{"__metadata__", DType::kU8, {1}, data, 1}}, "reserved"},
      {{{"a", DType::kU8, {-1}, data, 1}}, "negative dimension"},
      {{{"a", DType::kU8, {4}, nullptr, 4}}, "no data"},
  };
  for (const auto& [tensors, problem] : cases) {
    EXPECT_TRUE(Mentions(WriteSafetensors(path, tensors), path, problem));
    EXPECT_FALSE(fs::exists(path));
  }
}

// --- Malformed files: one test per problem. ---

TEST(SafetensorsBad, EmptyFile) {
  ExpectRejected("", "truncated");
}
TEST(SafetensorsBad, ShorterThanLengthPrefix) {
  ExpectRejected("\x02\0\0", "truncated");
}

TEST(SafetensorsBad, HeaderLengthPastEof) {
  ExpectRejected(Le64(100) + "{}", "header length 100 runs past the end of the file");
}

TEST(SafetensorsBad, HeaderOverLimit) {
  ExpectRejected(Le64(kMaxHeaderBytes + 1) + "{}", "exceeds the limit of 100000000 bytes");
}

TEST(SafetensorsBad, InvalidJson) {
  ExpectRejected(Craft(R"({"a": )"), "invalid JSON header");
}
TEST(SafetensorsBad, InvalidUtf8) {
  ExpectRejected(Craft("{\"\xff\": 1}"), "invalid JSON header");
}
TEST(SafetensorsBad, EmptyHeader) {
  ExpectRejected(Craft(""), "invalid JSON header");
}

TEST(SafetensorsBad, HeaderNotAnObject) {
  ExpectRejected(Craft("[1, 2]"), "header must be a JSON object, not array");
}

TEST(SafetensorsBad, EntryNotAnObject) {
  ExpectRejected(Craft(R"({"x": 5})"), "tensor 'x': entry must be an object");
}

TEST(SafetensorsBad, MissingDtype) {
  ExpectRejected(Craft(R"({"x": {"shape": [1], "data_offsets": [0, 1]}})", "A"),
                 "tensor 'x': missing 'dtype'");
}

TEST(SafetensorsBad, MissingShape) {
  ExpectRejected(Craft(R"({"x": {"dtype": "U8", "data_offsets": [0, 1]}})", "A"),
                 "tensor 'x': missing 'shape'");
}

TEST(SafetensorsBad, MissingDataOffsets) {
  ExpectRejected(Craft(R"({"x": {"dtype": "U8", "shape": [1]}})", "A"),
                 "tensor 'x': missing 'data_offsets'");
}

TEST(SafetensorsBad, DtypeNotAString) {
  ExpectRejected(Craft(R"({"x": {"dtype": 1, "shape": [1], "data_offsets": [0, 1]}})", "A"),
                 "tensor 'x': 'dtype' must be a string, not number");
}

TEST(SafetensorsBad, ShapeNotAnArray) {
  ExpectRejected(Craft(Header({Entry("x", "U8", R"("1")", 0, 1)}), "A"),
                 "tensor 'x': 'shape' must be an array of integers, not string");
}

TEST(SafetensorsBad, ShapeElementNotAnInteger) {
  ExpectRejected(Craft(Header({Entry("x", "U8", "[1.0]", 0, 1)}), "A"),
                 "'shape' must be an array of integers, but has a number");
  ExpectRejected(Craft(Header({Entry("x", "U8", "[null]", 0, 1)}), "A"),
                 "'shape' must be an array of integers, but has a null");
}

TEST(SafetensorsBad, DataOffsetsWrongType) {
  for (const char* offsets : {"[0]", "[0, 1, 2]", R"([0, "1"])", "[0, 1.0]", R"("0,1")"}) {
    ExpectRejected(
        Craft(
            fmt::format(R"({{"x": {{"dtype": "U8", "shape": [1], "data_offsets": {}}}}})", offsets),
            "A"),
        "tensor 'x': 'data_offsets' must be [begin, end] of non-negative integers");
  }
}

TEST(SafetensorsBad, NegativeDataOffset) {
  ExpectRejected(Craft(R"({"x": {"dtype": "U8", "shape": [1], "data_offsets": [-1, 0]}})", "A"),
                 "'data_offsets' must be [begin, end] of non-negative integers, not [-1,0]");
}

TEST(SafetensorsBad, NegativeDimension) {
  ExpectRejected(Craft(Header({Entry("x", "U8", "[-1, 2]", 0, 0)})),
                 "tensor 'x': negative dimension -1 in shape [-1, 2]");
}

TEST(SafetensorsBad, OverlappingOffsets) {
  ExpectRejected(Craft(Header({Entry("a", "U8", "[8]", 0, 8), Entry("b", "U8", "[8]", 4, 12)}),
                       std::string(12, 'x')),
                 "tensor 'b': data_offsets [4, 12) overlap the previous tensor 'a' [0, 8)");
}

TEST(SafetensorsBad, SameOffsetsTwice) {
  ExpectRejected(
      Craft(Header({Entry("a", "U8", "[4]", 0, 4), Entry("b", "U8", "[4]", 0, 4)}), "xxxx"),
      "overlap the previous tensor 'a'");
}

TEST(SafetensorsBad, ZeroSizeTensorInsideAnother) {
  ExpectRejected(
      Craft(Header({Entry("a", "U8", "[4]", 0, 4), Entry("b", "U8", "[0]", 2, 2)}), "xxxx"),
      "overlap the previous tensor 'a'");
}

TEST(SafetensorsBad, OffsetsOutOfOrder) {
  ExpectRejected(Craft(Header({Entry("a", "U8", "[4]", 8, 4)}), std::string(8, 'x')),
                 "tensor 'a': data_offsets [8, 4) are out of order");
}

TEST(SafetensorsBad, OffsetsPastEof) {
  ExpectRejected(Craft(Header({Entry("a", "U8", "[8]", 0, 8)}), "xxxx"),
                 "tensor 'a': data_offsets [0, 8) run past the end of the file");
}

TEST(SafetensorsBad, HugeOffsetsPastEof) {
  ExpectRejected(Craft(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": )"
                       R"([18446744073709551614, 18446744073709551615]}})"),
                 "run past the end of the file");
}

TEST(SafetensorsBad, GapBetweenTensors) {
  ExpectRejected(Craft(Header({Entry("a", "U8", "[4]", 0, 4), Entry("b", "U8", "[4]", 6, 10)}),
                       std::string(10, 'x')),
                 "tensor 'b': data_offsets [6, 10) leave a gap of 2 bytes after tensor 'a'");
}

TEST(SafetensorsBad, GapAtStart) {
  ExpectRejected(Craft(Header({Entry("a", "U8", "[4]", 2, 6)}), std::string(6, 'x')),
                 "leave a gap of 2 bytes at the start of the data section");
}

TEST(SafetensorsBad, GapAtEnd) {
  ExpectRejected(Craft(Header({Entry("a", "U8", "[4]", 0, 4)}), std::string(6, 'x')),
                 "gap of 2 bytes at the end");
}

TEST(SafetensorsBad, DataWithoutTensors) {
  ExpectRejected(Craft("{}", "x"), "gap of 1 bytes at the end");
}

TEST(SafetensorsBad, ByteCountMismatch) {
  ExpectRejected(Craft(Header({Entry("a", "F32", "[2]", 0, 4)}), "xxxx"),
                 "tensor 'a': data_offsets [0, 4) hold 4 bytes but shape [2] of F32 needs 8");
}

TEST(SafetensorsBad, UnknownDtype) {
  ExpectRejected(Craft(Header({Entry("a", "F4", "[2]", 0, 1)}), "x"),
                 "tensor 'a': unknown dtype 'F4'");
}

TEST(SafetensorsBad, DuplicateTensorName) {
  ExpectRejected(
      Craft(Header({Entry("a", "U8", "[2]", 0, 2), Entry("a", "U8", "[2]", 2, 4)}), "xxxx"),
      "duplicate tensor name 'a'");
}

TEST(SafetensorsBad, DuplicateKeyInsideEntry) {
  ExpectRejected(
      Craft(R"({"a": {"dtype": "U8", "dtype": "I8", "shape": [1], "data_offsets": [0, 1]}})", "x"),
      "duplicate key 'dtype' inside 'a'");
}

TEST(SafetensorsBad, DuplicateMetadata) {
  ExpectRejected(Craft(R"({"__metadata__": {}, "__metadata__": {"a": "b"}})"),
                 "duplicate '__metadata__'");
}

TEST(SafetensorsBad, ShapeProductOverflow) {
  ExpectRejected(Craft(Header({Entry("a", "U8", "[4294967296, 4294967296]", 0, 0)})),
                 "tensor 'a': shape [4294967296, 4294967296] has too many elements (overflows");
}

TEST(SafetensorsBad, ShapeBytesOverflow) {
  ExpectRejected(Craft(Header({Entry("a", "F64", "[4611686018427387904]", 0, 0)})),
                 "tensor 'a': shape [4611686018427387904] is too many bytes (overflows");
}

TEST(SafetensorsBad, DimensionOverflowsInt64) {
  ExpectRejected(Craft(Header({Entry("a", "U8", "[18446744073709551615]", 0, 0)})),
                 "tensor 'a': dimension 18446744073709551615 in shape overflows 64 bits");
}

TEST(SafetensorsBad, MetadataNotAnObject) {
  ExpectRejected(Craft(R"({"__metadata__": ["format", "pt"]})"),
                 "'__metadata__' must be an object of strings, not array");
}

TEST(SafetensorsBad, MetadataValueNotAString) {
  ExpectRejected(Craft(R"({"__metadata__": {"format": "pt", "n": 3}})"),
                 "'__metadata__' must map strings to strings, but 'n' is a number");
}

TEST(SafetensorsBad, MissingFile) {
  TempDir dir;
  auto file = SafetensorsFile::Open(dir / "nope.safetensors", LoadMode::kMmap);
  EXPECT_TRUE(Mentions(file.status(), dir / "nope.safetensors", "cannot open"));
}

TEST(SafetensorsBad, Directory) {
  TempDir dir;
  auto file = SafetensorsFile::Open(dir.path(), LoadMode::kRead);
  EXPECT_TRUE(Mentions(file.status(), dir.path(), "not a regular file"));
}

// --- Atomic writes. ---

TEST(SafetensorsAtomic, ParentIsARegularFile) {
  TempDir dir;
  const std::string blocker = dir / "blocker";
  WriteBytes(blocker, "previous content");
  const std::vector<OwnedTensor> tensors = {MakeTensor("a", DType::kU8, {4}, 1)};
  const std::string path = blocker + "/model.safetensors";
  EXPECT_TRUE(Mentions(WriteSafetensors(path, Views(tensors)), path, "cannot create temporary"));
  EXPECT_EQ(ReadBytes(blocker), "previous content");
}

TEST(SafetensorsAtomic, FailedWriteLeavesPreviousFileIntact) {
  TempDir dir;
  const std::string path = dir / "model.safetensors";
  const std::vector<OwnedTensor> old_tensors = {MakeTensor("old", DType::kU8, {4}, 1)};
  ASSERT_TRUE(WriteSafetensors(path, Views(old_tensors)).ok());
  const std::string before = ReadBytes(path);
  const uint8_t data[4] = {};
  EXPECT_FALSE(WriteSafetensors(path, {{"new", DType::kF32, {2}, data, 4}}).ok());
  EXPECT_EQ(ReadBytes(path), before);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(SafetensorsAtomic, FailedRenameRemovesTheTempFile) {
  TempDir dir;
  // The target is a non-empty directory, so everything succeeds up to the rename.
  const std::string path = dir / "model.safetensors";
  fs::create_directories(path + "/inside");
  const std::vector<OwnedTensor> tensors = {MakeTensor("a", DType::kU8, {4}, 1)};
  EXPECT_TRUE(Mentions(WriteSafetensors(path, Views(tensors)), path, "cannot rename"));
  EXPECT_TRUE(fs::is_directory(path + "/inside"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// --- Checkpoint directories. ---

std::vector<OwnedTensor> CheckpointTensors() {
  return {MakeTensor("model.embed_tokens.weight", DType::kBF16, {64, 16}, 1),
          MakeTensor("model.layers.0.q.weight", DType::kF8E4M3, {32, 16}, 2),
          MakeTensor("model.layers.0.q.weight_scale_inv", DType::kF32, {1, 1}, 3),
          MakeTensor("model.layers.0.norm.weight", DType::kBF16, {16}, 4),
          MakeTensor("model.layers.1.q.weight", DType::kF8E4M3, {32, 16}, 5),
          MakeTensor("model.layers.1.q.weight_scale_inv", DType::kF32, {1, 1}, 6),
          MakeTensor("model.norm.weight", DType::kBF16, {16}, 7),
          MakeTensor("lm_head.weight", DType::kBF16, {64, 16}, 8)};
}

class CheckpointModeTest : public ::testing::TestWithParam<LoadMode> {};

void ExpectCheckpointHolds(const std::string& dir, LoadMode mode,
                           const std::vector<OwnedTensor>& tensors) {
  auto checkpoint = Checkpoint::Open(dir, mode);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_EQ((*checkpoint)->dir(), dir);
  std::vector<std::string> names;
  size_t total = 0;
  for (const auto& t : tensors) {
    ExpectSame(t, (*checkpoint)->Find(t.name));
    names.push_back(t.name);
    total += t.bytes.size();
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ((*checkpoint)->TensorNames(), names);
  EXPECT_EQ((*checkpoint)->TotalBytes(), total);
  EXPECT_EQ((*checkpoint)->Find("nope"), nullptr);
}

TEST_P(CheckpointModeTest, SingleFile) {
  TempDir dir;
  const std::string model = dir / "new/model";  // created by WriteCheckpoint
  const auto tensors = CheckpointTensors();
  ASSERT_TRUE(WriteCheckpoint(model, Views(tensors)).ok());
  EXPECT_TRUE(fs::exists(model + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(model + "/model.safetensors.index.json"));
  ExpectCheckpointHolds(model, GetParam(), tensors);
}

TEST_P(CheckpointModeTest, ShardedWithIndex) {
  TempDir dir;
  const auto tensors = CheckpointTensors();
  ASSERT_TRUE(WriteCheckpoint(dir.path(), Views(tensors), 3).ok());
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  auto index = ReadJsonFile(dir / "model.safetensors.index.json");
  ASSERT_TRUE(index.ok()) << index.status().message();
  size_t total = 0;
  for (const auto& t : tensors) total += t.bytes.size();
  EXPECT_EQ((*index)["metadata"]["total_size"], total);
  const auto& weight_map = (*index)["weight_map"];
  EXPECT_EQ(weight_map.size(), tensors.size());
  std::map<std::string, int> per_shard;
  for (const auto& [name, shard] : weight_map.items()) per_shard[shard.get<std::string>()]++;
  EXPECT_EQ(per_shard.size(), 3u);
  for (int i = 1; i <= 3; ++i) {
    const std::string shard = fmt::format("model-{:05d}-of-00003.safetensors", i);
    EXPECT_TRUE(fs::exists(dir / shard)) << shard;
    EXPECT_GT(per_shard[shard], 0) << shard;
  }
  // Shards are contiguous runs of the input order.
  EXPECT_EQ(weight_map[tensors.front().name], "model-00001-of-00003.safetensors");
  EXPECT_EQ(weight_map[tensors.back().name], "model-00003-of-00003.safetensors");
  ExpectCheckpointHolds(dir.path(), GetParam(), tensors);
}

INSTANTIATE_TEST_SUITE_P(BothModes, CheckpointModeTest,
                         ::testing::Values(LoadMode::kMmap, LoadMode::kRead), [](const auto& info) {
                           return info.param == LoadMode::kMmap ? "Mmap" : "Read";
                         });

TEST(CheckpointWrite, BalancesBytesOverShards) {
  TempDir dir;
  std::vector<OwnedTensor> tensors;
  for (int i = 0; i < 6; ++i)
    tensors.push_back(
        MakeTensor(fmt::format("t{}", i), DType::kU8, {100}, static_cast<uint32_t>(i)));
  ASSERT_TRUE(WriteCheckpoint(dir.path(), Views(tensors), 3).ok());
  auto index = ReadJsonFile(dir / "model.safetensors.index.json");
  ASSERT_TRUE(index.ok());
  const auto& map = (*index)["weight_map"];
  EXPECT_EQ(map["t0"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(map["t1"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(map["t2"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(map["t3"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(map["t4"], "model-00003-of-00003.safetensors");
  EXPECT_EQ(map["t5"], "model-00003-of-00003.safetensors");

  // One big tensor first: it gets a shard to itself.
  TempDir dir2;
  tensors[0] = MakeTensor("t0", DType::kU8, {1000}, 9);
  ASSERT_TRUE(WriteCheckpoint(dir2.path(), Views(tensors), 2).ok());
  index = ReadJsonFile(dir2 / "model.safetensors.index.json");
  ASSERT_TRUE(index.ok());
  EXPECT_EQ((*index)["weight_map"]["t0"], "model-00001-of-00002.safetensors");
  EXPECT_EQ((*index)["weight_map"]["t1"], "model-00002-of-00002.safetensors");
}

TEST(CheckpointWrite, RejectsBadShardCountsAndDuplicates) {
  TempDir dir;
  const std::vector<OwnedTensor> tensors = {MakeTensor("a", DType::kU8, {1}, 1),
                                            MakeTensor("b", DType::kU8, {1}, 2)};
  EXPECT_TRUE(Mentions(WriteCheckpoint(dir.path(), Views(tensors), 0), dir.path(), "at least 1"));
  EXPECT_TRUE(Mentions(WriteCheckpoint(dir.path(), Views(tensors), 3), dir.path(),
                       "cannot split 2 tensors into 3"));
  auto views = Views(tensors);
  views[1].name = "a";
  EXPECT_TRUE(Mentions(WriteCheckpoint(dir.path(), views, 2), dir.path(), "duplicate tensor name"));
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(CheckpointWrite, SwitchingLayoutRemovesTheStaleOne) {
  TempDir dir;
  const auto tensors = CheckpointTensors();
  ASSERT_TRUE(WriteCheckpoint(dir.path(), Views(tensors), 2).ok());
  const std::vector<OwnedTensor> fewer(tensors.begin(), tensors.begin() + 3);
  ASSERT_TRUE(WriteCheckpoint(dir.path(), Views(fewer), 1).ok());
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  ExpectCheckpointHolds(dir.path(), LoadMode::kMmap, fewer);
  ASSERT_TRUE(WriteCheckpoint(dir.path(), Views(tensors), 2).ok());
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  ExpectCheckpointHolds(dir.path(), LoadMode::kMmap, tensors);
}

// Writes two shards by hand plus an index with the given weight_map text.
struct HandShardedCheckpoint {
  TempDir dir;
  std::vector<OwnedTensor> shard1 = {MakeTensor("a", DType::kU8, {2}, 1),
                                     MakeTensor("b", DType::kU8, {3}, 2)};
  std::vector<OwnedTensor> shard2 = {MakeTensor("c", DType::kI32, {2}, 3)};
  HandShardedCheckpoint() {
    EXPECT_TRUE(WriteSafetensors(dir / "s1.safetensors", Views(shard1)).ok());
    EXPECT_TRUE(WriteSafetensors(dir / "s2.safetensors", Views(shard2)).ok());
  }
  std::string index_path() const { return dir / "model.safetensors.index.json"; }
  void WriteIndex(std::string_view text) const { WriteBytes(index_path(), text); }
  Status Open() const { return Checkpoint::Open(dir.path(), LoadMode::kMmap).status(); }
};

TEST(CheckpointOpen, HandWrittenIndex) {
  HandShardedCheckpoint c;
  c.WriteIndex(R"({"metadata": {}, "weight_map": {"a": "s1.safetensors", "b": "./s1.safetensors",
                   "c": "s2.safetensors"}})");
  auto all = c.shard1;
  all.insert(all.end(), c.shard2.begin(), c.shard2.end());
  ExpectCheckpointHolds(c.dir.path(), LoadMode::kRead, all);
}

TEST(CheckpointOpen, UnlistedTensorsOfAShardAreIncluded) {
  HandShardedCheckpoint c;
  c.WriteIndex(R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})");
  auto checkpoint = Checkpoint::Open(c.dir.path(), LoadMode::kMmap);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  EXPECT_NE((*checkpoint)->Find("b"), nullptr);
}

TEST(CheckpointOpen, ShardInSubdirectoryAndSymlinkedShard) {
  HandShardedCheckpoint c;
  fs::create_directories(c.dir / "sub");
  fs::rename(c.dir / "s1.safetensors", c.dir / "sub/s1.safetensors");
  // The Hugging Face cache links shards to blobs outside the snapshot directory.
  TempDir blobs;
  fs::rename(c.dir / "s2.safetensors", blobs / "blob");
  fs::create_symlink(blobs / "blob", c.dir / "s2.safetensors");
  c.WriteIndex(R"({"weight_map": {"a": "sub/s1.safetensors", "b": "sub/s1.safetensors",
                   "c": "s2.safetensors"}})");
  EXPECT_TRUE(c.Open().ok()) << c.Open().message();
}

TEST(CheckpointOpen, IndexNotAnObject) {
  HandShardedCheckpoint c;
  c.WriteIndex("[]");
  EXPECT_TRUE(Mentions(c.Open(), c.index_path(), "index must be a JSON object"));
}

TEST(CheckpointOpen, IndexInvalidJson) {
  HandShardedCheckpoint c;
  c.WriteIndex("{\"weight_map\": ");
  EXPECT_TRUE(Mentions(c.Open(), c.index_path(), "invalid JSON"));
}

TEST(CheckpointOpen, MissingWeightMap) {
  HandShardedCheckpoint c;
  c.WriteIndex(R"({"metadata": {}})");
  EXPECT_TRUE(Mentions(c.Open(), c.index_path(), "missing 'weight_map'"));
}

TEST(CheckpointOpen, WeightMapNotAnObject) {
  HandShardedCheckpoint c;
  c.WriteIndex(R"({"weight_map": ["s1.safetensors"]})");
  EXPECT_TRUE(Mentions(c.Open(), c.index_path(), "'weight_map' must be an object"));
}

TEST(CheckpointOpen, WeightMapValueNotAString) {
  HandShardedCheckpoint c;
  c.WriteIndex(R"({"weight_map": {"a": 1}})");
  EXPECT_TRUE(Mentions(c.Open(), c.index_path(), "value for tensor 'a' must be a file name"));
}

TEST(CheckpointOpen, AbsoluteShardPath) {
  HandShardedCheckpoint c;
  c.WriteIndex(fmt::format(R"({{"weight_map": {{"a": "{}"}}}})", c.dir / "s1.safetensors"));
  EXPECT_TRUE(Mentions(c.Open(), c.index_path(), "is an absolute path"));
}

TEST(CheckpointOpen, DotDotInShardPath) {
  HandShardedCheckpoint c;
  fs::create_directories(c.dir / "sub");
  for (const char* shard : {"../s1.safetensors", "sub/../s1.safetensors", "sub/../../x"}) {
    c.WriteIndex(fmt::format(R"({{"weight_map": {{"a": "{}"}}}})", shard));
    EXPECT_TRUE(Mentions(c.Open(), c.index_path(), "contains '..'")) << shard;
  }
}

TEST(CheckpointOpen, ShardNameNotAFile) {
  HandShardedCheckpoint c;
  for (const char* shard : {"", ".", "sub/"}) {
    c.WriteIndex(fmt::format(R"({{"weight_map": {{"a": "{}"}}}})", shard));
    EXPECT_FALSE(c.Open().ok()) << shard;
    EXPECT_TRUE(Mentions(c.Open(), c.index_path(), "shard")) << shard;
  }
}

TEST(CheckpointOpen, MissingShardFile) {
  HandShardedCheckpoint c;
  c.WriteIndex(R"({"weight_map": {"a": "s1.safetensors", "x": "s9.safetensors"}})");
  EXPECT_TRUE(Mentions(c.Open(), c.index_path(), "shard file 's9.safetensors'"));
  EXPECT_TRUE(Mentions(c.Open(), "holding tensor 'x'", "does not exist"));
}

TEST(CheckpointOpen, TensorAbsentFromItsShard) {
  HandShardedCheckpoint c;
  c.WriteIndex(R"({"weight_map": {"a": "s1.safetensors", "c": "s1.safetensors"}})");
  EXPECT_TRUE(
      Mentions(c.Open(), c.index_path(),
               "tensor 'c' is mapped to shard 's1.safetensors', which does not contain it"));
}

TEST(CheckpointOpen, TensorInTwoShards) {
  HandShardedCheckpoint c;
  const std::vector<OwnedTensor> shard3 = {MakeTensor("a", DType::kU8, {2}, 9),
                                           MakeTensor("d", DType::kU8, {2}, 10)};
  ASSERT_TRUE(WriteSafetensors(c.dir / "s3.safetensors", Views(shard3)).ok());
  c.WriteIndex(R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors",
                   "d": "s3.safetensors"}})");
  const Status status = c.Open();
  EXPECT_TRUE(Mentions(status, "tensor 'a' is in both", c.dir / "s1.safetensors"));
  EXPECT_TRUE(Mentions(status, c.dir.path(), c.dir / "s3.safetensors"));
}

TEST(CheckpointOpen, BadShardContentNamesTheShard) {
  HandShardedCheckpoint c;
  WriteBytes(c.dir / "s2.safetensors", "junk");
  c.WriteIndex(R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})");
  EXPECT_TRUE(Mentions(c.Open(), c.dir / "s2.safetensors", "truncated"));
}

TEST(CheckpointOpen, NeitherFile) {
  TempDir dir;
  auto checkpoint = Checkpoint::Open(dir.path(), LoadMode::kMmap);
  EXPECT_TRUE(Mentions(checkpoint.status(), dir.path() + ": no model.safetensors or",
                       "model.safetensors.index.json"));
}

TEST(CheckpointOpen, NotADirectory) {
  TempDir dir;
  auto checkpoint = Checkpoint::Open(dir / "missing", LoadMode::kMmap);
  EXPECT_TRUE(Mentions(checkpoint.status(), dir / "missing", "not a directory"));
}

}  // namespace
}  // namespace dsv3::io
