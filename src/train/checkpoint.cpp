#include "train/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "io/files.h"
#include "io/safetensors.h"

namespace dsv3::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kManifest = "manifest.json";

// step number of a "step-N" directory name, or -1.
int64_t StepOf(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5) return -1;
  int64_t n = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    n = n * 10 + (name[i] - '0');
  }
  return n;
}

Status WriteTensors(const std::string& path, const ParamSet<float>& set, const std::string& prefix,
                    DType dtype) {
  std::vector<io::TensorToWrite> views;
  std::vector<std::vector<uint16_t>> bf16;
  bf16.reserve(set.tensors().size());
  for (const auto& t : set.tensors()) {
    const bool as_bf16 = dtype == DType::kBF16 && t.trainable;  // the bias stays F32 (spec §9.2)
    if (as_bf16) {
      bf16.emplace_back(t.data.size());
      for (size_t i = 0; i < t.data.size(); ++i) bf16.back()[i] = F32ToBf16(t.data[i]);
      views.push_back(
          {prefix + t.name, DType::kBF16, t.shape, bf16.back().data(), t.data.size() * 2});
    } else {
      views.push_back({prefix + t.name, DType::kF32, t.shape, t.data.data(), t.data.size() * 4});
    }
  }
  return io::WriteSafetensors(path, views);
}

Status ReadTensors(const std::string& path, const std::string& prefix, ParamSet<float>* set) {
  DSV3_ASSIGN_OR_RETURN(auto file, io::SafetensorsFile::Open(path, io::LoadMode::kRead));
  for (auto& t : set->tensors()) {
    const io::TensorInfo* info = file->Find(prefix + t.name);
    if (info == nullptr) return Err("{}: tensor {}{} is missing", path, prefix, t.name);
    if (info->dtype != DType::kF32 || info->shape != t.shape)
      return Err("{}: tensor {}{} is {} {}, expected F32 of {} elements", path, prefix, t.name,
                 DTypeName(info->dtype), info->ShapeString(), t.numel());
    std::memcpy(t.data.data(), info->data, t.data.size() * 4);
  }
  return Status::Ok();
}

Result<uint64_t> FileChecksum(const std::string& path) {
  DSV3_ASSIGN_OR_RETURN(std::string bytes, io::ReadFile(path));
  return Fnv1a64(bytes.data(), bytes.size());
}

}  // namespace

