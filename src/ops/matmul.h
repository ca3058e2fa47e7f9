// Matrix products against weights in their on-disk format (DESIGN.md §7.4): one dtype-tagged
// entry point per operation; the ISA variant is chosen once per call, never per element.
#pragma once

#include <cstdint>

#include "backend/thread_pool.h"
#include "ops/isa.h"
#include "util/dtype.h"

namespace dsv3::ops {

// A weight matrix W [rows = out_features, cols = in_features], row-major, used in place.
// For kF8E4M3, scale is the dequantisation multiplier grid ("weight_scale_inv")
// [ceil(rows / block_rows), ceil(cols / block_cols)]: W[i, j] = e4m3(q[i, j]) * scale[i/br, j/bc].
// Group-quantized integer formats (ops/quant.h), one scale per row per group_size columns,
// scale [rows, ceil(cols / group_size)]:
//   kI8 (q8_0): data int8 [rows, cols],            W[i, j] = q[i, j] * scale[i, j / gs]
//   kU8 (q4_0): data uint8 [rows, ceil(cols / 2)], two 4-bit codes per byte, the low nibble is the
//               even column: W[i, j] = (nibble(i, j) - 8) * scale[i, j / gs]
struct WeightView {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  const void* data = nullptr;
  const float* scale = nullptr;
  int64_t block_rows = 128;
  int64_t block_cols = 128;
  int64_t group_size = 32;  // kI8 / kU8 only
  // kI8 / kU8: 0 = row-major as above; kRowTile (16) = rows in tiles of 16 for the int8 kernels
  // (ops/row_tiles.h; set only by TileRows). kBF16 / kF8E4M3: kBf16Tile (32) = rows in the bf16-dot
  // kernel's pair-major tiles (ops/bf16_tiles.h; set only by TilePairRows).
  int64_t row_tiles = 0;
  // Tiled weights only: the tiles' scales are held as f16 (TileRows, when every tiled row's scale
  // is exactly an f16 value: the same numbers in half the bytes; ops/row_tiles.h).
  bool f16_tile_scales = false;
  // FP8 pair tiles only, optional: which of the tiles' 64-byte lines (column pair j of a tile's 32
  // rows) hold a zero-exponent code, one bit a line (ops/bf16_tiles.h, MarkFp8ZeroExponentLines),
  // so the decode kernel need not test each line it reads. nullptr: the kernel tests them.
  const uint64_t* fp8_line_flags = nullptr;
};

// Where kernels run: the thread pool to split work over and the instruction set to use.
struct KernelContext {
  ThreadPool* pool = nullptr;  // nullptr: run on the calling thread
  Isa isa = Isa::kScalar;
  // Opt-in fast path for BF16 and FP8 weights: x is rounded to bf16 (nearest even; subnormal x,
  // below 2^-126, to zero) and products are summed with vdpbf16ps (about twice the f32 FMA rate;
  // FP8 values are exact in bf16, and each column block's sums are multiplied by its block
  // scale). Used only by the AVX-512 kernel at prefill sizes (T >= 8; FP8 with even block_cols
  // <= 512); elsewhere ignored. It changes the numerics: each x value gets a relative error up to
  // 2^-8, so results no longer match an f32/f64 reference to 1e-5. Off here; the CLI turns it on
  // for every command but `dsv3 logits` (app/cli/args.h).
  bool bf16_dot = false;
  // Opt-in int8 path for q8_0 / q4_0 weights (group size 32; ops/int8_dot.h): each token's x is
  // quantized per 32-column block to int8 (d = the power of two at or above max|x| / 127, once
  // per token per matrix), block dots are exact int32 (VNNI vpdpbusd on AVX-512, maddubs/madd on
  // AVX2) and each block adds float(dot) * d_x * d_w in f32. Every ISA gives the same bits. It
  // changes the numerics: each x value moves by up to d_x / 2 of its block. Other dtypes ignore
  // it.
  bool int8_dot = false;
  // Keeps the prefill attention's score and value products f32 where int8_dot or bf16_dot would
  // run them as bf16 x bf16 products (model/mla.cpp, Bf16AttentionProducts).
  bool f32_attention = false;
};

// y[t, r] = sum_c x[t, c] * W[r, c]
// x: [T, W.cols] f32, y: [T, W.rows] f32 (overwritten). Accumulates in f32. ctx.isa must be one
// of RunnableIsas(). Work is split over ctx.pool by output rows (products with fewer rows than one
// thread chunk and 64 or more tokens: by tokens, 32 or more each, where every kernel's result
// for a token is that of the whole call), so the result is bitwise the same for any thread
// count. Never allocates; the packed-GEMM path (T >= 16) uses ~260 KB of the
// stack of each thread it runs on, the int8 path 512 KiB on the calling thread (quantized x) and
// up to 144 KiB on each thread (a panel of unpacked rows; ~240 KiB on AVX2, with room for a tiled
// panel's scales and copied rows); MatMulBatch 512 KiB more on each thread when it has int8 jobs
// or balances its chunks at run time.
void MatMul(const KernelContext& ctx, const float* x, int64_t T, const WeightView& w, float* y);

// out[c] = W[row, c] dequantised to f32 (embedding lookups, dequantised copies): the code's
// value times its scale (FP8 block / q8_0, q4_0 group), one f32 rounding.
void DequantizeRow(const WeightView& w, int64_t row, float* out);
// The same values (bitwise) converted 8 or 16 at a time on isa (one of RunnableIsas()): fast
// enough to stream rows as stored through L1 on the decode path instead of keeping f32 copies.
void DequantizeRow(Isa isa, const WeightView& w, int64_t row, float* out);

// y[c] += sum_{k < n} a[k] * W[row0 + k, c] for c < W.cols (W^T a over a range of rows, W as
// stored): bitwise what DequantizeRow(isa) then Axpy(isa, a[k]) row after row give, without
// writing the rows out. row_buf: [W.cols] scratch.
void AccumulateRows(Isa isa, const WeightView& w, int64_t row0, int64_t n, const float* a, float* y,
                    float* row_buf);

// Rows [row_begin, row_end) of MatMul on the calling thread: writes only y[:, row_begin:row_end].
// The building block for callers that schedule many products in one parallel region.
void MatMulRowRange(const KernelContext& ctx, const float* x, int64_t T, const WeightView& w,
                    int64_t row_begin, int64_t row_end, float* y);
// MatMulRowRange with token t at row x_rows[t] of x, off the int8 path (MatMulBatch runs those
// through its int8 runner). The bf16-dot path's packed form reads the rows in place; other paths
// get them copied into a temporary first.
void MatMulRowRangeOfRows(const KernelContext& ctx, const float* x, const int32_t* x_rows,
                          int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                          float* y);
// Whether MatMulBatch reads T tokens of w given as rows of a larger x (MatMulJob::x_rows) in
// place, with no copy: the int8 path (UsesInt8Dot) and the bf16-dot path's packed form.
bool ReadsRowsInPlace(const KernelContext& ctx, const WeightView& w, int64_t T);

// Several independent products y_i = x_i W_i^T run in one parallel region: row chunks of all
// jobs are spread over the pool's threads, so a batch of small matrices (the experts a decoded
// token routes to) costs one wake-up of the pool instead of one per matrix. When every job can be
// cut into many calls at no cost (int8 jobs, and decode's few tokens on the other paths) the
// chunks are balanced at run time (ThreadPool::ParallelForStealing).
struct Int8Activations;  // ops/int8_dot.h

struct MatMulJob {
  const float* x = nullptr;  // [T, w.cols]
  int64_t T = 0;
  const WeightView* w = nullptr;
  float* y = nullptr;  // [T, w.rows]
  // Optional: token t is row x_rows[t] of x. The int8 path (UsesInt8Dot) reads the rows in place
  // as it quantizes them, the bf16-dot path's packed form as it rounds them (the MoE layer's
  // tokens of one expert, not copied out; ReadsRowsInPlace); other paths copy them into a
  // temporary first.
  const int32_t* x_rows = nullptr;
  // Optional, int8 path only: x's rows quantized ahead (ops/int8_dot.h, QuantizeActivations),
  // read instead of quantizing them in this job; ignored elsewhere.
  const Int8Activations* xq = nullptr;
};
void MatMulBatch(const KernelContext& ctx, const MatMulJob* jobs, int64_t num_jobs);

}  // namespace dsv3::ops
