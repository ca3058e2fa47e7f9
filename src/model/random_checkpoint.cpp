#include "model/random_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include <fmt/format.h>

#include "io/files.h"
#include "io/safetensors.h"
#include "ops/quant.h"

namespace dsv3 {

namespace {

// Normal deviates from a fixed generator and our own Box-Muller transform: the standard
// library's distributions are implementation-defined, and checkpoints must not depend on that.
class Gaussian {
 public:
  explicit Gaussian(uint64_t seed) : engine_(seed) {}
  double Next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1, u2;
    do {
      u1 = Uniform();
    } while (u1 <= 0.0);
    u2 = Uniform();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = radius * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return radius * std::cos(2.0 * M_PI * u2);
  }

 private:
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  std::mt19937_64 engine_;
  double spare_ = 0;
  bool has_spare_ = false;
};

// Describes the tensors of the checkpoint and generates each one when the writer asks for it
// (io::TensorToWrite::produce, called in tensor order), so memory holds one shard, not the whole
// checkpoint. The generator is drawn from in that order, the order the tensors were declared in.
class TensorSink {
 public:
  TensorSink(const RandomCheckpointOptions& options) : options_(options), rng_(options.seed) {}

  // A linear weight [rows, cols] ~ N(0, std^2), in the checkpoint's dtype (FP8 gets block scales).
  void Linear(const std::string& name, int64_t rows, int64_t cols, bool allow_fp8 = true) {
    const double stddev = 1.0 / std::sqrt(static_cast<double>(cols));
    DType dtype = options_.dtype;
    if (dtype == DType::kF8E4M3 && !allow_fp8) dtype = DType::kBF16;
    Declare(name, dtype, {rows, cols}, [this, stddev](std::vector<float>* values) {
      for (float& v : *values) v = static_cast<float>(rng_.Next() * stddev);
    });
  }
  // Embedding-like matrix (never FP8, as in the official checkpoints), N(0, 1).
  void Table(const std::string& name, int64_t rows, int64_t cols) {
    Declare(name, HighDType(), {rows, cols}, [this](std::vector<float>* values) {
      for (float& v : *values) v = static_cast<float>(rng_.Next());
    });
  }
  // A norm weight near 1 (not exactly 1, so a missing multiply would show).
  void Norm(const std::string& name, int64_t n) {
    Declare(name, HighDType(), {n}, [this](std::vector<float>* values) {
      for (float& v : *values) v = static_cast<float>(1.0 + 0.2 * rng_.Next());
    });
  }
  // The router's selection bias: F32 always (spec §9.2).
  void Bias(const std::string& name, int64_t n) {
    Declare(name, DType::kF32, {n}, [this](std::vector<float>* values) {
      for (float& v : *values) v = static_cast<float>(0.1 * rng_.Next());
    });
  }

  std::vector<io::TensorToWrite> Views() {
    std::vector<io::TensorToWrite> views;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const Tensor& t = tensors_[i];
      io::TensorToWrite view;
      view.name = t.name;
      view.dtype = t.dtype;
      view.shape = t.shape;
      view.nbytes = t.nbytes;
      view.produce = [this, i](std::vector<uint8_t>* bytes) { return Produce(i, bytes); };
      views.push_back(std::move(view));
    }
    return views;
  }

 private:
  using Generator = std::function<void(std::vector<float>*)>;
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    size_t nbytes = 0;
    Generator generate;  // empty for an FP8 scale grid: made with its weight
  };

  DType HighDType() const { return options_.dtype == DType::kF32 ? DType::kF32 : DType::kBF16; }

  void Declare(const std::string& name, DType dtype, std::vector<int64_t> shape,
               Generator generate) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    tensors_.push_back({name, dtype, shape, static_cast<size_t>(n) * DTypeSize(dtype), generate});
    if (dtype != DType::kF8E4M3) return;
    const int64_t grid_rows = (shape[0] + options_.fp8_block_rows - 1) / options_.fp8_block_rows;
    const int64_t grid_cols = (shape[1] + options_.fp8_block_cols - 1) / options_.fp8_block_cols;
    tensors_.push_back({name + "_scale_inv",
                        DType::kF32,
                        {grid_rows, grid_cols},
                        static_cast<size_t>(grid_rows * grid_cols) * 4,
                        nullptr});
  }

  Status Produce(size_t i, std::vector<uint8_t>* bytes) {
    const Tensor& t = tensors_[i];
    if (!t.generate) {  // the scale grid made with the FP8 weight before it
      *bytes = std::move(pending_scales_);
      pending_scales_ = {};
      return Status::Ok();
    }
    std::vector<float> values(t.nbytes / DTypeSize(t.dtype));
    t.generate(&values);
    const size_t n = values.size();
    if (t.dtype == DType::kF32) {
      bytes->resize(n * 4);
      std::memcpy(bytes->data(), values.data(), n * 4);
    } else if (t.dtype == DType::kBF16) {
      bytes->resize(n * 2);
      for (size_t k = 0; k < n; ++k) {
        const uint16_t b = F32ToBf16(values[k]);
        std::memcpy(bytes->data() + 2 * k, &b, 2);
      }
    } else {  // FP8 with a block scale grid, quantised as DeepSeek did: scale = amax / 448.
      const int64_t rows = t.shape[0], cols = t.shape[1];
      const int64_t br = options_.fp8_block_rows, bc = options_.fp8_block_cols;
      const int64_t grid_rows = (rows + br - 1) / br, grid_cols = (cols + bc - 1) / bc;
      std::vector<float> scales(static_cast<size_t>(grid_rows * grid_cols));
      bytes->resize(n);
      ops::QuantizeFp8Blocks(values.data(), rows, cols, br, bc, bytes->data(), scales.data());
      pending_scales_.resize(scales.size() * 4);
      std::memcpy(pending_scales_.data(), scales.data(), scales.size() * 4);
    }
    return Status::Ok();
  }

  const RandomCheckpointOptions& options_;
  Gaussian rng_;
  std::vector<Tensor> tensors_;
  std::vector<uint8_t> pending_scales_;  // the last FP8 weight's scale grid, written next
};

