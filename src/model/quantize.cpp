#include "model/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "io/files.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "ops/isa.h"
#include "ops/matmul.h"
#include "ops/quant.h"

namespace dsv3 {

namespace {

constexpr int64_t kFp8Block = 128;

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool IsOutputHead(const io::TensorInfo& t) {
  return t.name == "lm_head.weight" || EndsWith(t.name, ".shared_head.head.weight");
}

// Whether the tensor is a linear weight --type applies to (see quantize.h).
bool IsConvertedMatrix(const io::TensorInfo& t) {
  if (t.shape.size() != 2 || !EndsWith(t.name, ".weight") || IsOutputHead(t)) return false;
  if (EndsWith(t.name, "embed_tokens.weight") || EndsWith(t.name, ".mlp.gate.weight")) return false;
  return t.dtype != DType::kF64 && t.dtype != DType::kI32 && t.dtype != DType::kI64;
}

// The type the tensor is converted to, or nullopt when it is kept at >= BF16 (see quantize.h).
std::optional<QuantType> TargetType(const io::TensorInfo& t, const QuantizeOptions& options) {
  if (IsConvertedMatrix(t)) return options.type;
  if (t.shape.size() == 2 && EndsWith(t.name, ".weight") && IsOutputHead(t))
    return options.lm_head_type ? options.lm_head_type : DefaultLmHeadType(options.type);
  return std::nullopt;
}

bool IsIntegerType(QuantType type) {
  return type == QuantType::kQ8_0 || type == QuantType::kQ4_0;
}

// An explicit --lm-head-type must fit the model's one quantization_config (see quantize.h).
Status CheckLmHeadType(const QuantizeOptions& options) {
  if (!options.lm_head_type) return Status::Ok();
  const QuantType head = *options.lm_head_type;
  if (head == QuantType::kF32 || head == QuantType::kBF16 || head == options.type ||
      (IsIntegerType(head) && IsIntegerType(options.type)))
    return Status::Ok();
  return Err(
      "--lm-head-type {} cannot go with --type {}: a model holds one quantization_config "
      "(fp8 heads need --type fp8; q8_0 / q4_0 heads need --type q8_0 or q4_0)",
      QuantTypeName(head), QuantTypeName(options.type));
}

// The source tensor as a WeightView (scales found by name, as the loader does).
Result<ops::WeightView> SourceView(const io::Checkpoint& in, const ModelConfig& config,
                                   const io::TensorInfo& t) {
  ops::WeightView w;
  w.dtype = t.dtype;
  w.rows = t.shape.size() == 2 ? t.shape[0] : 1;
  w.cols = t.shape.empty() ? 1 : t.shape.back();
  w.data = t.data;
  if (t.shape.size() > 2)
    return Err("{}: tensor '{}' has {} dimensions", t.file, t.name, t.shape.size());
  switch (t.dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return w;
    case DType::kF8E4M3:
    case DType::kI8:
    case DType::kU8:
      break;
    default:
      return Err("{}: tensor '{}' has dtype {}, which quantize cannot read", t.file, t.name,
                 DTypeName(t.dtype));
  }
  const io::TensorInfo* s = in.Find(t.name + "_scale_inv");
  if (s == nullptr || s->dtype != DType::kF32 || s->shape.size() != 2)
    return Err("{}: tensor '{}' has no F32 scale tensor '{}_scale_inv'", t.file, t.name, t.name);
  w.scale = reinterpret_cast<const float*>(s->data);
  if (t.dtype == DType::kF8E4M3) {
    if (config.quantization_config) {
      w.block_rows = config.quantization_config->weight_block_size[0];
      w.block_cols = config.quantization_config->weight_block_size[1];
    }
    if (s->shape[0] != (w.rows + w.block_rows - 1) / w.block_rows ||
        s->shape[1] != (w.cols + w.block_cols - 1) / w.block_cols)
      return Err("{}: scale tensor '{}_scale_inv' has shape {}", s->file, t.name, s->ShapeString());
    return w;
  }
  w.group_size = config.quantization_config ? config.quantization_config->group_size : 32;
  const int64_t groups = s->shape[1];
  // q4_0 stores ceil(cols / 2) bytes per row, so an odd width cannot be told from the tensor
  // alone: it is read as the even width above it (real models have even widths; the loader
  // rejects the converted tensor otherwise, naming it).
  w.cols = t.dtype == DType::kU8 ? 2 * t.shape[1] : t.shape[1];
  if (s->shape[0] != w.rows || groups != (w.cols + w.group_size - 1) / w.group_size)
    return Err("{}: scale tensor '{}_scale_inv' has shape {}", s->file, t.name, s->ShapeString());
  return w;
}

void AppendF32(const std::vector<float>& v, std::vector<uint8_t>* bytes) {
  const size_t at = bytes->size();
  bytes->resize(at + v.size() * 4);
  std::memcpy(bytes->data() + at, v.data(), v.size() * 4);
}

void AppendBf16(const std::vector<float>& v, std::vector<uint8_t>* bytes) {
  const size_t at = bytes->size();
  bytes->resize(at + v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = F32ToBf16(v[i]);
    std::memcpy(bytes->data() + at + 2 * i, &h, 2);
  }
}

// What one source tensor becomes: its format in the output and the output tensors (the weight,
// and for fp8 / q8_0 / q4_0 its scale), known before any conversion so that the writer can place
// them in shards and convert them when their shard is written.
struct TensorPlan {
  const io::TensorInfo* source = nullptr;
  QuantType format = QuantType::kBF16;
  std::vector<io::TensorToWrite> outputs;  // names, dtypes, shapes and sizes; no data
};

Result<TensorPlan> PlanTensor(const io::Checkpoint& in, const ModelConfig& config,
                              const io::TensorInfo& t, const QuantizeOptions& options) {
  DSV3_ASSIGN_OR_RETURN(ops::WeightView w, SourceView(in, config, t));
  TensorPlan p;
  p.source = &t;
  const std::optional<QuantType> target = TargetType(t, options);
  // --type bf16 makes a BF16 model: only the router bias stays F32 (as in the official ones).
  const bool keep_f32 =
      !target && t.dtype == DType::kF32 &&
      (options.type != QuantType::kBF16 || EndsWith(t.name, "e_score_correction_bias"));
  p.format = target                            ? *target
             : options.type == QuantType::kF32 ? QuantType::kF32
             : keep_f32                        ? QuantType::kF32
                                               : QuantType::kBF16;

  const int64_t n = w.rows * w.cols;
  const auto out = [&](std::string name, DType dtype, std::vector<int64_t> shape, int64_t bytes) {
    io::TensorToWrite o;
    o.name = std::move(name);
    o.dtype = dtype;
    o.shape = std::move(shape);
    o.nbytes = static_cast<size_t>(bytes);
    p.outputs.push_back(std::move(o));
  };
  const std::vector<int64_t> shape =
      t.shape.size() == 1 ? std::vector<int64_t>{w.cols} : std::vector<int64_t>{w.rows, w.cols};
  const int64_t groups = ops::QuantGroups(w.cols);
  switch (p.format) {
    case QuantType::kF32:
      out(t.name, DType::kF32, shape, 4 * n);
      break;
    case QuantType::kBF16:
      out(t.name, DType::kBF16, shape, 2 * n);
      break;
    case QuantType::kFp8: {
      const int64_t gr = (w.rows + kFp8Block - 1) / kFp8Block;
      const int64_t gc = (w.cols + kFp8Block - 1) / kFp8Block;
      out(t.name, DType::kF8E4M3, shape, n);
      out(t.name + "_scale_inv", DType::kF32, {gr, gc}, 4 * gr * gc);
      break;
    }
    case QuantType::kQ8_0:
      out(t.name, DType::kI8, shape, n);
      out(t.name + "_scale_inv", DType::kF32, {w.rows, groups}, 4 * w.rows * groups);
      break;
    case QuantType::kQ4_0: {
      const int64_t row_bytes = ops::Q4RowBytes(w.cols);
      out(t.name, DType::kU8, {w.rows, row_bytes}, w.rows * row_bytes);
      out(t.name + "_scale_inv", DType::kF32, {w.rows, groups}, 4 * w.rows * groups);
      break;
    }
  }
  return p;
}

// The bytes of each of the plan's outputs, in order.
Status ConvertTensor(const io::Checkpoint& in, const ModelConfig& config, const TensorPlan& p,
                     std::vector<std::vector<uint8_t>>* parts) {
  DSV3_ASSIGN_OR_RETURN(ops::WeightView w, SourceView(in, config, *p.source));
  // values: [rows, cols] f32, exactly the model's dequantised weights (the SIMD decoder gives the
  // reference's bits).
  std::vector<float> values(static_cast<size_t>(w.rows * w.cols));
  const ops::Isa isa = ops::BestIsa();
  for (int64_t r = 0; r < w.rows; ++r) ops::DequantizeRow(isa, w, r, values.data() + r * w.cols);
  parts->assign(p.outputs.size(), {});
  std::vector<uint8_t>& bytes = (*parts)[0];
  const int64_t gs = ops::kQuantGroupSize, groups = ops::QuantGroups(w.cols);
  std::vector<float> scale;
  switch (p.format) {
    case QuantType::kF32:
      AppendF32(values, &bytes);
      return Status::Ok();
    case QuantType::kBF16:
      AppendBf16(values, &bytes);
      return Status::Ok();
    case QuantType::kFp8:
      bytes.resize(static_cast<size_t>(w.rows * w.cols));
      scale.resize(static_cast<size_t>(((w.rows + kFp8Block - 1) / kFp8Block) *
                                       ((w.cols + kFp8Block - 1) / kFp8Block)));
      ops::QuantizeFp8Blocks(values.data(), w.rows, w.cols, kFp8Block, kFp8Block, bytes.data(),
                             scale.data());
      break;
    case QuantType::kQ8_0:
      scale.resize(static_cast<size_t>(w.rows * groups));
      bytes.resize(static_cast<size_t>(w.rows * w.cols));
      for (int64_t r = 0; r < w.rows; ++r)
        ops::QuantizeRowQ8_0(values.data() + r * w.cols, w.cols, gs,
                             reinterpret_cast<int8_t*>(bytes.data()) + r * w.cols,
                             scale.data() + r * groups);
      break;
    case QuantType::kQ4_0: {
      const int64_t row_bytes = ops::Q4RowBytes(w.cols);
      scale.resize(static_cast<size_t>(w.rows * groups));
      bytes.resize(static_cast<size_t>(w.rows * row_bytes));
      for (int64_t r = 0; r < w.rows; ++r)
        ops::QuantizeRowQ4_0(values.data() + r * w.cols, w.cols, gs, bytes.data() + r * row_bytes,
                             scale.data() + r * groups);
      break;
    }
  }
  AppendF32(scale, &(*parts)[1]);
  return Status::Ok();
}

// Converts each source tensor when the writer first asks for one of its outputs, and hands the
// outputs out one by one, so memory holds about one shard of converted bytes at a time.
class LazyConverter {
 public:
  LazyConverter(const io::Checkpoint& in, const ModelConfig& config, const TensorPlan& plan,
                std::function<void()> on_converted)
      : in_(in), config_(config), plan_(plan), on_converted_(std::move(on_converted)) {}