uint64_t Fnv1a64(const void* data, size_t n, uint64_t hash) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    hash ^= p[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

Result<std::string> SaveCheckpoint(const std::string& out_dir, const TrainModel<float>& model,
                                   const AdamW& optimizer, const TrainState& state,
                                   const SaveOptions& options) {
  const std::string name = fmt::format("step-{}", state.step);
  const std::string final_dir = out_dir + "/" + name;
  const std::string dir = final_dir + ".partial";
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  if (ec) return Err("{}: cannot create directory: {}", dir, ec.message());

  std::vector<std::string> files = {"config.json", "model.safetensors", "optimizer.safetensors",
                                    "trainer_state.json"};
  DSV3_RETURN_IF_ERROR(
      io::WriteFileAtomic(dir + "/config.json", model.config().ToJson().dump(2) + "\n"));
  DSV3_RETURN_IF_ERROR(WriteTensors(dir + "/model.safetensors", model.params(), "", options.dtype));
  {
    // m, v (and the fp32 master weights when the model file is rounded) in one file.
    std::vector<io::TensorToWrite> views;
    auto add = [&](const ParamSet<float>& set, const std::string& prefix) {
      for (const auto& t : set.tensors())
        views.push_back({prefix + t.name, DType::kF32, t.shape, t.data.data(), t.data.size() * 4});
    };
    add(optimizer.m(), "m.");
    add(optimizer.v(), "v.");
    if (options.dtype != DType::kF32) add(model.params(), "master.");
    DSV3_RETURN_IF_ERROR(io::WriteSafetensors(dir + "/optimizer.safetensors", views));
  }
  nlohmann::json st = {{"step", state.step},
                       {"adam_step", optimizer.step_count()},
                       {"seed", state.seed},
                       {"loader_epoch", state.loader.epoch},
                       {"loader_cursor", state.loader.cursor},
                       {"tokens_seen", state.tokens_seen},
                       {"corpus_fingerprint", state.corpus_fingerprint},
                       {"model_dtype", std::string(DTypeName(options.dtype))}};
  DSV3_RETURN_IF_ERROR(io::WriteFileAtomic(dir + "/trainer_state.json", st.dump(2) + "\n"));
  for (const auto& [src, dst] : {std::pair{options.tokenizer_json, "tokenizer.json"},
                                 std::pair{options.tokenizer_config, "tokenizer_config.json"}}) {
    if (src.empty()) continue;
    DSV3_ASSIGN_OR_RETURN(std::string bytes, io::ReadFile(src));
    DSV3_RETURN_IF_ERROR(io::WriteFileAtomic(dir + "/" + dst, bytes));
    files.push_back(dst);
  }
  // The manifest is computed from the files as they are on disk, after they were synced.
  nlohmann::json manifest = nlohmann::json::object();
  for (const std::string& f : files) {
    DSV3_ASSIGN_OR_RETURN(uint64_t sum, FileChecksum(dir + "/" + f));
    manifest[f] = fmt::format("{:016x}", sum);
  }
  DSV3_RETURN_IF_ERROR(io::WriteFileAtomic(dir + "/" + kManifest,
                                           nlohmann::json{{"fnv1a64", manifest}}.dump(2) + "\n"));
  fs::remove_all(final_dir, ec);  // a stale copy of this step (a resumed run re-saving it)
  fs::rename(dir, final_dir, ec);
  if (ec) return Err("{}: cannot rename to {}: {}", dir, final_dir, ec.message());
  // Syncs out_dir (the rename) as a side effect of the atomic write into it.
  DSV3_RETURN_IF_ERROR(io::WriteFileAtomic(out_dir + "/latest", name + "\n"));

  // Keep the newest `keep` step directories; drop stale partial ones.
  std::vector<std::pair<int64_t, fs::path>> steps;
  for (const auto& entry : fs::directory_iterator(out_dir, ec)) {
    const std::string n = entry.path().filename().string();
    if (n.size() > 8 && n.ends_with(".partial") && StepOf(n.substr(0, n.size() - 8)) >= 0) {
      fs::remove_all(entry.path(), ec);
      continue;
    }
    const int64_t s = StepOf(n);
    if (s >= 0) steps.emplace_back(s, entry.path());
  }
  std::sort(steps.begin(), steps.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = static_cast<size_t>(std::max(options.keep, 1)); i < steps.size(); ++i)
    fs::remove_all(steps[i].second, ec);
  return final_dir;
}

Status VerifyCheckpoint(const std::string& step_dir) {
  DSV3_ASSIGN_OR_RETURN(nlohmann::json manifest, io::ReadJsonFile(step_dir + "/" + kManifest));
  if (!manifest.contains("fnv1a64") || !manifest["fnv1a64"].is_object())
    return Err("{}/{}: no fnv1a64 object", step_dir, kManifest);
  for (const auto& [file, expected] : manifest["fnv1a64"].items()) {
    if (!expected.is_string()) return Err("{}/{}: bad entry for {}", step_dir, kManifest, file);
    DSV3_ASSIGN_OR_RETURN(uint64_t sum, FileChecksum(step_dir + "/" + file));
    if (fmt::format("{:016x}", sum) != expected.get<std::string>())
      return Err("{}/{}: checksum mismatch (the file is damaged)", step_dir, file);
  }
  for (const char* required :
       {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    if (!manifest["fnv1a64"].contains(required))
      return Err("{}: manifest does not list {}", step_dir, required);
  return Status::Ok();
}

Result<std::string> FindResumableCheckpoint(const std::string& out_dir,
                                            const std::function<void(const std::string&)>& warn) {
  std::vector<std::string> candidates;
  if (auto latest = io::ReadFile(out_dir + "/latest"); latest.ok()) {
    std::string n = *latest;
    while (!n.empty() && (n.back() == '\n' || n.back() == '\r')) n.pop_back();
    if (StepOf(n) >= 0) candidates.push_back(n);
  }
  std::vector<std::pair<int64_t, std::string>> steps;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(out_dir, ec)) {
    const std::string n = entry.path().filename().string();
    if (StepOf(n) >= 0 && entry.is_directory()) steps.emplace_back(StepOf(n), n);
  }
  if (ec) return Err("{}: cannot list directory: {}", out_dir, ec.message());
  std::sort(steps.begin(), steps.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& s : steps)
    if (std::find(candidates.begin(), candidates.end(), s.second) == candidates.end())
      candidates.push_back(s.second);
  for (const std::string& c : candidates) {
    const std::string dir = out_dir + "/" + c;
    const Status ok = VerifyCheckpoint(dir);
    if (ok.ok()) return dir;
    warn(fmt::format("checkpoint {} is not usable ({}); trying an older one", dir, ok.message()));
  }
  return Err("{}: no usable checkpoint to resume from", out_dir);
}

Status LoadCheckpoint(const std::string& step_dir, TrainModel<float>* model, AdamW* optimizer,
                      TrainState* state) {
  DSV3_ASSIGN_OR_RETURN(nlohmann::json st, io::ReadJsonFile(step_dir + "/trainer_state.json"));
  try {
    state->step = st.at("step").get<int64_t>();
    state->seed = st.at("seed").get<uint64_t>();
    state->loader.epoch = st.at("loader_epoch").get<int64_t>();
    state->loader.cursor = st.at("loader_cursor").get<int64_t>();
    state->tokens_seen = st.at("tokens_seen").get<int64_t>();
    state->corpus_fingerprint = st.at("corpus_fingerprint").get<uint64_t>();
    optimizer->set_step_count(st.at("adam_step").get<int64_t>());
    const bool f32 = st.at("model_dtype").get<std::string>() == "F32";
    DSV3_RETURN_IF_ERROR(model->LoadFrom(step_dir));
    const std::string opt = step_dir + "/optimizer.safetensors";
    if (!f32) DSV3_RETURN_IF_ERROR(ReadTensors(opt, "master.", &model->params()));
  } catch (const nlohmann::json::exception& e) {
    return Err("{}/trainer_state.json: {}", step_dir, e.what());
  }
  const std::string opt = step_dir + "/optimizer.safetensors";
  DSV3_RETURN_IF_ERROR(ReadTensors(opt, "m.", &optimizer->m()));
  return ReadTensors(opt, "v.", &optimizer->v());
}

}  // namespace dsv3::train
