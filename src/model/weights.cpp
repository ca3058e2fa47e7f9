#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <set>

#include <fmt/ranges.h>

#include "backend/thread_pool.h"
#include "ops/bf16_tiles.h"
#include "ops/isa.h"
#include "ops/quant.h"
#include "ops/row_tiles.h"

namespace dsv3 {

namespace {

// The index of the first of scale[0, n) that is not finite or, unless negative_ok, is below
// zero; n when none is. First one pass without a branch (the compiler vectorizes it; a model has
// tens of millions of scales, and the branch per scale was 5 % of bench-medium q4_0's load),
// then the index only where some scale is bad.
int64_t FirstBadScale(const float* scale, int64_t n, bool negative_ok) {
  const uint32_t negative = negative_ok ? 0u : 1u;
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, scale + i, 4);
    // inf or NaN: exponent all ones; below zero: the sign with a nonzero magnitude (-0 is fine).
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u) |
           (negative & static_cast<uint32_t>(u > 0x80000000u));
  }
  if (bad == 0) return n;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(scale[i]) || (!negative_ok && scale[i] < 0)) return i;
  return n;
}

// Looks tensors up by name and checks them against the shapes the config implies.
class Binder {
 public:
  Binder(const ModelConfig& config, const io::Checkpoint& checkpoint)
      : config_(config), checkpoint_(checkpoint) {}

  Result<const io::TensorInfo*> Find(const std::string& name) const {
    const io::TensorInfo* t = checkpoint_.Find(name);
    if (t == nullptr) return Err("{}: tensor '{}' is missing", checkpoint_.dir(), name);
    return t;
  }

  Status CheckShape(const io::TensorInfo& t, const std::vector<int64_t>& shape) const {
    if (t.shape != shape)
      return Err("{}: tensor '{}' has shape {} but the config implies [{}]", t.file, t.name,
                 t.ShapeString(), fmt::join(shape, ", "));
    return Status::Ok();
  }

  // A matrix [rows, cols] used in place. FP8 needs its "<name>_scale_inv" block grid.
  Result<WeightView> Matrix(const std::string& name, int64_t rows, int64_t cols) const {
    DSV3_ASSIGN_OR_RETURN(const io::TensorInfo* t, Find(name));
    if (t->dtype == DType::kI8 || t->dtype == DType::kU8) return GroupQuantized(*t, rows, cols);
    DSV3_RETURN_IF_ERROR(CheckShape(*t, {rows, cols}));
    WeightView w;
    w.dtype = t->dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = t->data;
    switch (t->dtype) {
      case DType::kF32:
      case DType::kF16:
      case DType::kBF16:
        return w;
      case DType::kF8E4M3:
        break;
      default:
        return Err("{}: tensor '{}' has dtype {}, which is not supported for weights", t->file,
                   name, DTypeName(t->dtype));
    }
    const std::string scale_name = name + "_scale_inv";
    const io::TensorInfo* s = checkpoint_.Find(scale_name);
    if (s == nullptr)
      return Err("{}: FP8 tensor '{}' has no block scales '{}'", t->file, name, scale_name);
    int64_t br = 128, bc = 128;
    if (config_.quantization_config) {
      br = config_.quantization_config->weight_block_size[0];
      bc = config_.quantization_config->weight_block_size[1];
    }
    const std::vector<int64_t> grid = {(rows + br - 1) / br, (cols + bc - 1) / bc};
    if (s->dtype != DType::kF32)
      return Err("{}: scale tensor '{}' must be F32, got {}", s->file, scale_name,
                 DTypeName(s->dtype));
    if (s->shape != grid)
      return Err("{}: scale tensor '{}' has shape {} but {} with {}x{} blocks needs [{}, {}]",
                 s->file, scale_name, s->ShapeString(), t->ShapeString(), br, bc, grid[0], grid[1]);
    const float* scale = reinterpret_cast<const float*>(s->data);
    if (const int64_t i = FirstBadScale(scale, grid[0] * grid[1], false); i < grid[0] * grid[1])
      return Err("{}: scale tensor '{}' holds an invalid value {} at block {}", s->file, scale_name,
                 scale[i], i);
    w.scale = scale;
    w.block_rows = br;
    w.block_cols = bc;
    return w;
  }

