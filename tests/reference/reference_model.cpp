// Naive float64 reference of the DeepSeek-V3 forward pass. Every formula cites the section of
// /work/shared/spec/deepseek-v3.md ("spec") it implements. Shares no code with src/model.
#include "reference/reference_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <numbers>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace dsv3::reference {

namespace {

using nlohmann::json;

// ============================================================================================
// Dense row-major matrices of doubles
// ============================================================================================

struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;
  Mat() = default;
  Mat(int64_t r, int64_t c) : rows(r), cols(c), v(static_cast<size_t>(r * c), 0.0) {}
  double* row(int64_t i) { return v.data() + i * cols; }
  const double* row(int64_t i) const { return v.data() + i * cols; }
  double& at(int64_t i, int64_t j) { return v[static_cast<size_t>(i * cols + j)]; }
  double at(int64_t i, int64_t j) const { return v[static_cast<size_t>(i * cols + j)]; }
};

// linear(x, W) = x @ W^T, W stored [out_features, in_features], no bias (spec notation).
Mat Linear(const Mat& x, const Mat& w) {
  Mat y(x.rows, w.rows);
  for (int64_t t = 0; t < x.rows; ++t) {
    for (int64_t o = 0; o < w.rows; ++o) {
      double sum = 0.0;
      for (int64_t i = 0; i < x.cols; ++i) sum += x.at(t, i) * w.at(o, i);
      y.at(t, o) = sum;
    }
  }
  return y;
}

// RMSNorm(x, w) = w ⊙ x / sqrt(mean_j(x_j²) + eps): no bias, no "1 + w" (spec §3).
void RmsNorm(const double* x, int64_t n, const std::vector<double>& w, double eps, double* out) {
  double sum_sq = 0.0;
  for (int64_t j = 0; j < n; ++j) sum_sq += x[j] * x[j];
  const double inv_rms = 1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps);
  for (int64_t j = 0; j < n; ++j) out[j] = w[static_cast<size_t>(j)] * (x[j] * inv_rms);
}

Mat RmsNormRows(const Mat& x, const std::vector<double>& w, double eps) {
  Mat y(x.rows, x.cols);
  for (int64_t t = 0; t < x.rows; ++t) RmsNorm(x.row(t), x.cols, w, eps, y.row(t));
  return y;
}

double Silu(double z) {
  return z / (1.0 + std::exp(-z));
}  // silu(z) = z·σ(z) (spec §4)

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ============================================================================================
// Tensor reading and exact decoding to double (spec §9)
// ============================================================================================

class WeightReader {
 public:
  WeightReader(const io::Checkpoint& checkpoint, const ReferenceConfig& config)
      : checkpoint_(checkpoint), config_(config) {}

  bool Has(const std::string& name) const { return checkpoint_.Find(name) != nullptr; }

  Result<Mat> Matrix(const std::string& name, int64_t rows, int64_t cols) const {
    Mat m;
    m.rows = rows;
    m.cols = cols;
    DSV3_ASSIGN_OR_RETURN(m.v, Decode(name, {rows, cols}));
    return m;
  }

  Result<std::vector<double>> Vector(const std::string& name, int64_t n) const {
    return Decode(name, {n});
  }

