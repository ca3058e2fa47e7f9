// Bad model directories and bad requests: each gives a clear error naming the file, tensor or
// key, a non-zero exit from the CLI, and no crash (this suite also runs under ASan/UBSan).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "io/files.h"
#include "io/safetensors.h"
#include "model/presets.h"
#include "model/quantize.h"
#include "model/random_checkpoint.h"
#include "model/transformer.h"
#include "test_util.h"

namespace dsv3 {
namespace {

using testing::RunDsv3;
using testing::TempDir;

// A tiny FP8 V3 checkpoint with an MTP layer, written fresh for each test.
void WriteTiny(const std::string& dir) {
  RandomCheckpointOptions options;
  options.seed = 1;
  options.dtype = DType::kF8E4M3;
  options.fp8_block_rows = 16;
  options.fp8_block_cols = 32;
  ASSERT_TRUE(WriteRandomCheckpoint(*PresetConfig("tiny-v3"), options, dir).ok());
}

// Rewrites model.safetensors after letting `edit` change the tensor list.
struct OwnedTensor {
  io::TensorToWrite view;
  std::vector<uint8_t> bytes;
};
void EditTensors(const std::string& dir,
                 const std::function<void(std::vector<OwnedTensor>&)>& edit) {
  std::vector<OwnedTensor> tensors;
  {
    auto ckpt = io::Checkpoint::Open(dir, io::LoadMode::kRead);
    ASSERT_TRUE(ckpt.ok()) << ckpt.status().message();
    for (const std::string& name : (*ckpt)->TensorNames()) {
      const io::TensorInfo* t = (*ckpt)->Find(name);
      OwnedTensor o;
      o.view = {t->name, t->dtype, t->shape, nullptr, t->nbytes};
      o.bytes.assign(t->data, t->data + t->nbytes);
      tensors.push_back(std::move(o));
    }
  }
  edit(tensors);
  std::vector<io::TensorToWrite> views;
  for (auto& t : tensors) {
    t.view.data = t.bytes.data();
    t.view.nbytes = t.bytes.size();
    views.push_back(t.view);
  }
  ASSERT_TRUE(io::WriteCheckpoint(dir, views, 1).ok());
}

OwnedTensor* FindTensor(std::vector<OwnedTensor>& tensors, const std::string& name) {
  for (auto& t : tensors)
    if (t.view.name == name) return &t;
  ADD_FAILURE() << "no tensor " << name;
  return nullptr;
}

void EditConfig(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  auto j = io::ReadJsonFile(dir + "/config.json");
  ASSERT_TRUE(j.ok());
  edit(*j);
  ASSERT_TRUE(io::WriteFileAtomic(dir + "/config.json", j->dump(2)).ok());
}

// `dsv3 info` must fail with a message containing every one of `needles`.
void ExpectInfoFails(const std::string& dir, const std::vector<std::string>& needles) {
  const auto r = RunDsv3({"info", "-m", dir});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.exit_code, -1) << "killed by a signal: " << r.err;
  for (const std::string& needle : needles)
    EXPECT_NE(r.err.find(needle), std::string::npos) << "'" << needle << "' not in: " << r.err;
}

TEST(ModelBadInput, GoodCheckpointLoads) {
  TempDir dir;
  WriteTiny(dir.path());
  const auto r = RunDsv3({"info", "-m", dir.path()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(ModelBadInput, MissingTensorIsNamed) {
  TempDir dir;
  WriteTiny(dir.path());
  EditTensors(dir.path(), [](auto& tensors) {
    std::erase_if(tensors, [](const OwnedTensor& t) {
      return t.view.name == "model.layers.1.mlp.experts.3.up_proj.weight";
    });
  });
  ExpectInfoFails(dir.path(), {"model.layers.1.mlp.experts.3.up_proj.weight", "missing"});
}

TEST(ModelBadInput, WrongShapeIsNamed) {
  TempDir dir;
  WriteTiny(dir.path());
  EditTensors(dir.path(), [](auto& tensors) {
    OwnedTensor* t = FindTensor(tensors, "model.layers.0.self_attn.kv_a_layernorm.weight");
    t->view.shape = {t->view.shape[0] / 2, 2};
  });
  ExpectInfoFails(dir.path(), {"model.layers.0.self_attn.kv_a_layernorm.weight", "shape"});
}

TEST(ModelBadInput, Fp8ScaleGridOfWrongShape) {
  TempDir dir;
  WriteTiny(dir.path());
  EditTensors(dir.path(), [](auto& tensors) {
    OwnedTensor* t = FindTensor(tensors, "model.layers.0.self_attn.o_proj.weight_scale_inv");
    // Same bytes, transposed grid shape.
    std::swap(t->view.shape[0], t->view.shape[1]);
    if (t->view.shape[0] == t->view.shape[1])
      t->view.shape = {1, t->view.shape[0] * t->view.shape[1]};
  });
  ExpectInfoFails(dir.path(), {"model.layers.0.self_attn.o_proj.weight_scale_inv", "shape"});
}

TEST(ModelBadInput, Fp8ScaleMissing) {
  TempDir dir;
  WriteTiny(dir.path());
  EditTensors(dir.path(), [](auto& tensors) {
    std::erase_if(tensors, [](const OwnedTensor& t) {
      return t.view.name == "model.layers.2.mlp.shared_experts.down_proj.weight_scale_inv";
    });
  });
  ExpectInfoFails(dir.path(), {"model.layers.2.mlp.shared_experts.down_proj.weight_scale_inv"});
}

TEST(ModelBadInput, NanScaleIsRejected) {
  TempDir dir;
  WriteTiny(dir.path());
  EditTensors(dir.path(), [](auto& tensors) {
    OwnedTensor* t = FindTensor(tensors, "model.layers.1.self_attn.q_b_proj.weight_scale_inv");
    const float nan = std::nanf("");
    std::memcpy(t->bytes.data(), &nan, 4);
  });
  ExpectInfoFails(dir.path(), {"model.layers.1.self_attn.q_b_proj.weight_scale_inv", "invalid"});
}

// Scale checks name the first bad value's index: FP8 block scales and q8_0 group scales must be
// finite and not below zero (-0 is fine), q4_0's finite (they carry the sign of the group's
// largest element).
TEST(ModelBadInput, BadScalesAreRejectedAtTheirIndex) {
  TempDir tiny, q8, q4;
  WriteTiny(tiny.path());
  QuantizeOptions options;
  options.type = QuantType::kQ8_0;
  ASSERT_TRUE(QuantizeModel(tiny.path(), q8.path(), options).ok());
  options.type = QuantType::kQ4_0;
  ASSERT_TRUE(QuantizeModel(tiny.path(), q4.path(), options).ok());
  const std::string name = "model.layers.1.self_attn.q_b_proj.weight_scale_inv";
  const auto set = [&](const std::string& dir, std::vector<std::pair<int, float>> values) {
    EditTensors(dir, [&](auto& tensors) {
      OwnedTensor* t = FindTensor(tensors, name);
      for (auto [i, v] : values) {
        ASSERT_LT(4u * i, t->bytes.size());
        std::memcpy(t->bytes.data() + 4 * i, &v, 4);
      }
    });
  };
  const auto loads = [](const std::string& dir) {
    const auto r = RunDsv3({"info", "-m", dir});
    EXPECT_EQ(r.exit_code, 0) << r.err;
  };
  set(tiny.path(), {{3, -0.0f}, {5, -0.5f}});
  ExpectInfoFails(tiny.path(), {name, "invalid", "at block 5"});
  set(q8.path(), {{3, -0.0f}, {37, -1e-30f}});
  ExpectInfoFails(q8.path(), {name, "invalid", "at group 37"});
  set(q8.path(), {{37, 0.5f}, {38, INFINITY}});
  ExpectInfoFails(q8.path(), {name, "invalid", "at group 38"});
  set(q8.path(), {{38, 0.25f}});
  loads(q8.path());
  set(q4.path(), {{3, -0.5f}, {39, -0.0f}});
  loads(q4.path());
  set(q4.path(), {{39, -NAN}});
  ExpectInfoFails(q4.path(), {name, "invalid", "at group 39"});
}

TEST(ModelBadInput, WeightOfUnsupportedDtype) {
  TempDir dir;
  WriteTiny(dir.path());
  EditTensors(dir.path(), [](auto& tensors) {
    OwnedTensor* t = FindTensor(tensors, "lm_head.weight");  // BF16 -> I16-sized U8 pairs
    t->view.dtype = DType::kU8;
    t->view.shape[1] *= 2;
  });
  ExpectInfoFails(dir.path(), {"lm_head.weight"});
}

TEST(ModelBadInput, TruncatedShardNamesTheFile) {
  TempDir dir;
  WriteTiny(dir.path());
  const std::string path = dir / "model.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  ExpectInfoFails(dir.path(), {"model.safetensors"});
}

TEST(ModelBadInput, NoWeightsAtAll) {
  TempDir dir;
  WriteTiny(dir.path());
  std::filesystem::remove(dir / "model.safetensors");
  ExpectInfoFails(dir.path(), {dir.path()});
}

TEST(ModelBadInput, IndexNamingMissingShardOrEscapingPath) {
  TempDir dir;
  WriteTiny(dir.path());
  for (const std::string shard :
       {"model-00009-of-00009.safetensors", "../model.safetensors", "/etc/passwd"}) {
    nlohmann::json index = {{"metadata", nlohmann::json::object()},
                            {"weight_map", {{"model.embed_tokens.weight", shard}}}};
    ASSERT_TRUE(io::WriteFileAtomic(dir / "model.safetensors.index.json", index.dump()).ok());
    ExpectInfoFails(dir.path(), {"model.safetensors.index.json"});
  }
}

TEST(ModelBadInput, ConfigProblemsNameTheKey) {
  struct ConfigCase {
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> needles;
  };
  const std::vector<ConfigCase> cases = {
      {[](auto& j) { j.erase("hidden_size"); }, {"config.json", "hidden_size"}},
      {[](auto& j) { j["n_group"] = 3; }, {"config.json", "n_routed_experts", "n_group"}},
      {[](auto& j) { j["topk_group"] = 5; }, {"topk_group", "n_group"}},
      {[](auto& j) { j["num_experts_per_tok"] = 9; }, {"num_experts_per_tok"}},
      {[](auto& j) { j["scoring_func"] = "relu"; }, {"scoring_func"}},
      {[](auto& j) { j["hidden_size"] = "48"; }, {"hidden_size"}},
      {[](auto& j) { j["qk_rope_head_dim"] = 7; }, {"qk_rope_head_dim"}},
      {[](auto& j) { j["model_type"] = "llama"; }, {"model_type"}},
      {[](auto& j) { j["vocab_size"] = -5; }, {"vocab_size"}},
      {[](auto& j) { j["rope_scaling"]["type"] = "dynamic"; }, {"rope_scaling"}},
      {[](auto& j) { j["hidden_size"] = 1LL << 40; }, {"hidden_size"}},
  };
  for (const ConfigCase& c : cases) {
    TempDir dir;
    WriteTiny(dir.path());
    EditConfig(dir.path(), c.edit);
    ExpectInfoFails(dir.path(), c.needles);
  }
  TempDir dir;
  WriteTiny(dir.path());
  ASSERT_TRUE(io::WriteFileAtomic(dir / "config.json", "{\"vocab_size\": 12,").ok());
  ExpectInfoFails(dir.path(), {"config.json"});
}

TEST(ModelBadInput, BadRequestsFailCleanly) {
  TempDir dir;
  WriteTiny(dir.path());
  const std::string out = dir / "out.npy";
  auto r = RunDsv3({"logits", "-m", dir.path(), "--tokens", "1,2,160", "--out", out});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("160"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("vocabulary"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));

  r = RunDsv3({"logits", "-m", dir.path(), "--tokens", "", "--out", out});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("empty"), std::string::npos) << r.err;

  r = RunDsv3({"logits", "-m", dir.path(), "--tokens", "1,x", "--out", out});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("'x'"), std::string::npos) << r.err;

  r = RunDsv3({"generate", "-m", dir.path(), "--tokens", "99999", "-n", "3"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("99999"), std::string::npos) << r.err;

  r = RunDsv3({"generate", "-m", dir.path(), "--tokens", "3", "--experts-per-token", "9"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("experts per token"), std::string::npos) << r.err;

  r = RunDsv3({"generate", "-m", dir.path(), "--tokens", "3", "--top-p", "0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("top-p"), std::string::npos) << r.err;

  r = RunDsv3({"logits", "-m", dir / "nonexistent", "--tokens", "1", "--out", out});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nonexistent"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace dsv3
