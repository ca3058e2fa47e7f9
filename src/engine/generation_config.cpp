#include "engine/generation_config.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "io/files.h"

namespace dsv3 {

namespace {

// The number at `key`, if present (null counts as absent, as transformers treats it).
Result<std::optional<double>> Number(const nlohmann::json& j, const std::string& path,
                                     const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<double>{};
  if (!it->is_number()) return Err("{}: \"{}\" must be a number", path, key);
  return std::optional<double>{it->get<double>()};
}

}  // namespace

Result<SamplingParams> LoadGenerationConfig(const std::string& model_dir,
                                            const SamplingParams& base) {
  const std::string path = (std::filesystem::path(model_dir) / "generation_config.json").string();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return base;
  DSV3_ASSIGN_OR_RETURN(nlohmann::json j, io::ReadJsonFile(path));
  if (!j.is_object()) return Err("{}: expected a JSON object", path);
  SamplingParams p = base;
  bool do_sample = false;
  if (auto it = j.find("do_sample"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return Err("{}: \"do_sample\" must be true or false", path);
    do_sample = it->get<bool>();
  }
  DSV3_ASSIGN_OR_RETURN(auto temperature, Number(j, path, "temperature"));
  DSV3_ASSIGN_OR_RETURN(auto top_k, Number(j, path, "top_k"));
  DSV3_ASSIGN_OR_RETURN(auto top_p, Number(j, path, "top_p"));
  DSV3_ASSIGN_OR_RETURN(auto min_p, Number(j, path, "min_p"));
  DSV3_ASSIGN_OR_RETURN(auto penalty, Number(j, path, "repetition_penalty"));
  if (do_sample) {
    p.temperature = temperature.value_or(1.0);
    // transformers' defaults when sampling: top_k 50 unless the file says otherwise.
    p.top_k = static_cast<int64_t>(top_k.value_or(50));
    if (top_p) p.top_p = *top_p;
    if (min_p) p.min_p = *min_p;
  } else {
    p.temperature = 0;  // greedy; the sampling knobs do not matter
  }
  if (penalty) p.repetition_penalty = *penalty;
  if (Status s = p.Validate(); !s.ok()) return Err("{}: {}", path, s.message());
  return p;
}

}  // namespace dsv3