  Status Take(size_t output, std::vector<uint8_t>* bytes) {
    if (!converted_) {
      DSV3_RETURN_IF_ERROR(ConvertTensor(in_, config_, plan_, &parts_));
      converted_ = true;
      if (on_converted_) on_converted_();
    }
    *bytes = std::move(parts_[output]);
    parts_[output] = {};
    return Status::Ok();
  }

 private:
  const io::Checkpoint& in_;
  const ModelConfig& config_;
  const TensorPlan& plan_;
  std::function<void()> on_converted_;
  bool converted_ = false;
  std::vector<std::vector<uint8_t>> parts_;
};

nlohmann::json QuantizationJson(QuantType type, const std::vector<std::string>& kept) {
  if (type == QuantType::kFp8)
    return {{"activation_scheme", "dynamic"},
            {"fmt", "e4m3"},
            {"quant_method", "fp8"},
            {"weight_block_size", {kFp8Block, kFp8Block}}};
  return {{"quant_method", "dsv3"},
          {"fmt", type == QuantType::kQ8_0 ? "q8_0" : "q4_0"},
          {"group_size", ops::kQuantGroupSize},
          {"modules_to_not_convert", kept}};
}

}  // namespace

std::optional<QuantType> DefaultLmHeadType(QuantType type) {
  if (IsIntegerType(type)) return QuantType::kQ8_0;
  return std::nullopt;
}

Result<QuantType> ParseQuantType(const std::string& name) {
  if (name == "f32") return QuantType::kF32;
  if (name == "bf16") return QuantType::kBF16;
  if (name == "fp8") return QuantType::kFp8;
  if (name == "q8_0") return QuantType::kQ8_0;
  if (name == "q4_0") return QuantType::kQ4_0;
  return Err("--type: '{}' is not one of f32, bf16, fp8, q8_0, q4_0", name);
}

const char* QuantTypeName(QuantType type) {
  switch (type) {
    case QuantType::kF32:
      return "f32";
    case QuantType::kBF16:
      return "bf16";
    case QuantType::kFp8:
      return "fp8";
    case QuantType::kQ8_0:
      return "q8_0";
    case QuantType::kQ4_0:
      return "q4_0";
  }
  return "?";
}

Status QuantizeModel(const std::string& in_dir, const std::string& out_dir,
                     const QuantizeOptions& options) {
  namespace fs = std::filesystem;
  DSV3_RETURN_IF_ERROR(CheckLmHeadType(options));
  DSV3_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(in_dir));
  DSV3_ASSIGN_OR_RETURN(nlohmann::json config_json, io::ReadJsonFile(in_dir + "/config.json"));
  DSV3_ASSIGN_OR_RETURN(auto in, io::Checkpoint::Open(in_dir, io::LoadMode::kMmap));

