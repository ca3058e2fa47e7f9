// The model's weights, bound by name from a checkpoint and checked against the config at load.
// Large matrices stay in place (in the mapping or read buffer) in their stored dtype; small vectors
// (norm weights, router bias) are converted to f32 copies (and kv_b_proj's halves copied apart for
// decoding where SplitKvBProj says).
// Immutable after Load: shared by every request.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "ops/fp8_columns.h"
#include "ops/int8_columns.h"
#include "ops/matmul.h"
#include "util/huge_pages.h"

namespace dsv3 {

class ThreadPool;

using ops::WeightView;

struct MlpWeights {      // SwiGLU: down(silu(gate(x)) * up(x))
  WeightView gate_proj;  // [I, H]
  WeightView up_proj;    // [I, H]
  WeightView down_proj;  // [H, I]
  int64_t intermediate = 0;
};

struct MoeWeights {
  WeightView gate;                             // router [E, H]
  std::vector<float> e_score_correction_bias;  // [E], empty unless noaux_tc
  std::vector<MlpWeights> experts;             // E routed experts
  bool has_shared = false;
  MlpWeights shared_experts;  // width n_shared_experts * moe_intermediate_size
};

struct AttentionWeights {
  WeightView q_proj;                  // [nh*(dn+dr), H] when q_lora_rank is null
  WeightView q_a_proj;                // [rq, H]
  std::vector<float> q_a_layernorm;   // [rq]
  WeightView q_b_proj;                // [nh*(dn+dr), rq]
  WeightView kv_a_proj_with_mqa;      // [r+dr, H]
  std::vector<float> kv_a_layernorm;  // [r]
  // [nh*(dn+dv), r] as stored; per head dn K rows (W_UK), dv V rows (W_UV). The attention's f32
  // products dequantise a head's rows per call (model/mla.cpp), so no f32 copy is kept.
  WeightView kv_b_proj;
  // Decoding's copy of kv_b_proj's halves (SplitKvBProj; where its format's products read tiles):
  // every head's W_UK rows back to back (kv_b_uk [nh*dn, r], row-major, for AccumulateRows) and
  // every head's W_UV rows back to back (kv_b_uv [nh*dv, r], tiled where they fit). Null views
  // otherwise: decoding reads kv_b_proj's rows.
  WeightView kv_b_uk, kv_b_uv;
  // Or, for decoding on int8 activations (a q8_0 / q4_0 kv_b_proj, SplitKvBProj with int8_dot),
  // W_UK in the int8 column layout instead of kv_b_uk (ops/int8_columns.h, q_lat = q_nope W_UK[h]
  // on vpdpbusd): head 0's [dn, r] here, head h's codes Int8ColumnsBytes and scales
  // Int8ColumnsScales further on (KeyProduct, model/mla.cpp). Null codes otherwise.
  ops::Int8Columns kv_b_uk_columns;
  // Or, for an FP8 kv_b_proj (SplitKvBProj with fp8_columns), W_UK in the FP8 column layout
  // (ops/fp8_columns.h, f32 sums with the block scales taken out): head 0's [dn, r] here, head
  // h's codes Fp8ColumnsBytes and scales Fp8ColumnsScales further on. Null codes otherwise.
  ops::Fp8Columns kv_b_uk_fp8;
  // W_UK's copy, then kv_b_uv's rows from a 64-byte line, then their scales likewise, in 2 MiB
  // pages where the kernel allows (util/huge_pages.h). Decoding streams these per head; in 4 KiB
  // pages (an AlignedVector's) the hardware prefetchers stop at every page: bench-medium, one
  // thread's 8 heads of W_UV (BF16, 1 MB) took ~100 us a layer, 10 GB/s.
  struct KvBHalves {
    LargeBuffer memory;
  };
  std::shared_ptr<const KvBHalves> kv_b_halves;  // shared by copies of these weights
  WeightView o_proj;                             // [H, nh*dv]
};

struct LayerWeights {
  std::vector<float> input_layernorm;           // [H]
  std::vector<float> post_attention_layernorm;  // [H]
  AttentionWeights attn;
  bool is_moe = false;
  MlpWeights mlp;  // dense layers
  MoeWeights moe;  // MoE layers
};

struct MtpWeights {                 // spec §8, stored as layer num_hidden_layers + d
  WeightView embed_tokens;          // [V, H]
  std::vector<float> enorm, hnorm;  // [H]
  WeightView eh_proj;               // [H, 2H]
  LayerWeights layer;
  std::vector<float> shared_head_norm;  // [H]
  WeightView shared_head_head;          // [V, H]
};

struct ModelWeights {
  WeightView embed_tokens;  // [V, H]
  std::vector<LayerWeights> layers;
  std::vector<float> norm;      // [H]
  WeightView lm_head;           // [V, H] (embed_tokens when tied)
  std::vector<MtpWeights> mtp;  // num_nextn_predict_layers
  // The zero-exponent line flags of the FP8 matrices in pair tiles (WeightView::fp8_line_flags
  // point into these), one array a matrix: 1 bit a 64-byte line, 1/512 of the weights' bytes.
  // Shared by copies of these weights.
  std::vector<std::shared_ptr<const std::vector<uint64_t>>> fp8_line_flags;
};

// Binds every tensor the config needs; errors name the tensor and the file. A tensor that is
// missing, has the wrong shape or an unsupported dtype, an FP8 weight whose scale grid is missing,
// mis-shaped or holds a non-finite or negative value, are all errors.
Result<ModelWeights> BindWeights(const ModelConfig& config, const io::Checkpoint& checkpoint);

// Reorders the q8_0 / q4_0 matrices that only matrix products read (the attention projections but
// kv_b_proj, the MLPs and experts, an untied lm_head, the MTP's) into the int8 kernels' 16-row
// tiles (ops/row_tiles.h), in place; the embeddings and kv_b_proj (read row by row) stay
// row-major, as does every matrix CanTileRows refuses. The weights' bytes must be writable: a
// checkpoint read into memory (LoadMode::kRead), never a read-only mapping. q8_0: whether q8_0
// matrices are tiled too (q4_0 always are). pool: the matrices tiled on its threads (else on this
// one). Returns the number of matrices tiled.
int64_t TileInt8Weights(ModelWeights* weights, bool q8_0 = true, ThreadPool* pool = nullptr);

// How Model::Load prepares the weights it binds: the tilings (TileInt8Weights, TileBf16Weights) and
// kv_b_proj's copies for decoding (SplitKvBProj).
struct LoadOptions {
  io::LoadMode load_mode = io::LoadMode::kRead;
  // Reorder q8_0 / q4_0 product matrices into the int8 kernels' 16-row tiles (TileInt8Weights):
  // for runs on AVX-512 or AVX2 with int8 activations, where it makes the GEMV cheaper per weight;
  // any other path reads tiles through the scalar reference (correct, slow). Ignored for kMmap
  // (the mapping is read-only). SplitKvBProj: W_UV's copy goes into the int8 row tiles too
  // (ops::CanTileRows permitting; q8_0 only with tile_q8_0_rows), in any load mode (the copies
  // are owned).
  bool tile_int8_rows = false;
  // Tile q8_0 matrices too (AVX-512 and AVX2). On AVX2 the row-major q8_0 kernel once streamed as
  // fast (session 10: tg64 61.2 tok/s row-major, 53.4 tiled); since the tiled GEMV stopped
  // requesting its weights (ec201a8) the tiles are far ahead: bench-medium q8_0, DSV3_ISA=avx2,
  // runs alternating (session 30): tg32 29.5-30.8 -> 50.2-50.8 tok/s, pp512 126-128 -> 179-184.
  bool tile_q8_0_rows = true;
  // Reorder BF16 and FP8 product matrices into the bf16-dot kernel's 32-row tiles
  // (TileBf16Weights), which its prefill products read in place instead of packing each weight per
  // call, and the AVX-512 exact kernel reads with no reduction across lanes (decode): for runs on
  // AVX-512 BF16 with bf16_dot. A product of 8+ tokens on tiles without bf16_dot takes the dot
  // form there. AVX2 reads the tiles natively too (decode one stream a tile, prefill packing 8
  // rows a load); the scalar ISA takes the reference (correct, slow). Ignored for kMmap.
  // SplitKvBProj: BF16, and FP8 whose heads' halves are whole scale blocks (DeepSeek-V3's 128 rows
  // each), get both halves copied, W_UV in the bf16 pair tiles (CanTilePairRows).
  bool tile_bf16_rows = false;
  // Decoding will run on int8 activations (ops::KernelContext::int8_dot): a q8_0 / q4_0
  // kv_b_proj's W_UK goes into the int8 column layout (kv_b_uk_columns, where
  // ops::CanLayOutInt8Columns takes it; SplitKvBProj) on every ISA, so the logits do not depend on
  // the ISA; W_UV is copied with it. bench-medium decode, tokens alternating between both forms of
  // W_UK's product in one process, either role: AVX-512 q4_0 1.2-1.7 % less time a token, q8_0
  // 1.2-2.5 %; AVX2 q4_0 8-9.5 %, q8_0 3.5-3.8 %. Without it (or where the column layout does not
  // fit) W_UK is copied row-major (kv_b_uk, for AccumulateRows) where W_UV is tiled.
  bool int8_dot = false;
  // An FP8 kv_b_proj whose W_UK halves ops::CanLayOutFp8Columns takes: W_UK in the FP8 column
  // layout (kv_b_uk_fp8; SplitKvBProj) instead of kv_b_uk, on every ISA, so the logits do not
  // depend on the ISA: decoding's q_lat = W_UK^T q_nope in f32 with the block scales taken out of
  // the sums, read front to back; W_UV copied only with tile_bf16_rows (else decoding reads
  // kv_b_proj's W_UV rows). Off: AccumulateRows on W_UK's rows (each code scaled, then summed).
  bool fp8_columns = true;
  // Threads for the load's own work (kRead's reading of the files, the tiling), not owned; null:
  // this thread.
  ThreadPool* pool = nullptr;
};

// Copies kv_b_proj's W_UK and W_UV rows apart for decoding, as `how` says (LoadOptions): one
// token's absorbed attention then streams each half in order (kv_b_proj interleaves them per
// head) in the layout its format's decode kernel reads. Any load mode (the copies are owned).
// The layers are split on how.pool's threads (else on this one). Returns the number of layers
// split.
int64_t SplitKvBProj(ModelWeights* weights, const ModelConfig& config, const LoadOptions& how);

// Reorders the BF16 and FP8 matrices among those TileInt8Weights would tile into the bf16-dot
// kernel's 32-row tiles (ops/bf16_tiles.h), in place, under the same contract (an FP8 checkpoint's
// BF16 lm_head among them), and flags the FP8 tiles' zero-exponent lines (fp8_line_flags).
// pool as TileInt8Weights's. Returns the number of matrices tiled.
int64_t TileBf16Weights(ModelWeights* weights, ThreadPool* pool = nullptr);

}  // namespace dsv3