  // q8_0 (I8 [rows, cols]) or q4_0 (U8 [rows, ceil(cols / 2)], two 4-bit codes per byte), each
  // with an F32 "<name>_scale_inv" [rows, ceil(cols / group_size)] (ops/quant.h).
  Result<WeightView> GroupQuantized(const io::TensorInfo& t, int64_t rows, int64_t cols) const {
    const bool q4 = t.dtype == DType::kU8;
    const char* format = q4 ? "q4_0" : "q8_0";
    const int64_t stored_cols = q4 ? (cols + 1) / 2 : cols;
    if (t.shape != std::vector<int64_t>{rows, stored_cols})
      return Err("{}: {} tensor '{}' has shape {} but the config implies [{}, {}]{}", t.file,
                 format, t.name, t.ShapeString(), rows, stored_cols,
                 q4 ? fmt::format(" ({} columns, two 4-bit codes per byte)", cols) : "");
    const int64_t gs = config_.quantization_config ? config_.quantization_config->group_size : 32;
    const std::string scale_name = t.name + "_scale_inv";
    const io::TensorInfo* s = checkpoint_.Find(scale_name);
    if (s == nullptr)
      return Err("{}: {} tensor '{}' has no group scales '{}'", t.file, format, t.name, scale_name);
    if (s->dtype != DType::kF32)
      return Err("{}: scale tensor '{}' must be F32, got {}", s->file, scale_name,
                 DTypeName(s->dtype));
    const std::vector<int64_t> grid = {rows, (cols + gs - 1) / gs};
    if (s->shape != grid)
      return Err(
          "{}: scale tensor '{}' has shape {} but {} [{}, {}] with groups of {} needs [{}, {}]",
          s->file, scale_name, s->ShapeString(), format, rows, cols, gs, grid[0], grid[1]);
    const float* scale = reinterpret_cast<const float*>(s->data);
    // q4_0 scales carry the sign of the group's largest element (ggml's Q4_0); q8_0's do not.
    if (const int64_t i = FirstBadScale(scale, grid[0] * grid[1], q4); i < grid[0] * grid[1])
      return Err("{}: scale tensor '{}' holds an invalid value {} at group {}", s->file, scale_name,
                 scale[i], i);
    WeightView w;
    w.dtype = t.dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = t.data;
    w.scale = scale;
    w.group_size = gs;
    return w;
  }

  // A vector converted to f32.
  Result<std::vector<float>> Vector(const std::string& name, int64_t n) const {
    DSV3_ASSIGN_OR_RETURN(const io::TensorInfo* t, Find(name));
    DSV3_RETURN_IF_ERROR(CheckShape(*t, {n}));
    if (t->dtype != DType::kF32 && t->dtype != DType::kF16 && t->dtype != DType::kBF16)
      return Err("{}: tensor '{}' has dtype {}; vectors must be F32, F16 or BF16", t->file, name,
                 DTypeName(t->dtype));
    WeightView view{t->dtype, 1, n, t->data};
    std::vector<float> out(static_cast<size_t>(n));
    ops::DequantizeRow(view, 0, out.data());
    return out;
  }

  Result<MlpWeights> Mlp(const std::string& prefix, int64_t width) const {
    const int64_t H = config_.hidden_size;
    MlpWeights m;
    m.intermediate = width;
    DSV3_ASSIGN_OR_RETURN(m.gate_proj, Matrix(prefix + ".gate_proj.weight", width, H));
    DSV3_ASSIGN_OR_RETURN(m.up_proj, Matrix(prefix + ".up_proj.weight", width, H));
    DSV3_ASSIGN_OR_RETURN(m.down_proj, Matrix(prefix + ".down_proj.weight", H, width));
    return m;
  }