  std::vector<const io::TensorInfo*> sources;
  for (const std::string& name : in->TensorNames()) {
    // Scales travel with their weight; a scale whose weight is absent is dropped with it.
    if (EndsWith(name, "_scale_inv") && in->Find(name.substr(0, name.size() - 10)) != nullptr)
      continue;
    sources.push_back(in->Find(name));
  }
  std::vector<TensorPlan> plans;
  std::vector<std::string> kept;  // matrices left at higher precision, for the config
  for (const io::TensorInfo* t : sources) {
    const std::optional<QuantType> target = TargetType(*t, options);
    if (t->shape.size() == 2 &&
        (!target || *target == QuantType::kF32 || *target == QuantType::kBF16))
      kept.push_back(t->name.substr(0, t->name.size() - std::string(".weight").size()));
    DSV3_ASSIGN_OR_RETURN(TensorPlan plan, PlanTensor(*in, config, *t, options));
    plans.push_back(std::move(plan));
  }

  if (options.type == QuantType::kF32 || options.type == QuantType::kBF16)
    config_json.erase("quantization_config");
  else
    config_json["quantization_config"] = QuantizationJson(options.type, kept);
  config_json["torch_dtype"] = options.type == QuantType::kF32 ? "float32" : "bfloat16";

  // Each output tensor is produced when its shard is written (io::TensorToWrite::produce).
  const int64_t total = static_cast<int64_t>(plans.size());
  int64_t done = 0;
  std::vector<std::unique_ptr<LazyConverter>> converters;
  std::vector<io::TensorToWrite> views;
  int64_t bytes = 0;
  for (const TensorPlan& plan : plans) {
    converters.push_back(std::make_unique<LazyConverter>(*in, config, plan, [&] {
      ++done;
      if (options.progress) options.progress(done, total);
    }));
    LazyConverter* converter = converters.back().get();
    for (size_t i = 0; i < plan.outputs.size(); ++i) {
      io::TensorToWrite view = plan.outputs[i];
      view.produce = [converter, i](std::vector<uint8_t>* out) { return converter->Take(i, out); };
      bytes += static_cast<int64_t>(view.nbytes);
      views.push_back(std::move(view));
    }
  }
  const int shards = static_cast<int>(
      std::max<int64_t>(1, (bytes + options.shard_bytes - 1) / options.shard_bytes));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return Err("{}: cannot create directory: {}", out_dir, ec.message());
  DSV3_RETURN_IF_ERROR(io::WriteCheckpoint(out_dir, views, shards));
  DSV3_RETURN_IF_ERROR(io::WriteFileAtomic(out_dir + "/config.json", config_json.dump(2) + "\n"));
  for (const char* file : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    const fs::path src = fs::path(in_dir) / file;
    if (!fs::exists(src)) continue;
    fs::copy_file(src, fs::path(out_dir) / file, fs::copy_options::overwrite_existing, ec);
    if (ec) return Err("{}: cannot copy to {}: {}", src.string(), out_dir, ec.message());
  }
  return Status::Ok();
}

}  // namespace dsv3
