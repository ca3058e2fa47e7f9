// The int8-activation path for q8_0 / q4_0 weights (KernelContext::int8_dot). matmul.cpp and
// matmul_batch.cpp route group-quantized products here when the flag is set; the model asks
// UsesInt8Dot where it lays out a product's input for this path (MoE experts' rows read in place,
// prefill attention's per-head decompression through an Int8RowRunner); tests call the per-ISA
// pieces directly (ops/kernels_internal.h).
//
// Arithmetic, identical in every ISA variant (each is tested bitwise against the scalar twin):
//   1. Each token's x is quantized per block of 32 columns: d = the smallest power of two at or
//      above max|x| / 127 (Int8ActScale), q = round-to-nearest-even(x / d) in [-127, 127]. A
//      partial last block (cols % 32 != 0) is quantized over its present columns only, like the
//      weights' last group; the missing columns count as code 0 in both operands, so they add
//      nothing. A block whose max|x| / 127 is 0, infinite or NaN gets codes 0 and that as d (a
//      NaN/inf in x then turns the outputs NaN: 0 * inf).
//   2. Per output y[t, r] and block b: isum = sum over the block of q_x * q_w in int32 (exact:
//      |isum| <= 32 * 127 * 128 < 2^24, so float(isum) is exact too), then
//      acc = fma(float(isum) * d_x[t, b], d_w[r, b], acc), blocks in order from acc = 0. The
//      first product is exact (d_x a power of two >= 2^-126), so each block adds one rounding.
// Why powers of two: AVX-512 scales float(isum) by vscalefps, which runs beside vpdpbusd, where
// a vmulps by d_x (or by d_x * d_w, as before session 28) takes a slot of the ports vpdpbusd
// needs: the prefill micro-tile does 8 vpdpbusd per accumulator and block, and each vmulps or
// vfmaddps beside them costs a vpdpbusd's cycle (a throwaway loop: 16 vpdpbusd + 4 of them 1.25x
// the time; vaddps, vcvtdq2ps, vpaddd, vscalefps free). One core, 2048 x 2048, T = 512:
// q8_0 312-330 -> 349-351 G op/s, q4_0 297-329 -> 353-356. The price: up to twice as coarse a
// step for x (held-out perplexity of dsv3-tiny q8_0 29.2868 -> 29.2880, q4_0 29.3791 -> 29.3937;
// README).
// So every output is one fixed sequence of f32 operations: results are bitwise independent of
// the ISA, of the thread split, of token chunking and of which kernel shape (GEMV or packed
// prefill tiles) ran. Against the exact f32 path the difference is the activation quantisation:
// each x is off by at most d_x / 2 of its block (tests/ops_quant_int8_test.cpp derives the bound).
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "ops/matmul.h"
#include "ops/quant.h"