  Result<AttentionWeights> Attention(const std::string& prefix) const {
    const ModelConfig& c = config_;
    const int64_t H = c.hidden_size, nh = c.num_attention_heads, r = c.kv_lora_rank;
    const int64_t q_out = nh * c.qk_head_dim();
    AttentionWeights a;
    if (c.has_q_lora()) {
      DSV3_ASSIGN_OR_RETURN(a.q_a_proj, Matrix(prefix + ".q_a_proj.weight", c.q_lora_rank, H));
      DSV3_ASSIGN_OR_RETURN(a.q_a_layernorm,
                            Vector(prefix + ".q_a_layernorm.weight", c.q_lora_rank));
      DSV3_ASSIGN_OR_RETURN(a.q_b_proj, Matrix(prefix + ".q_b_proj.weight", q_out, c.q_lora_rank));
    } else {
      DSV3_ASSIGN_OR_RETURN(a.q_proj, Matrix(prefix + ".q_proj.weight", q_out, H));
    }
    DSV3_ASSIGN_OR_RETURN(a.kv_a_proj_with_mqa,
                          Matrix(prefix + ".kv_a_proj_with_mqa.weight", r + c.qk_rope_head_dim, H));
    DSV3_ASSIGN_OR_RETURN(a.kv_a_layernorm, Vector(prefix + ".kv_a_layernorm.weight", r));
    const int64_t kv_b_rows = nh * (c.qk_nope_head_dim + c.v_head_dim);
    DSV3_ASSIGN_OR_RETURN(a.kv_b_proj, Matrix(prefix + ".kv_b_proj.weight", kv_b_rows, r));
    DSV3_ASSIGN_OR_RETURN(a.o_proj, Matrix(prefix + ".o_proj.weight", H, nh * c.v_head_dim));
    return a;
  }

  Result<LayerWeights> Layer(int64_t index) const {
    const ModelConfig& c = config_;
    const std::string prefix = fmt::format("model.layers.{}", index);
    LayerWeights l;
    DSV3_ASSIGN_OR_RETURN(l.input_layernorm,
                          Vector(prefix + ".input_layernorm.weight", c.hidden_size));
    DSV3_ASSIGN_OR_RETURN(l.post_attention_layernorm,
                          Vector(prefix + ".post_attention_layernorm.weight", c.hidden_size));
    DSV3_ASSIGN_OR_RETURN(l.attn, Attention(prefix + ".self_attn"));
    l.is_moe = c.IsMoeLayer(index);
    if (!l.is_moe) {
      DSV3_ASSIGN_OR_RETURN(l.mlp, Mlp(prefix + ".mlp", c.intermediate_size));
      return l;
    }
    DSV3_ASSIGN_OR_RETURN(l.moe.gate,
                          Matrix(prefix + ".mlp.gate.weight", c.n_routed_experts, c.hidden_size));
    if (c.topk_method == "noaux_tc") {
      DSV3_ASSIGN_OR_RETURN(
          l.moe.e_score_correction_bias,
          Vector(prefix + ".mlp.gate.e_score_correction_bias", c.n_routed_experts));
    }
    l.moe.experts.reserve(static_cast<size_t>(c.n_routed_experts));
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      DSV3_ASSIGN_OR_RETURN(MlpWeights expert, Mlp(fmt::format("{}.mlp.experts.{}", prefix, e),
                                                   c.moe_intermediate_size));
      l.moe.experts.push_back(expert);
    }
    if (c.n_shared_experts > 0) {
      l.moe.has_shared = true;
      DSV3_ASSIGN_OR_RETURN(
          l.moe.shared_experts,
          Mlp(prefix + ".mlp.shared_experts", c.n_shared_experts * c.moe_intermediate_size));
    }
    return l;
  }

  Result<MtpWeights> Mtp(int64_t index) const {
    const ModelConfig& c = config_;
    const int64_t H = c.hidden_size, V = c.vocab_size;
    const std::string prefix = fmt::format("model.layers.{}", index);
    MtpWeights m;
    DSV3_ASSIGN_OR_RETURN(m.embed_tokens, Matrix(prefix + ".embed_tokens.weight", V, H));
    DSV3_ASSIGN_OR_RETURN(m.enorm, Vector(prefix + ".enorm.weight", H));
    DSV3_ASSIGN_OR_RETURN(m.hnorm, Vector(prefix + ".hnorm.weight", H));
    DSV3_ASSIGN_OR_RETURN(m.eh_proj, Matrix(prefix + ".eh_proj.weight", H, 2 * H));
    DSV3_ASSIGN_OR_RETURN(m.layer, Layer(index));
    DSV3_ASSIGN_OR_RETURN(m.shared_head_norm, Vector(prefix + ".shared_head.norm.weight", H));
    DSV3_ASSIGN_OR_RETURN(m.shared_head_head, Matrix(prefix + ".shared_head.head.weight", V, H));
    return m;
  }

 private:
  const ModelConfig& config_;
  const io::Checkpoint& checkpoint_;
};

}  // namespace

