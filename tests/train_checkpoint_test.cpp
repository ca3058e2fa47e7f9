// `dsv3 train` end to end (issue 4): exact resume, checkpoints that survive SIGKILL and damage,
// bad inputs that fail clearly without harming earlier checkpoints, and checkpoints that the
// inference model and the independent reference read alike.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "io/files.h"
#include "process_util.h"
#include "reference/reference_model.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/transformer.h"

namespace dsv3 {
namespace {

namespace fs = std::filesystem;
using testing::RunDsv3;

std::string ReadAll(const std::string& path) {
  auto r = io::ReadFile(path);
  return r.ok() ? *r : std::string();
}

class TrainCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    // A small corpus with word-level structure; the tokenizer is trained on it by dsv3 itself.
    std::string text;
    uint64_t x = 12345;
    const char* words[] = {"and", "the",   "lord", "said", "unto",  "moses", "in",    "land",
                           "of",  "egypt", "this", "day",  "shall", "be",    "light", "water"};
    for (int line = 0; line < 600; ++line) {
      for (int w = 0; w < 10; ++w) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        text += words[(x >> 33) % 16];
        text += w == 9 ? ".\n" : " ";
      }
    }
    ASSERT_TRUE(io::WriteFileAtomic(Path("corpus.txt"), text).ok());
    auto r = RunDsv3(
        {"tokenizer", "train", "-o", Path("tok"), "--vocab-size", "300", Path("corpus.txt")});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string Path(const std::string& name) { return (*dir_) / name; }

  static std::vector<std::string> TrainArgs(const std::string& out, int steps) {
    return {"train",
            "-o",
            out,
            "--preset",
            "tiny-v3",
            "--mtp",
            "--tokenizer",
            Path("tok/tokenizer.json"),
            Path("corpus.txt"),
            "--steps",
            std::to_string(steps),
            "--batch",
            "4",
            "--seq-len",
            "16",
            "--threads",
            "2",
            "--seed",
            "3",
            "--eval-every",
            "4",
            "--warmup",
            "2",
            "-q"};
  }
  static testing::CommandResult Train(const std::string& out, int steps,
                                      std::vector<std::string> extra = {}) {
    auto args = TrainArgs(out, steps);
    args.insert(args.end(), extra.begin(), extra.end());
    return RunDsv3(args);
  }

  static testing::TempDir* dir_;
};
testing::TempDir* TrainCli::dir_ = nullptr;