 private:
  // Decodes tensor `name`, which must have exactly `shape`, to double.
  Result<std::vector<double>> Decode(const std::string& name,
                                     const std::vector<int64_t>& shape) const {
    const io::TensorInfo* info = checkpoint_.Find(name);
    if (info == nullptr) return Err("missing tensor {}", name);
    if (info->shape != shape) {
      return Err("tensor {} has shape {}, expected {}", name, ShapeString(info->shape),
                 ShapeString(shape));
    }
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    const size_t n = static_cast<size_t>(numel);
    std::vector<double> out(n);
    const uint8_t* data = info->data;
    auto check_bytes = [&](size_t element_size) -> Status {
      if (info->nbytes != n * element_size)
        return Err("tensor {} has {} bytes, expected {}", name, info->nbytes, n * element_size);
      return Status::Ok();
    };
    switch (info->dtype) {
      case DType::kF32: {
        DSV3_RETURN_IF_ERROR(check_bytes(4));
        for (size_t i = 0; i < n; ++i) {
          float f;
          std::memcpy(&f, data + 4 * i, 4);
          out[i] = f;
        }
        return out;
      }
      case DType::kF64: {
        DSV3_RETURN_IF_ERROR(check_bytes(8));
        for (size_t i = 0; i < n; ++i) std::memcpy(&out[i], data + 8 * i, 8);
        return out;
      }
      case DType::kBF16:
      case DType::kF16: {
        DSV3_RETURN_IF_ERROR(check_bytes(2));
        for (size_t i = 0; i < n; ++i) {
          uint16_t bits;
          std::memcpy(&bits, data + 2 * i, 2);
          out[i] = info->dtype == DType::kBF16 ? DecodeBf16(bits) : DecodeF16(bits);
        }
        return out;
      }
      case DType::kF8E4M3: {
        // W[i, j] = e4m3(q[i, j]) · scale_inv[i // br, j // bc]; ragged edge blocks use the
        // scale of their partial block (spec §9.3).
        DSV3_RETURN_IF_ERROR(check_bytes(1));
        if (shape.size() != 2) return Err("FP8 tensor {} must be 2-D", name);
        const int64_t rows = shape[0], cols = shape[1];
        const int64_t br = config_.block_rows, bc = config_.block_cols;
        const int64_t scale_rows = (rows + br - 1) / br, scale_cols = (cols + bc - 1) / bc;
        const std::string scale_name = name + "_scale_inv";
        const io::TensorInfo* scale_info = checkpoint_.Find(scale_name);
        if (scale_info == nullptr)
          return Err("missing tensor {} (scale of FP8 {})", scale_name, name);
        if (scale_info->dtype == DType::kF8E4M3)
          return Err("tensor {} must not be FP8", scale_name);
        DSV3_ASSIGN_OR_RETURN(std::vector<double> scale,
                              Decode(scale_name, {scale_rows, scale_cols}));
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t j = 0; j < cols; ++j) {
            const double q = DecodeFp8E4M3(data[i * cols + j]);
            out[static_cast<size_t>(i * cols + j)] =
                q * scale[static_cast<size_t>((i / br) * scale_cols + j / bc)];
          }
        }
        return out;
      }
      default:
        return Err("tensor {} has unsupported dtype {}", name, DTypeName(info->dtype));
    }
  }

  const io::Checkpoint& checkpoint_;
  const ReferenceConfig& config_;
};

// ============================================================================================
// The model
// ============================================================================================

struct Model {
  const ReferenceConfig& config;
  const WeightReader& weights;
  std::vector<double> rope_freqs;  // ω_m (spec §5.3)
  double rope_factor = 1.0;        // cos/sin factor (spec §5.3)
  double softmax_scale = 1.0;      // spec §5.3
  RoutingConfig routing;           // spec §6
};

std::string LayerPrefix(int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".";
}

// MLP(x) = down_proj( silu(gate_proj(x)) ⊙ up_proj(x) ) (spec §4). prefix ends in '.'.
Result<Mat> Mlp(const Model& model, const std::string& prefix, const Mat& x, int64_t width) {
  const int64_t H = model.config.hidden_size;
  DSV3_ASSIGN_OR_RETURN(Mat gate_w, model.weights.Matrix(prefix + "gate_proj.weight", width, H));
  DSV3_ASSIGN_OR_RETURN(Mat up_w, model.weights.Matrix(prefix + "up_proj.weight", width, H));
  DSV3_ASSIGN_OR_RETURN(Mat down_w, model.weights.Matrix(prefix + "down_proj.weight", H, width));
  Mat gate = Linear(x, gate_w);
  Mat up = Linear(x, up_w);
  Mat act(x.rows, width);
  for (int64_t t = 0; t < x.rows; ++t)
    for (int64_t i = 0; i < width; ++i) act.at(t, i) = Silu(gate.at(t, i)) * up.at(t, i);
  return Linear(act, down_w);
}