Result<ModelWeights> BindWeights(const ModelConfig& config, const io::Checkpoint& checkpoint) {
  Binder bind(config, checkpoint);
  const int64_t H = config.hidden_size, V = config.vocab_size;
  ModelWeights w;
  DSV3_ASSIGN_OR_RETURN(w.embed_tokens, bind.Matrix("model.embed_tokens.weight", V, H));
  w.layers.reserve(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    DSV3_ASSIGN_OR_RETURN(LayerWeights layer, bind.Layer(i));
    w.layers.push_back(std::move(layer));
  }
  DSV3_ASSIGN_OR_RETURN(w.norm, bind.Vector("model.norm.weight", H));
  if (config.tie_word_embeddings) {
    w.lm_head = w.embed_tokens;
  } else {
    DSV3_ASSIGN_OR_RETURN(w.lm_head, bind.Matrix("lm_head.weight", V, H));
  }
  for (int64_t d = 0; d < config.num_nextn_predict_layers; ++d) {
    // Many converted checkpoints drop the MTP layer (convert.py skips it by name); the main model
    // is complete without it, so its absence only disables MTP. A partial MTP layer is an error.
    const std::string probe =
        fmt::format("model.layers.{}.eh_proj.weight", config.num_hidden_layers + d);
    if (checkpoint.Find(probe) == nullptr) break;
    DSV3_ASSIGN_OR_RETURN(MtpWeights mtp, bind.Mtp(config.num_hidden_layers + d));
    w.mtp.push_back(std::move(mtp));
  }
  return w;
}

namespace {

// Calls fn(view) for every matrix of a layer that only matrix products read.
template <typename Fn>
void ForEachProductMatrix(LayerWeights& layer, Fn&& fn) {
  AttentionWeights& a = layer.attn;
  for (WeightView* w : {&a.q_proj, &a.q_a_proj, &a.q_b_proj, &a.kv_a_proj_with_mqa, &a.o_proj})
    fn(w);
  auto mlp = [&](MlpWeights& m) {
    fn(&m.gate_proj);
    fn(&m.up_proj);
    fn(&m.down_proj);
  };
  if (!layer.is_moe) return mlp(layer.mlp);
  for (MlpWeights& e : layer.moe.experts) mlp(e);
  if (layer.moe.has_shared) mlp(layer.moe.shared_experts);
}

// Calls fn on every matrix only products read (the attention projections but kv_b_proj, the MLPs
// and experts, lm_head, the MTP's), skipping the tensors an embedding's or kv_b_proj's row reads
// use (a tied head). fn(w, seen): seen is true for a second view of a tensor already visited, so
// views of one tensor agree.
template <typename Fn>
void ForEachTileableMatrix(ModelWeights* weights, Fn&& fn) {
  std::set<const void*> row_major = {weights->embed_tokens.data};
  for (const LayerWeights& layer : weights->layers) row_major.insert(layer.attn.kv_b_proj.data);
  for (const MtpWeights& m : weights->mtp) {
    row_major.insert(m.embed_tokens.data);
    row_major.insert(m.layer.attn.kv_b_proj.data);
  }
  std::set<const void*> seen;
  auto visit = [&](WeightView* w) {
    if (w->data == nullptr || row_major.count(w->data) > 0) return;
    fn(w, !seen.insert(w->data).second);
  };
  for (LayerWeights& layer : weights->layers) ForEachProductMatrix(layer, visit);
  visit(&weights->lm_head);
  for (MtpWeights& m : weights->mtp) {
    visit(&m.eh_proj);
    ForEachProductMatrix(m.layer, visit);
    visit(&m.shared_head_head);
  }
}

// fn(i) for i in [0, n): on the pool's threads, a unit each, balanced at run time (matrices
// differ in size by 100x), or on this thread without a pool.
void ForEachIndex(ThreadPool* pool, int64_t n, const std::function<void(int64_t)>& fn) {
  if (pool == nullptr || pool->num_threads() <= 1 || n < 2) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  pool->ParallelForStealing(n, nullptr, [&fn](int, UnitQueue& queue) {
    int64_t begin = 0, end = 0;
    while (queue.Next(&begin, &end))
      for (int64_t i = begin; i < end; ++i) fn(i);
  });
}

// The first view of every tensor ForEachTileableMatrix visits that `take` accepts.
template <typename Take>
std::vector<WeightView*> FirstViews(ModelWeights* weights, Take&& take) {
  std::vector<WeightView*> first;
  ForEachTileableMatrix(weights, [&](WeightView* w, bool seen) {
    if (!seen && take(*w)) first.push_back(w);
  });
  return first;
}

// Gives every other view of the tensors of `first` (tiled) their first view's layout, with
// copy(from, to).
template <typename Copy>
void CopyLayoutToOtherViews(ModelWeights* weights, const std::vector<WeightView*>& first,
                            Copy&& copy) {
  std::map<const void*, const WeightView*> tiled;  // data -> its first view
  for (const WeightView* w : first) tiled[w->data] = w;
  ForEachTileableMatrix(weights, [&](WeightView* w, bool seen) {
    if (!seen) return;
    if (const auto it = tiled.find(w->data); it != tiled.end()) copy(*it->second, w);
  });
}

}  // namespace