void AddMlp(TensorSink& sink, const std::string& prefix, int64_t H, int64_t width) {
  sink.Linear(prefix + ".gate_proj.weight", width, H);
  sink.Linear(prefix + ".up_proj.weight", width, H);
  sink.Linear(prefix + ".down_proj.weight", H, width);
}

void AddLayer(TensorSink& sink, const ModelConfig& c, int64_t index) {
  const std::string p = fmt::format("model.layers.{}", index);
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  sink.Norm(p + ".input_layernorm.weight", H);
  sink.Norm(p + ".post_attention_layernorm.weight", H);
  if (c.has_q_lora()) {
    sink.Linear(p + ".self_attn.q_a_proj.weight", c.q_lora_rank, H);
    sink.Norm(p + ".self_attn.q_a_layernorm.weight", c.q_lora_rank);
    sink.Linear(p + ".self_attn.q_b_proj.weight", nh * c.qk_head_dim(), c.q_lora_rank);
  } else {
    sink.Linear(p + ".self_attn.q_proj.weight", nh * c.qk_head_dim(), H);
  }
  sink.Linear(p + ".self_attn.kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, H);
  sink.Norm(p + ".self_attn.kv_a_layernorm.weight", c.kv_lora_rank);
  sink.Linear(p + ".self_attn.kv_b_proj.weight", nh * (c.qk_nope_head_dim + c.v_head_dim),
              c.kv_lora_rank);
  sink.Linear(p + ".self_attn.o_proj.weight", H, nh * c.v_head_dim);
  if (!c.IsMoeLayer(index)) {
    AddMlp(sink, p + ".mlp", H, c.intermediate_size);
    return;
  }
  // The router is BF16 in the official checkpoints; bigger-than-usual values make routing
  // decisions clear-cut (no near-ties between experts).
  sink.Linear(p + ".mlp.gate.weight", c.n_routed_experts, H, /*allow_fp8=*/false);
  if (c.topk_method == "noaux_tc")
    sink.Bias(p + ".mlp.gate.e_score_correction_bias", c.n_routed_experts);
  for (int64_t e = 0; e < c.n_routed_experts; ++e)
    AddMlp(sink, fmt::format("{}.mlp.experts.{}", p, e), H, c.moe_intermediate_size);
  if (c.n_shared_experts > 0)
    AddMlp(sink, p + ".mlp.shared_experts", H, c.n_shared_experts * c.moe_intermediate_size);
}

}  // namespace

Status WriteRandomCheckpoint(const ModelConfig& base, const RandomCheckpointOptions& options,
                             const std::string& dir) {
  if (options.dtype != DType::kF32 && options.dtype != DType::kBF16 &&
      options.dtype != DType::kF8E4M3)
    return Err("init: dtype {} is not supported (f32, bf16, fp8)", DTypeName(options.dtype));
  ModelConfig c = base;
  c.num_nextn_predict_layers = options.mtp ? 1 : 0;
  c.quantization_config.reset();
  if (options.dtype == DType::kF8E4M3) {
    QuantizationConfig q;
    q.quant_method = "fp8";
    q.fmt = "e4m3";
    q.weight_block_size[0] = options.fp8_block_rows;
    q.weight_block_size[1] = options.fp8_block_cols;
    c.quantization_config = q;
  }
  DSV3_RETURN_IF_ERROR(c.Validate());

  TensorSink sink(options);
  const int64_t H = c.hidden_size, V = c.vocab_size;
  sink.Table("model.embed_tokens.weight", V, H);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) AddLayer(sink, c, i);
  sink.Norm("model.norm.weight", H);
  if (!c.tie_word_embeddings) sink.Linear("lm_head.weight", V, H, /*allow_fp8=*/false);
  if (options.mtp) {
    const int64_t m = c.num_hidden_layers;
    const std::string p = fmt::format("model.layers.{}", m);
    sink.Table(p + ".embed_tokens.weight", V, H);
    sink.Norm(p + ".enorm.weight", H);
    sink.Norm(p + ".hnorm.weight", H);
    sink.Linear(p + ".eh_proj.weight", H, 2 * H, /*allow_fp8=*/false);
    AddLayer(sink, c, m);
    sink.Norm(p + ".shared_head.norm.weight", H);
    sink.Linear(p + ".shared_head.head.weight", V, H, /*allow_fp8=*/false);
  }

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Err("{}: cannot create directory: {}", dir, ec.message());
  DSV3_RETURN_IF_ERROR(io::WriteCheckpoint(dir, sink.Views(), options.num_shards));
  return io::WriteFileAtomic(dir + "/config.json", c.ToJson().dump(2) + "\n");
}

}  // namespace dsv3