// Multi-head Latent Attention, the naive path (spec §5.1): k and v materialised per head for
// every position, full causal softmax. Row t of x has absolute position t.
Result<Mat> Attention(const Model& model, const std::string& layer_prefix, const Mat& x) {
  const ReferenceConfig& c = model.config;
  const std::string p = layer_prefix + "self_attn.";
  const int64_t T = x.rows, H = c.hidden_size, nh = c.num_attention_heads;
  const int64_t dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dv = c.v_head_dim;
  const int64_t r = c.kv_lora_rank, qk = dn + dr;

  // q = q_proj(x), or q_b_proj(RMSNorm(q_a_proj(x), q_a_layernorm)).
  Mat q;
  if (c.q_lora_rank == 0) {
    DSV3_ASSIGN_OR_RETURN(Mat q_w, model.weights.Matrix(p + "q_proj.weight", nh * qk, H));
    q = Linear(x, q_w);
  } else {
    const int64_t rq = c.q_lora_rank;
    DSV3_ASSIGN_OR_RETURN(Mat qa_w, model.weights.Matrix(p + "q_a_proj.weight", rq, H));
    DSV3_ASSIGN_OR_RETURN(std::vector<double> qa_norm,
                          model.weights.Vector(p + "q_a_layernorm.weight", rq));
    DSV3_ASSIGN_OR_RETURN(Mat qb_w, model.weights.Matrix(p + "q_b_proj.weight", nh * qk, rq));
    q = Linear(RmsNormRows(Linear(x, qa_w), qa_norm, c.rms_norm_eps), qb_w);
  }
  // q.view(T, nh, dn+dr): head h occupies columns [h·qk, (h+1)·qk), nope first, rope last.

  // ckv = kv_a_proj_with_mqa(x); c = RMSNorm(ckv[:, :r]); k_pe = ckv[:, r:].
  DSV3_ASSIGN_OR_RETURN(Mat kva_w,
                        model.weights.Matrix(p + "kv_a_proj_with_mqa.weight", r + dr, H));
  DSV3_ASSIGN_OR_RETURN(std::vector<double> kva_norm,
                        model.weights.Vector(p + "kv_a_layernorm.weight", r));
  Mat ckv = Linear(x, kva_w);
  Mat latent(T, r), k_pe(T, dr);
  for (int64_t t = 0; t < T; ++t) {
    RmsNorm(ckv.row(t), r, kva_norm, c.rms_norm_eps, latent.row(t));
    for (int64_t d = 0; d < dr; ++d) k_pe.at(t, d) = ckv.at(t, r + d);
  }

  // RoPE on q_pe (every head) and on the single shared k_pe, at position t (spec §5.2).
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < nh; ++h)
      ApplyRope(q.row(t) + h * qk + dn, dr, t, model.rope_freqs, model.rope_factor,
                c.rope_interleave);
    ApplyRope(k_pe.row(t), dr, t, model.rope_freqs, model.rope_factor, c.rope_interleave);
  }

  // kv_b_proj.view(nh, dn+dv, r): per head dn "K" rows (W_UK) then dv "V" rows (W_UV).
  DSV3_ASSIGN_OR_RETURN(Mat kvb_w, model.weights.Matrix(p + "kv_b_proj.weight", nh * (dn + dv), r));
  // k_nope[h][t] = W_UK[h] @ c[t];  v[h][t] = W_UV[h] @ c[t].
  std::vector<Mat> k_nope(static_cast<size_t>(nh), Mat(T, dn));
  std::vector<Mat> v(static_cast<size_t>(nh), Mat(T, dv));
  for (int64_t h = 0; h < nh; ++h) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t d = 0; d < dn + dv; ++d) {
        double sum = 0.0;
        for (int64_t j = 0; j < r; ++j) sum += kvb_w.at(h * (dn + dv) + d, j) * latent.at(t, j);
        if (d < dn) {
          k_nope[static_cast<size_t>(h)].at(t, d) = sum;
        } else {
          v[static_cast<size_t>(h)].at(t, d - dn) = sum;
        }
      }
    }
  }

  // score[h,i,j] = softmax_scale·(q_nope[i,h]·k_nope[h,j] + q_pe[i,h]·k_pe[j]) + mask[i,j],
  // mask = -inf for j > i (causal); p = softmax_j; o[i,h] = Σ_j p[h,i,j] v[h,j].
  Mat o(T, nh * dv);
  std::vector<double> score(static_cast<size_t>(T));
  for (int64_t h = 0; h < nh; ++h) {
    const Mat& kn = k_nope[static_cast<size_t>(h)];
    const Mat& vh = v[static_cast<size_t>(h)];
    for (int64_t i = 0; i < T; ++i) {
      const double* qi = q.row(i) + h * qk;
      double max_score = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j <= i; ++j) {  // keys j > i are masked out (weight exactly 0)
        double dot = 0.0;
        for (int64_t d = 0; d < dn; ++d) dot += qi[d] * kn.at(j, d);
        for (int64_t d = 0; d < dr; ++d) dot += qi[dn + d] * k_pe.at(j, d);
        score[static_cast<size_t>(j)] = model.softmax_scale * dot;
        max_score = std::max(max_score, score[static_cast<size_t>(j)]);
      }
      double denom = 0.0;
      for (int64_t j = 0; j <= i; ++j) {
        score[static_cast<size_t>(j)] = std::exp(score[static_cast<size_t>(j)] - max_score);
        denom += score[static_cast<size_t>(j)];
      }
      for (int64_t d = 0; d < dv; ++d) {
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) sum += score[static_cast<size_t>(j)] / denom * vh.at(j, d);
        o.at(i, h * dv + d) = sum;  // head-major flatten: h·dv + d
      }
    }
  }

  // out = o_proj(o), o_proj [H, nh·dv].
  DSV3_ASSIGN_OR_RETURN(Mat o_w, model.weights.Matrix(p + "o_proj.weight", H, nh * dv));
  return Linear(o, o_w);
}