int64_t TileInt8Weights(ModelWeights* weights, bool q8_0, ThreadPool* pool) {
  const std::vector<WeightView*> first = FirstViews(weights, [q8_0](const WeightView& w) {
    return ops::CanTileRows(w) && (q8_0 || w.dtype != DType::kI8);
  });
  ForEachIndex(pool, static_cast<int64_t>(first.size()), [&first](int64_t i) {
    // Writable by the contract above: the bytes live in the checkpoint's read buffer.
    WeightView* w = first[static_cast<size_t>(i)];
    ops::TileRows(w, const_cast<void*>(w->data), const_cast<float*>(w->scale));
  });
  CopyLayoutToOtherViews(weights, first, [](const WeightView& from, WeightView* to) {
    to->row_tiles = from.row_tiles;
    to->f16_tile_scales = from.f16_tile_scales;
  });
  return static_cast<int64_t>(first.size());
}

namespace {

// How a q8_0 / q4_0 / FP8 kv_b_proj's rows and scales lie: bytes a row; scale floats a scale row,
// and rows a scale row (q8_0 / q4_0: a row's groups; FP8: a block row's blocks).
struct RowLayout {
  int64_t row_bytes, scale_width, rows_per_scale;
};
RowLayout KvBLayout(const WeightView& kv) {
  if (kv.dtype == DType::kBF16) return {2 * kv.cols, 0, 1};
  if (kv.dtype == DType::kF8E4M3)
    return {kv.cols, (kv.cols + kv.block_cols - 1) / kv.block_cols, kv.block_rows};
  return {ops::StoredRowBytes(kv), ops::QuantGroups(kv.cols, kv.group_size), 1};
}

// W_UK's copy: row-major (kv_b_uk), the int8 column layout (kv_b_uk_columns) or the FP8 one
// (kv_b_uk_fp8).
enum class UkLayout { kRows, kInt8Columns, kFp8Columns };

// a's copies of its row-major kv_b_proj's halves (q8_0, q4_0, or FP8 whose heads' halves are
// whole block rows): W_UK as uk_layout says; with copy_uv W_UV row-major (kv_b_uv), then tiled
// as tile() does. False, and a as it was, when the memory cannot be had.
template <typename Tile>
bool SplitKvB(AttentionWeights* a, const ModelConfig& c, UkLayout uk_layout, bool copy_uv,
              Tile&& tile) {
  const WeightView& kv = a->kv_b_proj;
  const int64_t nh = c.num_attention_heads, dn = c.qk_nope_head_dim;
  const int64_t dv = copy_uv ? c.v_head_dim : 0;
  const int64_t r = kv.cols;
  const RowLayout l = KvBLayout(kv);
  const int64_t sw = l.scale_width, rps = l.rows_per_scale;
  const auto line = [](int64_t n) { return (n + 63) / 64 * 64; };
  // One head's W_UK: bytes and scale floats.
  int64_t head_bytes = dn * l.row_bytes, head_scales = dn / rps * sw;
  if (uk_layout == UkLayout::kInt8Columns)
    head_bytes = ops::Int8ColumnsBytes(kv.dtype, dn, r),
    head_scales = ops::Int8ColumnsScales(dn, r);
  if (uk_layout == UkLayout::kFp8Columns)
    head_bytes = ops::Fp8ColumnsBytes(dn, r), head_scales = ops::Fp8ColumnsScales(dn, r, rps);
  const int64_t uk_bytes = line(nh * head_bytes), uk_scales = line(nh * head_scales);
  const int64_t bytes = line(uk_bytes + nh * dv * l.row_bytes);
  const int64_t scales = uk_scales + nh * dv / rps * sw;
  auto halves = std::make_shared<AttentionWeights::KvBHalves>();
  halves->memory = AllocateLargeBuffer(static_cast<size_t>(bytes + scales * 4));
  if (halves->memory == nullptr) return false;
  uint8_t* uk = halves->memory.get();
  uint8_t* uv = uk + uk_bytes;
  float* uk_scale = reinterpret_cast<float*>(uk + bytes);
  float* uv_scale = uk_scale + uk_scales;
  const uint8_t* data = static_cast<const uint8_t*>(kv.data);
  const auto copy = [](void* to, const void* from, int64_t bytes) {
    if (bytes > 0) std::memcpy(to, from, static_cast<size_t>(bytes));  // BF16: no scales
  };
  for (int64_t h = 0; h < nh; ++h) {
    // kv_b_proj's W_UK[h], W_UV[h]
    const int64_t k_row = h * (dn + c.v_head_dim), v_row = k_row + dn;
    uint8_t* uk_h = uk + h * head_bytes;
    float* uk_scale_h = uk_scale + h * head_scales;
    if (uk_layout == UkLayout::kInt8Columns) {
      ops::LayOutInt8Columns(kv, k_row, dn, uk_h, uk_scale_h);
    } else if (uk_layout == UkLayout::kFp8Columns) {
      ops::LayOutFp8Columns(kv, k_row, dn, uk_h, uk_scale_h);
    } else {
      copy(uk_h, data + k_row * l.row_bytes, head_bytes);
      copy(uk_scale_h, kv.scale + k_row / rps * sw, head_scales * 4);
    }
    copy(uv + h * dv * l.row_bytes, data + v_row * l.row_bytes, dv * l.row_bytes);
    copy(uv_scale + h * dv / rps * sw, kv.scale + v_row / rps * sw, dv / rps * sw * 4);
  }
  if (uk_layout == UkLayout::kInt8Columns) {
    a->kv_b_uk_columns = {kv.dtype, dn, r, uk, uk_scale};
  } else if (uk_layout == UkLayout::kFp8Columns) {
    a->kv_b_uk_fp8 = {dn, r, rps, uk, uk_scale};
  } else {
    a->kv_b_uk = kv;
    a->kv_b_uk.rows = nh * dn;
    a->kv_b_uk.data = uk;
    a->kv_b_uk.scale = kv.scale != nullptr ? uk_scale : nullptr;  // BF16: none
  }
  a->kv_b_halves = std::move(halves);
  if (!copy_uv) return true;
  a->kv_b_uv = kv;
  a->kv_b_uv.rows = nh * dv;
  a->kv_b_uv.data = uv;
  a->kv_b_uv.scale = kv.scale != nullptr ? uv_scale : nullptr;
  tile(&a->kv_b_uv, uv, uv_scale);
  return true;
}

// The zero-exponent line flags of w, an FP8 weight in pair tiles (ops::MarkFp8ZeroExponentLines),
// with w pointed at them; null (and w as it was) for other weights.
std::shared_ptr<const std::vector<uint64_t>> Fp8LineFlags(WeightView* w) {
  const int64_t words = ops::Fp8LineFlagsSize(*w);
  if (w->dtype != DType::kF8E4M3 || words == 0) return nullptr;
  auto flags = std::make_shared<std::vector<uint64_t>>(static_cast<size_t>(words));
  ops::MarkFp8ZeroExponentLines(*w, flags->data());
  w->fp8_line_flags = flags->data();
  return flags;
}

}  // namespace