TEST_F(TrainCli, ResumeIsBitIdenticalAndKeepsTwo) {
  const std::string a = Path("straight"), b = Path("split");
  auto r = Train(a, 8, {"--save-every", "100"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = Train(b, 8, {"--save-every", "2", "--stop-after", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(b + "/step-4"));
  EXPECT_FALSE(fs::exists(b + "/step-8"));
  r = Train(b, 8, {"--save-every", "2", "--resume"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    const std::string x = ReadAll(a + "/step-8/" + f), y = ReadAll(b + "/step-8/" + f);
    EXPECT_FALSE(x.empty());
    EXPECT_TRUE(x == y) << f << " differs between straight and resumed training";
  }
  // The last two checkpoints are kept, and latest points at the newest.
  EXPECT_EQ(ReadAll(b + "/latest"), "step-8\n");
  EXPECT_TRUE(fs::exists(b + "/step-6"));
  EXPECT_FALSE(fs::exists(b + "/step-4"));
  EXPECT_TRUE(train::VerifyCheckpoint(b + "/step-8").ok());

  // A damaged newest checkpoint: resume falls back to the previous one with a message.
  std::string bytes = ReadAll(b + "/step-8/model.safetensors");
  bytes[bytes.size() / 2] ^= 0x40;
  {
    std::ofstream f(b + "/step-8/model.safetensors", std::ios::binary | std::ios::trunc);
    f << bytes;
  }
  auto args = TrainArgs(b, 9);
  args.back() = "--resume";  // not quiet: the messages are checked
  r = RunDsv3(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("checksum mismatch"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("resumed from " + b + "/step-6"), std::string::npos) << r.err;
}

// Waits until `path` holds something other than `before` (a new checkpoint was published); false
// if the process ended first (it is then reaped) or after a generous limit, so that a stuck or
// failing trainer fails the test instead of hanging it.
bool WaitForChange(const std::string& path, const std::string& before, pid_t pid, bool* reaped) {
  const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < limit) {
    if (ReadAll(path) != before) return true;
    if (waitpid(pid, nullptr, WNOHANG) == pid) {
      *reaped = true;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

TEST_F(TrainCli, SurvivesSigkillAtAnyMoment) {
  const std::string out = Path("killed");
  // Checkpoint every step so that most of the run's time is spent inside checkpoint writes.
  auto args = TrainArgs(out, 1000);
  for (const char* s : {"--save-every", "1", "--resume"}) args.push_back(s);
  args.erase(args.begin());  // SpawnDsv3 adds the binary; keep "train" as first argument
  args.insert(args.begin(), "train");
  // First, kills at fixed times after start, before or during the first checkpoints depending on
  // the machine's speed (whatever they leave, even no checkpoint at all, must resume).
  for (int delay_ms : {300, 650}) {
    const pid_t pid = testing::SpawnDsv3(args);
    ASSERT_GT(pid, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    testing::KillAndReap(pid);
  }
  // Then each round waits until the trainer has published a new checkpoint (so the kills land at
  // a different point of the next step or checkpoint write however slow the machine is), then
  // kills it a few milliseconds later. Round 0 may wait for the very first checkpoint.
  for (int delay_ms : {0, 7, 23, 2, 41, 13, 31}) {
    const std::string before = ReadAll(out + "/latest");
    const pid_t pid = testing::SpawnDsv3(args);
    ASSERT_GT(pid, 0);
    bool reaped = false;
    const bool advanced = WaitForChange(out + "/latest", before, pid, &reaped);
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    if (!reaped) testing::KillAndReap(pid);
    ASSERT_TRUE(advanced) << "no new checkpoint after " << before;
  }
  // Whatever state the kills left, training resumes and writes a valid checkpoint.
  ASSERT_TRUE(fs::exists(out + "/latest"));
  auto r = Train(out, 1000, {"--resume", "--stop-after", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto found = train::FindResumableCheckpoint(out, [](const std::string&) {});
  ASSERT_TRUE(found.ok()) << found.status().message();
  EXPECT_TRUE(train::VerifyCheckpoint(*found).ok());
}

TEST_F(TrainCli, CheckpointMatchesReferenceAndInferenceModel) {
  const std::string out = Path("ref");
  auto r = Train(out, 3, {"--dtype", "f32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string step = out + "/step-3";
  const std::vector<int32_t> tokens = {5, 77, 120, 9, 33, 260, 1, 42};
  reference::ReferenceOptions ro;
  ro.mtp = true;
  auto ref = reference::ReferenceForward(step, tokens, ro);
  ASSERT_TRUE(ref.ok()) << ref.status().message();
  auto cfg = LoadModelConfig(step);
  ASSERT_TRUE(cfg.ok());
  auto model = train::TrainModel<double>::Create(*cfg);
  ASSERT_TRUE(model.ok());
  ASSERT_TRUE(model->LoadFrom(step).ok());
  std::vector<double> logits, mtp;
  model->Forward({}, tokens.data(), 1, static_cast<int64_t>(tokens.size()), &logits, &mtp);
  double d = 0, m = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    d = std::max(d, std::fabs(logits[i] - ref->logits[i]));
    m = std::max(m, std::fabs(ref->logits[i]));
  }
  EXPECT_LT(d / m, 1e-10);
  // The inference model (`dsv3 logits`) reads the trainer's checkpoint alike (f32 bound 1e-5).
  std::string ids;
  for (int32_t t : tokens) ids += (ids.empty() ? "" : ",") + std::to_string(t);
  r = RunDsv3({"logits", "-m", step, "--tokens", ids, "--out", Path("l.npy")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto npy = io::ReadNpyF32(Path("l.npy"));
  ASSERT_TRUE(npy.ok());
  ASSERT_EQ(npy->data.size(), ref->logits.size());
  d = 0;
  for (size_t i = 0; i < npy->data.size(); ++i)
    d = std::max(d, std::fabs(npy->data[i] - ref->logits[i]));
  EXPECT_LT(d / m, 1e-5);
  // BF16 checkpoints load too (dsv3 generate -m DIR).
  r = Train(Path("bf16"), 2, {"--dtype", "bf16"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = RunDsv3({"generate", "-m", Path("bf16") + "/step-2", "-p", "the lord", "-n", "4"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // The prompt as a positional argument, echoed before the continuation (as llama-cli does);
  // --no-echo prints the continuation alone, which the echoed output ends with.
  r = RunDsv3({"generate", "-m", Path("bf16") + "/step-2", "the lord", "-n", "4", "--temp", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("the lord", 0), 0u) << r.out;
  auto bare = RunDsv3({"generate", "-m", Path("bf16") + "/step-2", "the lord", "-n", "4", "--temp",
                       "0", "--no-echo"});
  ASSERT_EQ(bare.exit_code, 0) << bare.err;
  EXPECT_EQ(r.out, "the lord" + bare.out);
  r = RunDsv3({"generate", "-m", Path("bf16") + "/step-2", "the lord", "-p", "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("either as -p TEXT or as TEXT"), std::string::npos) << r.err;
}

TEST_F(TrainCli, BadInputsFailClearlyAndLeaveCheckpointsIntact) {
  const std::string out = Path("good");
  auto r = Train(out, 2);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string before = ReadAll(out + "/step-2/model.safetensors");

  ASSERT_TRUE(io::WriteFileAtomic(Path("empty.txt"), "").ok());
  auto args = TrainArgs(out, 4);
  args[8] = Path("empty.txt");
  args.push_back("--resume");
  r = RunDsv3(args);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("corpus is empty"), std::string::npos) << r.err;

  ASSERT_TRUE(io::WriteFileAtomic(Path("bad.txt"), "the lord \xff\xfe said\n").ok());
  args[8] = Path("bad.txt");
  r = RunDsv3(args);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("bad.txt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("UTF-8"), std::string::npos) << r.err;

  // A config the trainer cannot build (tied embeddings) and one that fails validation.
  auto cfg = LoadModelConfig(out + "/step-2");
  ASSERT_TRUE(cfg.ok());
  ModelConfig tied = *cfg;
  tied.tie_word_embeddings = true;
  ASSERT_TRUE(io::WriteFileAtomic(Path("tied.json"), tied.ToJson().dump()).ok());
  // --preset is in the common args: replace it by --config.
  args = TrainArgs(Path("tied-out"), 2);
  args[3] = "--config";
  args[4] = Path("tied.json");
  r = RunDsv3(args);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("tie_word_embeddings"), std::string::npos) << r.err;
  ModelConfig broken = *cfg;
  broken.num_attention_heads = 0;
  ASSERT_TRUE(io::WriteFileAtomic(Path("broken.json"), broken.ToJson().dump()).ok());
  args[4] = Path("broken.json");
  r = RunDsv3(args);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("num_attention_heads"), std::string::npos) << r.err;

  // An output directory that cannot be created (its parent is a file).
  r = Train(Path("corpus.txt") + "/sub", 2);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("output directory"), std::string::npos) << r.err;

  // A full disk: the file-size limit (ulimit -f, 512-byte blocks) makes every write past 8 KB fail
  // the way ENOSPC does. Resuming and saving step 4 must fail with a message and leave step 2
  // whole.
  args = TrainArgs(out, 4);
  args.push_back("--resume");
  std::vector<std::string> argv = {"/bin/sh", "-c", "ulimit -f 16 && exec \"$0\" \"$@\"",
                                   DSV3_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  r = testing::RunProgram(argv);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("error"), std::string::npos) << r.err;

  EXPECT_TRUE(train::VerifyCheckpoint(out + "/step-2").ok());
  EXPECT_EQ(ReadAll(out + "/step-2/model.safetensors"), before);
  EXPECT_EQ(ReadAll(out + "/latest"), "step-2\n");
  // And the run resumes once there is room again.
  r = Train(out, 4, {"--resume"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(train::VerifyCheckpoint(out + "/step-4").ok());
}

}  // namespace
}  // namespace dsv3