// DeepSeekMoE (spec §6): every routed expert's output is computed for every token, then
// combined with the routing weights (0 for experts not chosen); shared experts added unweighted.
Result<Mat> Moe(const Model& model, const std::string& layer_prefix, const Mat& x) {
  const ReferenceConfig& c = model.config;
  const std::string p = layer_prefix + "mlp.";
  const int64_t T = x.rows, H = c.hidden_size, E = c.n_routed_experts;

  // Gate logits in double; gate.weight [E, H].
  DSV3_ASSIGN_OR_RETURN(Mat gate_w, model.weights.Matrix(p + "gate.weight", E, H));
  Mat gate_logits = Linear(x, gate_w);
  std::vector<double> bias;
  if (c.topk_method == TopkMethod::kNoauxTc) {
    DSV3_ASSIGN_OR_RETURN(bias, model.weights.Vector(p + "gate.e_score_correction_bias", E));
  }
  Mat dense_weights(T, E);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> logits(gate_logits.row(t), gate_logits.row(t) + E);
    DSV3_ASSIGN_OR_RETURN(RoutingResult routed, Route(logits, bias, model.routing));
    for (int64_t e = 0; e < E; ++e)
      dense_weights.at(t, e) = routed.dense_weights[static_cast<size_t>(e)];
  }

  // y = Σ_e w[t,e] · Expert_e(x_t), over ALL experts (masked by w = 0 where not chosen).
  Mat y(T, H);
  for (int64_t e = 0; e < E; ++e) {
    DSV3_ASSIGN_OR_RETURN(Mat expert_out, Mlp(model, p + "experts." + std::to_string(e) + ".", x,
                                              c.moe_intermediate_size));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < H; ++j) y.at(t, j) += dense_weights.at(t, e) * expert_out.at(t, j);
  }
  // + SharedExperts(x): one MLP of width n_shared_experts · moe_intermediate_size.
  if (c.n_shared_experts > 0) {
    DSV3_ASSIGN_OR_RETURN(Mat shared, Mlp(model, p + "shared_experts.", x,
                                          c.n_shared_experts * c.moe_intermediate_size));
    for (size_t i = 0; i < y.v.size(); ++i) y.v[i] += shared.v[i];
  }
  return y;
}