namespace dsv3::ops {

inline constexpr int64_t kInt8Block = 32;

// Step 1's scale for a block whose largest |x| is amax: the smallest power of two >= amax / 127,
// at least 2^-126 (the smallest normal float); amax / 127 itself where that is 0, inf or NaN.
inline float Int8ActScale(float amax) {
  const float d = amax / 127.0f;
  if (!(d > 0.0f && d <= std::numeric_limits<float>::max())) return d;
  uint32_t bits;
  std::memcpy(&bits, &d, 4);
  constexpr uint32_t kMantissa = 0x007fffffu, kMinNormal = 0x00800000u;
  if (bits < kMinNormal) {
    bits = kMinNormal;
  } else if ((bits & kMantissa) != 0) {
    bits = (bits & ~kMantissa) + kMinNormal;  // the next power of two (at most 2^121 here)
  }
  float p;
  std::memcpy(&p, &bits, 4);
  return p;
}

// Bytes of an activation buffer that holds T tokens of `cols` columns in any variant's layout:
// tokens rounded up to 16 (the AVX-512 prefill tile), per token and block 32 codes + f32 d +
// int32 correction. Every layout fits in this.
inline int64_t Int8ActBytes(int64_t T, int64_t cols) {
  return (T + 15) / 16 * 16 * QuantGroups(cols, kInt8Block) * (kInt8Block + 8);
}

// The stack buffer one quantized activation chunk lives in (MatMul's calling thread, and each
// thread of MatMulBatch): T is processed in chunks of at most Int8ChunkTokens(cols) tokens, so
// nothing is allocated per call. 512 KiB also keeps a chunk in the L2 while the rows stream.
inline constexpr int64_t kInt8ActBufferBytes = int64_t{512} << 10;

// Tokens per buffer fill: a multiple of 32 (the prefill kernel's micro-tile) where 32 fit, else
// of 16 (its tile) so tiles are never split; 0 when 16 tokens do not fit (cols > 26214, beyond
// every DeepSeek-V3 shape): such products take the exact path.
int64_t Int8ChunkTokens(int64_t cols);

// Activations quantized ahead of the products that read them, for rows of x that many products
// share (a MoE layer's tokens: each is read by its k experts' gate and up projections and by the
// shared expert's, 2k + 2 products): per row and block, QuantizeActBlocks' codes, scale and code
// sum. A product given them (MatMulJob::xq, Int8RowRunner::Run) lays out its tokens from these
// instead of quantizing x again: the same bits, the quantizing done once.
struct Int8Activations {
  const int8_t* q = nullptr;     // [rows, groups * 32], natural column order
  const float* d = nullptr;      // [rows, groups]
  const int32_t* sum = nullptr;  // [rows, groups]
  int64_t cols = 0;
};

// Bytes QuantizeActivations needs for `rows` rows.
inline int64_t Int8ActivationsBytes(int64_t rows, int64_t cols) {
  return rows * QuantGroups(cols, kInt8Block) * (kInt8Block + 8);
}

// x [rows, cols] quantized into buf (Int8ActivationsBytes, 4-byte aligned), the rows split over
// ctx.pool; the result points into buf.
Int8Activations QuantizeActivations(const KernelContext& ctx, const float* x, int64_t rows,
                                    int64_t cols, uint8_t* buf);

// Whether MatMul / MatMulRowRange / MatMulBatch take the int8 path for this weight.
bool UsesInt8Dot(const KernelContext& ctx, const WeightView& w);

// The int8 path of MatMul: quantizes x once per chunk of tokens on the calling thread, then
// splits rows over ctx.pool. Requires UsesInt8Dot(ctx, w) and T > 0.
void MatMulInt8(const KernelContext& ctx, const float* x, int64_t T, const WeightView& w, float* y);

// An activation layout built ahead, for row ranges of one product computed apart (on any thread,
// in any order): the MoE layer's down projections, summed per range of output rows across its
// experts. LayOutInt8 writes T tokens of x (x [T, w.cols], T <= Int8ChunkTokens(w.cols)) into buf
// (Int8ActBytes(T, w.cols) bytes, 64-byte aligned) as isa's kernels read them for w;
// MatMulInt8Rows computes y[:, row_begin:row_end] (y [T, w.rows]) from that buffer. Every output
// has the bits MatMul gives it. Both require UsesInt8Dot for w.
void LayOutInt8(Isa isa, const float* x, int64_t T, const WeightView& w, uint8_t* buf);
void MatMulInt8Rows(Isa isa, const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y);

// One thread's share of products: remembers the last activations it laid out (x, x_rows, xq,
// first token, T, and the weight's cols, dtype, tiling and kernel, which set the layout), so
// consecutive jobs on the same x (gate and up projections) quantize it once.
class Int8RowRunner {
 public:
  explicit Int8RowRunner(Isa isa) : isa_(isa) {}
  Int8RowRunner(const Int8RowRunner&) = delete;
  Int8RowRunner& operator=(const Int8RowRunner&) = delete;

  // y[:, row_begin:row_end] of x W^T on the calling thread. Requires UsesInt8Dot for w. With
  // x_rows, token t is row x_rows[t] of x (a gather read in place). With xq (x quantized by
  // QuantizeActivations, w.cols columns), the rows' blocks are read from it instead. With
  // first_token, token t is token first_token + t of that source (a later chunk of a job's
  // tokens; y still starts at token t = 0).
  void Run(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
           float* y, const int32_t* x_rows = nullptr, const Int8Activations* xq = nullptr,
           int64_t first_token = 0);

 private:
  Isa isa_;
  const float* cached_x_ = nullptr;
  const int32_t* cached_rows_ = nullptr;
  const Int8Activations* cached_xq_ = nullptr;
  int64_t cached_first_ = -1;
  int64_t cached_T_ = -1;
  int64_t cached_cols_ = -1;
  DType cached_dtype_ = DType::kF32;
  int64_t cached_row_tiles_ = -1;  // the AVX-512 layout splits T differently for tiled weights
  const void* cached_layout_ = nullptr;  // the quantize kernel that wrote the buffer
  alignas(64) uint8_t buffer_[kInt8ActBufferBytes];
};

}  // namespace dsv3::ops
