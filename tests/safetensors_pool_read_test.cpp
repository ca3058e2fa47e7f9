// kRead with a pool: the data section read in pieces on the pool's threads
// (io/safetensors.cpp, ReadData) gives the file's bytes.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "backend/thread_pool.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace dsv3::io {
namespace {

using dsv3::testing::TempDir;

struct Tensor {
  TensorToWrite view;  // data set where written (the bytes move with the struct)
  std::vector<uint8_t> bytes;
};

Tensor RandomTensor(const std::string& name, DType dtype, int64_t n, uint32_t seed) {
  Tensor t;
  t.bytes.resize(static_cast<size_t>(n) * DTypeSize(dtype));
  std::mt19937 rng(seed);
  for (uint8_t& b : t.bytes) b = static_cast<uint8_t>(rng());
  t.view = {name, dtype, {n}, nullptr, t.bytes.size()};
  return t;
}

void ExpectBytes(const Tensor& want, const TensorInfo* got) {
  ASSERT_NE(got, nullptr) << want.view.name;
  ASSERT_EQ(got->nbytes, want.bytes.size()) << want.view.name;
  EXPECT_EQ(std::memcmp(got->data, want.bytes.data(), got->nbytes), 0) << want.view.name;
}

// Pieces of at least 4 MiB: 13 MiB + 4 bytes is 4 pieces (the last one short) on 3 threads, read
// by SafetensorsFile::Open and through Checkpoint::Open; a pool of one thread reads one piece.
TEST(SafetensorsPoolRead, PiecesOnAPoolGiveTheFileBytes) {
  TempDir dir;
  const std::vector<Tensor> tensors = {
      RandomTensor("big", DType::kF32, 13 * 1024 * 1024 / 4 + 1, 1),
      RandomTensor("small", DType::kBF16, 3, 2)};
  const std::string path = dir / "model.safetensors";
  std::vector<TensorToWrite> views;
  for (const Tensor& t : tensors) {
    views.push_back(t.view);
    views.back().data = t.bytes.data();
  }
  const Status written = WriteSafetensors(path, views);
  ASSERT_TRUE(written.ok()) << written.message();
  for (int threads : {3, 1}) {
    ThreadPool pool(threads);
    auto file = SafetensorsFile::Open(path, LoadMode::kRead, &pool);
    ASSERT_TRUE(file.ok()) << file.status().message();
    for (const Tensor& t : tensors) ExpectBytes(t, (*file)->Find(t.view.name));
    auto checkpoint = Checkpoint::Open(dir.path(), LoadMode::kRead, &pool);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
    for (const Tensor& t : tensors) ExpectBytes(t, (*checkpoint)->Find(t.view.name));
  }
}

}  // namespace
}  // namespace dsv3::io