// One decoder layer (spec §2): h += MLA(RMSNorm(h)); h += FFN(RMSNorm(h)).
Result<Mat> DecoderLayer(const Model& model, int64_t layer, const Mat& h_in) {
  const ReferenceConfig& c = model.config;
  const std::string p = LayerPrefix(layer);
  const int64_t H = c.hidden_size;
  Mat h = h_in;

  DSV3_ASSIGN_OR_RETURN(std::vector<double> attn_norm,
                        model.weights.Vector(p + "input_layernorm.weight", H));
  DSV3_ASSIGN_OR_RETURN(Mat attn, Attention(model, p, RmsNormRows(h, attn_norm, c.rms_norm_eps)));
  for (size_t i = 0; i < h.v.size(); ++i) h.v[i] += attn.v[i];

  DSV3_ASSIGN_OR_RETURN(std::vector<double> ffn_norm,
                        model.weights.Vector(p + "post_attention_layernorm.weight", H));
  Mat f = RmsNormRows(h, ffn_norm, c.rms_norm_eps);
  Mat ffn;
  if (c.IsMoeLayer(layer)) {
    DSV3_ASSIGN_OR_RETURN(ffn, Moe(model, p, f));
  } else {
    DSV3_ASSIGN_OR_RETURN(ffn, Mlp(model, p + "mlp.", f, c.intermediate_size));
  }
  for (size_t i = 0; i < h.v.size(); ++i) h.v[i] += ffn.v[i];
  return h;
}

// Top-`count` indices of `values` by descending value; ties go to the lower index.
std::vector<int64_t> TopIndices(const std::vector<double>& values, int64_t count) {
  std::vector<int64_t> order(values.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return values[static_cast<size_t>(a)] > values[static_cast<size_t>(b)];
  });
  order.resize(static_cast<size_t>(count));
  return order;
}

Result<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Err("cannot open {}", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return Err("cannot read {}", path);
  return ss.str();
}

}  // namespace

// ============================================================================================
// Dtype decoding (spec §9.3)
// ============================================================================================

double DecodeFp8E4M3(uint8_t bits) {
  // 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; no infinities; 0x7F/0xFF NaN;
  // e = 0: m·2^-9; otherwise (1 + m/8)·2^(e-7).
  const int sign = bits >> 7;
  const int e = (bits >> 3) & 0xF;
  const int m = bits & 0x7;
  if (e == 0xF && m == 0x7) return std::numeric_limits<double>::quiet_NaN();
  const double magnitude =
      e == 0 ? std::ldexp(static_cast<double>(m), -9) : std::ldexp(1.0 + m / 8.0, e - 7);
  return sign ? -magnitude : magnitude;
}

