// io::WriteCheckpoint with producers instead of data (io::TensorToWrite::produce), the way quantize
// and init write models larger than memory: each producer is called once, in tensor order, only
// when its shard is written (the earlier shard's file already exists then), and the files hold
// what they produced. A producer's error, or a size other than declared, is an error naming the
// tensor, and no later shard or index is written.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "io/safetensors.h"
#include "test_util.h"

namespace dsv3::io {
namespace {

namespace fs = std::filesystem;

TEST(CheckpointProducers, RunShardByShardInOrder) {
  testing::TempDir dir;
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<TensorToWrite> views;
  std::vector<std::string> calls;
  std::vector<bool> first_shard_written;
  for (int i = 0; i < 6; ++i) {
    bytes.emplace_back(100);
    for (size_t k = 0; k < 100; ++k) bytes.back()[k] = static_cast<uint8_t>(7 * i + 3 * k);
    TensorToWrite view;
    view.name = fmt::format("t{}", i);
    view.dtype = DType::kU8;
    view.shape = {100};
    view.nbytes = 100;
    view.produce = [&, i](std::vector<uint8_t>* out) {
      calls.push_back(fmt::format("t{}", i));
      first_shard_written.push_back(fs::exists(dir / "model-00001-of-00003.safetensors"));
      *out = bytes[static_cast<size_t>(i)];
      return Status::Ok();
    };
    views.push_back(std::move(view));
  }
  ASSERT_TRUE(WriteCheckpoint(dir.path(), views, 3).ok());
  EXPECT_EQ(calls, (std::vector<std::string>{"t0", "t1", "t2", "t3", "t4", "t5"}));
  EXPECT_EQ(first_shard_written, (std::vector<bool>{false, false, true, true, true, true}));
  auto checkpoint = Checkpoint::Open(dir.path(), LoadMode::kRead);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().message();
  for (int i = 0; i < 6; ++i) {
    const TensorInfo* t = (*checkpoint)->Find(fmt::format("t{}", i));
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->nbytes, 100u);
    EXPECT_EQ(std::vector<uint8_t>(t->data, t->data + 100), bytes[static_cast<size_t>(i)]);
  }

  testing::TempDir bad;
  views[4].produce = [](std::vector<uint8_t>*) { return Status::Error("out of luck"); };
  Status failed = WriteCheckpoint(bad.path(), views, 3);
  EXPECT_NE(failed.message().find("tensor 't4'"), std::string::npos) << failed.message();
  EXPECT_NE(failed.message().find("out of luck"), std::string::npos) << failed.message();
  EXPECT_FALSE(fs::exists(bad / "model-00003-of-00003.safetensors"));
  EXPECT_FALSE(fs::exists(bad / "model.safetensors.index.json"));
  views[4].produce = [](std::vector<uint8_t>* out) {
    out->assign(99, 0);
    return Status::Ok();
  };
  failed = WriteCheckpoint(bad.path(), views, 1);
  EXPECT_NE(failed.message().find("tensor 't4': 99 bytes produced, 100 declared"),
            std::string::npos)
      << failed.message();
  EXPECT_FALSE(fs::exists(bad / "model.safetensors"));
}

}  // namespace
}  // namespace dsv3::io