int64_t SplitKvBProj(ModelWeights* weights, const ModelConfig& c, const LoadOptions& how) {
  std::vector<AttentionWeights*> attention;
  for (LayerWeights& layer : weights->layers) attention.push_back(&layer.attn);
  for (MtpWeights& m : weights->mtp) attention.push_back(&m.layer.attn);
  const int64_t n = static_cast<int64_t>(attention.size());
  std::vector<char> split(attention.size(), 0);
  std::vector<std::shared_ptr<const std::vector<uint64_t>>> flags(attention.size());
  // A layer a unit on the load's threads. bench-medium, this call timed, one thread against two
  // alternating (3 loads each): q4_0 29-125 -> 12-14 ms, q8_0 22-222 -> 11-14, FP8 17-163 ->
  // 8-38, BF16 160-247 -> 6-35 (much of it the copies' first touch of fresh memory).
  ForEachIndex(how.pool, n, [&](int64_t i) {
    AttentionWeights* a = attention[static_cast<size_t>(i)];
    const WeightView& kv = a->kv_b_proj;
    if (kv.row_tiles != 0 || kv.data == nullptr) return;
    const bool int8 = kv.scale != nullptr && (kv.dtype == DType::kU8 || kv.dtype == DType::kI8);
    const bool columns = how.int8_dot && int8 && ops::CanLayOutInt8Columns(kv, c.qk_nope_head_dim);
    const bool int8_tiles =
        how.tile_int8_rows && int8 && (kv.dtype == DType::kU8 || how.tile_q8_0_rows);
    // FP8: each head's halves whole block rows, so their scales are whole rows of the grid.
    const bool fp8_split = kv.dtype == DType::kF8E4M3 && kv.scale != nullptr &&
                           c.qk_nope_head_dim % kv.block_rows == 0 &&
                           c.v_head_dim % kv.block_rows == 0;
    // FP8 W_UK by columns: its rows whole block rows for every head (W_UV's need not be).
    bool fp8_columns = how.fp8_columns && kv.dtype == DType::kF8E4M3;
    for (int64_t h = 0; fp8_columns && h < c.num_attention_heads; ++h)
      fp8_columns =
          ops::CanLayOutFp8Columns(kv, h * (c.qk_nope_head_dim + c.v_head_dim), c.qk_nope_head_dim);
    // BF16: W_UK row-major (AccumulateRows streams its rows), W_UV in pair tiles (one stream a
    // tile, where kv_b_proj's W_UV rows took the row-major kernel's 8 rows a row length apart):
    // bench-medium BF16 tg64, one thread's 8 heads of W_UV 101 -> 56 us a layer, 30.5 -> 31.2
    // tok/s (busy host). 2 GB more for DeepSeek-V3's weights (0.15 %). Before the single-stream
    // tiles (session 27) the copies were level.
    const bool pair_split = how.tile_bf16_rows && (fp8_split || kv.dtype == DType::kBF16);
    if (columns || int8_tiles) {
      const UkLayout uk = columns ? UkLayout::kInt8Columns : UkLayout::kRows;
      if (!SplitKvB(a, c, uk, true, [int8_tiles](WeightView* w, void* data, float* scale) {
            if (int8_tiles && ops::CanTileRows(*w)) ops::TileRows(w, data, scale);
          }))
        return;
    } else if (pair_split || fp8_columns) {
      const UkLayout uk = fp8_columns ? UkLayout::kFp8Columns : UkLayout::kRows;
      if (!SplitKvB(a, c, uk, pair_split, [&flags, i](WeightView* w, void* data, float*) {
            if (!ops::CanTilePairRows(*w)) return;
            ops::TilePairRows(w, data);
            flags[static_cast<size_t>(i)] = Fp8LineFlags(w);
          }))
        return;
    } else {
      return;
    }
    split[static_cast<size_t>(i)] = 1;
  });
  for (auto& f : flags)
    if (f != nullptr) weights->fp8_line_flags.push_back(std::move(f));
  return std::count(split.begin(), split.end(), 1);
}

int64_t TileBf16Weights(ModelWeights* weights, ThreadPool* pool) {
  const std::vector<WeightView*> first =
      FirstViews(weights, [](const WeightView& w) { return ops::CanTilePairRows(w); });
  std::vector<std::shared_ptr<const std::vector<uint64_t>>> flags(first.size());
  ForEachIndex(pool, static_cast<int64_t>(first.size()), [&first, &flags](int64_t i) {
    // Writable by the contract above: the bytes live in the checkpoint's read buffer.
    WeightView* w = first[static_cast<size_t>(i)];
    ops::TilePairRows(w, const_cast<void*>(w->data));
    flags[static_cast<size_t>(i)] = Fp8LineFlags(w);
  });
  for (auto& f : flags)
    if (f != nullptr) weights->fp8_line_flags.push_back(std::move(f));
  CopyLayoutToOtherViews(weights, first, [](const WeightView& from, WeightView* to) {
    to->row_tiles = from.row_tiles;
    to->fp8_line_flags = from.fp8_line_flags;
  });
  return static_cast<int64_t>(first.size());
}

}  // namespace dsv3