double DecodeBf16(uint16_t bits) {
  // bf16 is the top half of an IEEE binary32.
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

double DecodeF16(uint16_t bits) {
  // IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
  const int sign = bits >> 15;
  const int e = (bits >> 10) & 0x1F;
  const int m = bits & 0x3FF;
  double magnitude;
  if (e == 0) {
    magnitude = std::ldexp(static_cast<double>(m), -24);
  } else if (e == 0x1F) {
    magnitude =
        m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else {
    magnitude = std::ldexp(1.0 + m / 1024.0, e - 15);
  }
  return sign ? -magnitude : magnitude;
}

// ============================================================================================
// RoPE and YaRN (spec §5.2, §5.3)
// ============================================================================================

double YarnCorrectionDim(double num_rotations, int64_t dim, double theta, double original_max_pos) {
  return static_cast<double>(dim) *
         std::log(original_max_pos / (2.0 * std::numbers::pi * num_rotations)) /
         (2.0 * std::log(theta));
}

YarnRange YarnCorrectionRange(int64_t dim, double theta, const YarnConfig& yarn) {
  YarnRange range;
  const double L0 = yarn.original_max_position_embeddings;
  range.low = std::max(std::floor(YarnCorrectionDim(yarn.beta_fast, dim, theta, L0)), 0.0);
  range.high = std::min(std::ceil(YarnCorrectionDim(yarn.beta_slow, dim, theta, L0)),
                        static_cast<double>(dim - 1));  // clamp bound d-1 (spec §5.3)
  if (range.low == range.high) range.high += 0.001;
  return range;
}

double YarnMscale(double scale, double c) {
  return scale <= 1.0 ? 1.0 : 0.1 * c * std::log(scale) + 1.0;
}

std::vector<double> RopeFrequencies(const ReferenceConfig& config) {
  const int64_t d = config.qk_rope_head_dim;
  std::vector<double> freqs(static_cast<size_t>(d / 2));
  YarnRange range;
  if (config.yarn.enabled) range = YarnCorrectionRange(d, config.rope_theta, config.yarn);
  for (int64_t m = 0; m < d / 2; ++m) {
    // ω_m = θ^(-2m/d)
    double omega =
        std::pow(config.rope_theta, -2.0 * static_cast<double>(m) / static_cast<double>(d));
    if (config.yarn.enabled) {
      // ramp_m = clamp((m - low)/(high - low), 0, 1); ω ← ω/s·ramp + ω·(1 - ramp)
      const double ramp =
          std::clamp((static_cast<double>(m) - range.low) / (range.high - range.low), 0.0, 1.0);
      omega = omega / config.yarn.factor * ramp + omega * (1.0 - ramp);
    }
    freqs[static_cast<size_t>(m)] = omega;
  }
  return freqs;
}

double RopeCosSinFactor(const ReferenceConfig& config) {
  if (!config.yarn.enabled) return 1.0;
  // cos, sin ×= mscale(s, mscale) / mscale(s, mscale_all_dim) (HF remote code, spec §5.3).
  return YarnMscale(config.yarn.factor, config.yarn.mscale) /
         YarnMscale(config.yarn.factor, config.yarn.mscale_all_dim);
}

double SoftmaxScale(const ReferenceConfig& config) {
  // (dn+dr)^-0.5 · mscale(s, mscale_all_dim)², the factor only when mscale_all_dim != 0.
  double scale =
      1.0 / std::sqrt(static_cast<double>(config.qk_nope_head_dim + config.qk_rope_head_dim));
  if (config.yarn.enabled && config.yarn.mscale_all_dim != 0.0) {
    const double m = YarnMscale(config.yarn.factor, config.yarn.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

void ApplyRope(double* x, int64_t d, int64_t position, const std::vector<double>& freqs,
               double cos_sin_factor, bool interleave) {
  for (int64_t m = 0; m < d / 2; ++m) {
    // θ_{p,m} = p·ω_m in double; (a, b) → (a·cos − b·sin, a·sin + b·cos).
    const double angle = static_cast<double>(position) * freqs[static_cast<size_t>(m)];
    const double cos_v = std::cos(angle) * cos_sin_factor;
    const double sin_v = std::sin(angle) * cos_sin_factor;
    // Interleaved pair m = (x[2m], x[2m+1]); half-split pair m = (x[m], x[m+d/2]).
    const int64_t ia = interleave ? 2 * m : m;
    const int64_t ib = interleave ? 2 * m + 1 : m + d / 2;
    const double a = x[ia], b = x[ib];
    x[ia] = a * cos_v - b * sin_v;
    x[ib] = a * sin_v + b * cos_v;
  }
}

// ============================================================================================
// Routing (spec §6.1, §6.2)
// ============================================================================================

Result<RoutingResult> Route(const std::vector<double>& gate_logits, const std::vector<double>& bias,
                            const RoutingConfig& config) {
  const int64_t E = static_cast<int64_t>(gate_logits.size());
  const int64_t k = config.top_k;
  if (E <= 0) return Err("routing: no experts");
  if (k < 1 || k > E) return Err("routing: experts per token {} not in [1, {}]", k, E);
  const bool grouped = config.topk_method != TopkMethod::kGreedy;
  if (grouped) {
    if (config.n_group < 1 || E % config.n_group != 0)
      return Err("routing: {} experts do not split into {} groups", E, config.n_group);
    if (config.topk_group < 1 || config.topk_group > config.n_group)
      return Err("routing: topk_group {} not in [1, {}]", config.topk_group, config.n_group);
    if (k > config.topk_group * (E / config.n_group))
      return Err("routing: experts per token {} exceeds the {} experts of the {} kept groups", k,
                 config.topk_group * (E / config.n_group), config.topk_group);
  }
  if (config.topk_method == TopkMethod::kNoauxTc && static_cast<int64_t>(bias.size()) != E)
    return Err("routing: noaux_tc needs e_score_correction_bias of size {}", E);
  for (double l : gate_logits)
    if (std::isnan(l)) return Err("routing: NaN gate logit");

  // Scores s: sigmoid(logits), or softmax over all E experts.
  std::vector<double> s(static_cast<size_t>(E));
  if (config.scoring_func == ScoringFunc::kSigmoid) {
    for (int64_t e = 0; e < E; ++e)
      s[static_cast<size_t>(e)] = 1.0 / (1.0 + std::exp(-gate_logits[static_cast<size_t>(e)]));
  } else {
    const double max_logit = *std::max_element(gate_logits.begin(), gate_logits.end());
    double denom = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      s[static_cast<size_t>(e)] = std::exp(gate_logits[static_cast<size_t>(e)] - max_logit);
      denom += s[static_cast<size_t>(e)];
    }
    for (double& v : s) v /= denom;
  }

  // Selection scores: noaux_tc uses c = s + bias (for choosing only); the others use s.
  std::vector<double> choice = s;
  if (config.topk_method == TopkMethod::kNoauxTc)
    for (int64_t e = 0; e < E; ++e) choice[static_cast<size_t>(e)] += bias[static_cast<size_t>(e)];
  for (double v : choice)
    if (std::isnan(v)) return Err("routing: NaN selection score");

  // Group step (noaux_tc, group_limited_greedy): groups = contiguous blocks of E/n_group experts.
  // Group score: noaux_tc = sum of the top-2 of c in the group (top-1 when a group has a single
  // expert); group_limited_greedy = max of s. Keep topk_group groups; others → -inf.
  if (grouped) {
    const int64_t G = config.n_group, per_group = E / G;
    std::vector<double> group_score(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; ++g) {
      std::vector<double> members(choice.begin() + g * per_group,
                                  choice.begin() + (g + 1) * per_group);
      if (config.topk_method == TopkMethod::kNoauxTc) {
        double sum = 0.0;
        for (int64_t i : TopIndices(members, std::min<int64_t>(2, per_group)))
          sum += members[static_cast<size_t>(i)];
        group_score[static_cast<size_t>(g)] = sum;
      } else {
        group_score[static_cast<size_t>(g)] = *std::max_element(members.begin(), members.end());
      }
    }
    std::vector<bool> kept(static_cast<size_t>(G), false);
    for (int64_t g : TopIndices(group_score, config.topk_group))
      kept[static_cast<size_t>(g)] = true;
    for (int64_t e = 0; e < E; ++e)
      if (!kept[static_cast<size_t>(e / per_group)])
        choice[static_cast<size_t>(e)] = -std::numeric_limits<double>::infinity();
  }

  // idx = top-k by the selection score; weights from s (not from c).
  RoutingResult result;
  result.experts = TopIndices(choice, k);
  for (int64_t e : result.experts) result.weights.push_back(s[static_cast<size_t>(e)]);
  double sum = 0.0;
  for (double w : result.weights) sum += w;
  const bool normalise = config.norm_topk_prob && k > 1;
  if (config.v2_weight_rule) {
    // DeepSeek-V2: if (k > 1 and norm): w /= Σw  else: w *= routed_scaling_factor (spec §6.2).
    for (double& w : result.weights) w = normalise ? w / sum : w * config.routed_scaling_factor;
  } else {
    // DeepSeek-V3: if norm (and k > 1): w /= Σw; then always w *= routed_scaling_factor.
    for (double& w : result.weights) {
      if (normalise) w /= sum;
      w *= config.routed_scaling_factor;
    }
  }
  result.dense_weights.assign(static_cast<size_t>(E), 0.0);
  for (size_t i = 0; i < result.experts.size(); ++i)
    result.dense_weights[static_cast<size_t>(result.experts[i])] = result.weights[i];
  return result;
}

// ============================================================================================
// The forward pass (spec §2, §7, §8)
// ============================================================================================

Result<ReferenceOutput> ReferenceForward(const std::string& model_dir,
                                         const std::vector<int32_t>& tokens,
                                         const ReferenceOptions& options) {
  if (tokens.empty()) return Err("reference: no tokens");
  DSV3_ASSIGN_OR_RETURN(std::string config_text, ReadTextFile(model_dir + "/config.json"));
  DSV3_ASSIGN_OR_RETURN(ReferenceConfig config, ParseReferenceConfig(config_text));
  const ReferenceConfig& c = config;
  const int64_t T = static_cast<int64_t>(tokens.size()), H = c.hidden_size, V = c.vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= V)
      return Err("reference: token id {} at index {} is out of range [0, {})", tokens[i], i, V);
  }
  if (options.experts_per_token < 0)
    return Err("reference: experts_per_token must be >= 0, got {}", options.experts_per_token);

  DSV3_ASSIGN_OR_RETURN(std::unique_ptr<io::Checkpoint> checkpoint,
                        io::Checkpoint::Open(model_dir, io::LoadMode::kRead));
  WeightReader weights(*checkpoint, c);

  Model model{c, weights, RopeFrequencies(c), RopeCosSinFactor(c), SoftmaxScale(c), {}};
  model.routing.scoring_func = c.scoring_func;
  model.routing.topk_method = c.topk_method;
  model.routing.n_group = c.n_group;
  model.routing.topk_group = c.topk_group;
  model.routing.top_k =
      options.experts_per_token > 0 ? options.experts_per_token : c.num_experts_per_tok;
  model.routing.norm_topk_prob = c.norm_topk_prob;
  model.routing.routed_scaling_factor = c.routed_scaling_factor;
  model.routing.v2_weight_rule = c.v2_weight_rule;

  // h_0 = embed_tokens[token_ids] (a row gather, no scaling).
  DSV3_ASSIGN_OR_RETURN(Mat embed, weights.Matrix("model.embed_tokens.weight", V, H));
  Mat h(T, H);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < H; ++j) h.at(t, j) = embed.at(tokens[static_cast<size_t>(t)], j);

  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer) {
    DSV3_ASSIGN_OR_RETURN(h, DecoderLayer(model, layer, h));
  }

  // h_L = RMSNorm(h, model.norm); logits = h_L @ lm_head^T (lm_head = embed_tokens if tied).
  DSV3_ASSIGN_OR_RETURN(std::vector<double> final_norm, weights.Vector("model.norm.weight", H));
  Mat h_final = RmsNormRows(h, final_norm, c.rms_norm_eps);
  Mat lm_head;
  if (c.tie_word_embeddings) {
    lm_head = embed;
  } else {
    DSV3_ASSIGN_OR_RETURN(lm_head, weights.Matrix("lm_head.weight", V, H));
  }
  ReferenceOutput out;
  out.T = T;
  out.vocab = V;
  out.logits = Linear(h_final, lm_head).v;

  // MTP, depth 1 (spec §8), stored as layer N = num_hidden_layers.
  if (options.mtp && c.num_nextn_predict_layers >= 1 && T >= 2) {
    const int64_t N = c.num_hidden_layers;
    const std::string p = LayerPrefix(N);
    DSV3_ASSIGN_OR_RETURN(Mat mtp_embed, weights.Matrix(p + "embed_tokens.weight", V, H));
    DSV3_ASSIGN_OR_RETURN(std::vector<double> enorm, weights.Vector(p + "enorm.weight", H));
    DSV3_ASSIGN_OR_RETURN(std::vector<double> hnorm, weights.Vector(p + "hnorm.weight", H));
    DSV3_ASSIGN_OR_RETURN(Mat eh_proj, weights.Matrix(p + "eh_proj.weight", H, 2 * H));
    // x_i = eh_proj(concat(RMSNorm(e_i, enorm), RMSNorm(h_i, hnorm))), order [emb ; hidden],
    // e_i = MTP embed_tokens[t_{i+1}], h_i = h_L row i (after model.norm), i = 0..T-2.
    Mat concat(T - 1, 2 * H);
    for (int64_t i = 0; i < T - 1; ++i) {
      RmsNorm(mtp_embed.row(tokens[static_cast<size_t>(i + 1)]), H, enorm, c.rms_norm_eps,
              concat.row(i));
      RmsNorm(h_final.row(i), H, hnorm, c.rms_norm_eps, concat.row(i) + H);
    }
    Mat x = Linear(concat, eh_proj);
    // A full decoder layer at positions 0..T-2 (MoE or dense by the same rule, index N).
    DSV3_ASSIGN_OR_RETURN(x, DecoderLayer(model, N, x));
    DSV3_ASSIGN_OR_RETURN(std::vector<double> head_norm,
                          weights.Vector(p + "shared_head.norm.weight", H));
    DSV3_ASSIGN_OR_RETURN(Mat head, weights.Matrix(p + "shared_head.head.weight", V, H));
    out.mtp_logits = Linear(RmsNormRows(x, head_norm, c.rms_norm_eps), head).v;
  }
  return out;
}

}  // namespace dsv3::reference
