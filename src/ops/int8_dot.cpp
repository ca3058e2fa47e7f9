// The int8-activation path (ops/int8_dot.h): the scalar twin every SIMD variant is tested against,
// ISA dispatch, and the token chunking that keeps each chunk's quantized x in a stack buffer.
#include "ops/int8_dot.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

#include "ops/isa.h"
#include "ops/kernels_internal.h"
#include "ops/row_tiles.h"

namespace dsv3::ops {

namespace {

using QuantizeActsFn = void (*)(const ActSource&, int64_t, const WeightView&, uint8_t*);
using QuantizeBlocksFn = void (*)(const float*, int64_t, int8_t*, float*, int32_t*);
using RowsInt8Fn = void (*)(const uint8_t*, int64_t, const WeightView&, int64_t, int64_t, float*);

struct Int8Kernels {
  QuantizeActsFn quantize;
  RowsInt8Fn rows;
  int64_t tile_tokens = 0;  // avx512::Int8LayoutTileTokens
};

// The kernels for isa and w: every ISA's kernels read tiled weights (ops/row_tiles.h): AVX-512 and
// AVX2 natively, the scalar twin through the layout's accessors. AVX2 runs its AVX-VNNI variant
// where the CPU has it (unless DSV3_AVX_VNNI=0).
Int8Kernels SelectInt8(Isa isa, const WeightView& w) {
  switch (isa) {
    case Isa::kScalar:
      return {scalar::QuantizeActsInt8, scalar::MatMulRowsInt8};
    case Isa::kAvx2:
      if (AvxVnniEnabled()) return {avxvnni::QuantizeActsInt8, avxvnni::MatMulRowsInt8};
      return {avx2::QuantizeActsInt8, avx2::MatMulRowsInt8};
    case Isa::kAvx512:
      return {avx512::QuantizeActsInt8, avx512::MatMulRowsInt8, avx512::Int8LayoutTileTokens(w)};
  }
  return {scalar::QuantizeActsInt8, scalar::MatMulRowsInt8};
}

// Same thresholds as MatMul's f32 split (matmul.cpp): below this many multiply-adds a wake-up of
// the pool costs more than it saves; chunks of 64 rows keep threads off each other's lines of y.
constexpr int64_t kMinParallelMacs = int64_t{1} << 16;
constexpr int64_t kRowGrain = 64;

// Outputs one stage of StagedRows holds (64 KB of the calling thread's stack).
constexpr int64_t kStageFloats = 16384;

// rows(buf, T, w, row_begin, row_end, y) for T >= 16 (the packed prefill tiles) in blocks of rows,
// each computed into a compact stage [T, n] (the rows as a weight of their own: the bits of the
// whole product's columns) and copied into y. Written straight, y's rows lie w.rows floats apart,
// so a 16-token tile's stores fall into few L1 sets (one when w.rows is a multiple of 1024) and
// evict each other between the micro-tiles that fill a line: bench-medium q4_0 pp512, forwards
// alternating between both in one process, o_proj (2048 rows) 4-6 % less time, forwards 0.4-4 %
// (3 runs); the MoE gate/up products (512 rows) level. Blocks the view cannot take (rows off
// whole tiles) and stages too small for 16 rows are written straight.
void StagedRows(RowsInt8Fn rows, const uint8_t* buf, int64_t T, const WeightView& w,
                int64_t row_begin, int64_t row_end, float* y) {
  const int64_t block = kStageFloats / std::max<int64_t>(T, 1) / kRowTile * kRowTile;
  if (T < kRowTile || block < kRowTile) return rows(buf, T, w, row_begin, row_end, y);
  alignas(64) float stage[kStageFloats];
  for (int64_t r0 = row_begin; r0 < row_end; r0 += block) {
    const int64_t n = std::min(block, row_end - r0);
    if (!Int8RowRangeSharesLayout(w, r0, n)) {
      rows(buf, T, w, r0, r0 + n, y);
      continue;
    }
    rows(buf, T, Int8RowRange(w, r0, n), 0, n, stage);  // stage: [T, n]
    for (int64_t t = 0; t < T; ++t)
      std::memcpy(y + t * w.rows + r0, stage + t * n, static_cast<size_t>(n) * sizeof(float));
  }
}

// W[r, 32 b + c] as a signed code (q8_0: q; q4_0: nibble - 8), 0 past the row's end; either
// layout (ops/row_tiles.h).
void LoadWeightCodes(const WeightView& w, int64_t r, int64_t b, int32_t* codes) {
  const int64_t c0 = b * kInt8Block;
  const int64_t n = std::min(kInt8Block, w.cols - c0);
  uint8_t bytes[kInt8Block];
  if (w.dtype == DType::kI8) {
    CopyRowBytes(w, r, c0, n, bytes);
    for (int64_t c = 0; c < kInt8Block; ++c) codes[c] = c < n ? static_cast<int8_t>(bytes[c]) : 0;
    return;
  }
  CopyRowBytes(w, r, c0 / 2, (n + 1) / 2, bytes);  // c0 is even
  for (int64_t c = 0; c < kInt8Block; ++c) {
    if (c >= n) {
      codes[c] = 0;
      continue;
    }
    const int nibble = (c & 1) ? bytes[c >> 1] >> 4 : bytes[c >> 1] & 0xf;
    codes[c] = nibble - 8;
  }
}

}  // namespace

namespace scalar {

void QuantizeActBlocks(const float* x, int64_t cols, int8_t* q, float* d, int32_t* sum) {
  const int64_t groups = QuantGroups(cols, kInt8Block);
  for (int64_t b = 0; b < groups; ++b) {
    const int64_t c0 = b * kInt8Block;
    const int64_t n = std::min(kInt8Block, cols - c0);
    // max |x| on the bit patterns: NaN > inf > every finite value, so a NaN or inf in the block
    // reaches d (SIMD max instructions would drop a NaN depending on operand order).
    uint32_t amax_bits = 0;
    for (int64_t c = 0; c < n; ++c) {
      uint32_t bits;
      std::memcpy(&bits, x + c0 + c, 4);
      amax_bits = std::max(amax_bits, bits & 0x7fffffffu);
    }
    float amax;
    std::memcpy(&amax, &amax_bits, 4);
    const float db = Int8ActScale(amax);
    const bool usable = db > 0.0f && db <= std::numeric_limits<float>::max();
    int32_t s = 0;
    for (int64_t c = 0; c < kInt8Block; ++c) {
      int32_t v = 0;
      if (usable && c < n) {
        // d >= max|x| / 127 (a power of two): |x / d| <= 127 up to the rounding of max|x| / 127.
        const float r = std::nearbyint(x[c0 + c] / db);
        v = static_cast<int32_t>(std::clamp(r, -127.0f, 127.0f));
      }
      q[c0 + c] = static_cast<int8_t>(v);
      s += v;
    }
    d[b] = db;
    sum[b] = s;
  }
}

// Layout: q [T, groups * 32] int8, then d [T, groups] f32, then sum [T, groups] int32 (the
// layout of Int8Activations, so a row of xq is copied as it is).
void QuantizeActsInt8(const ActSource& a, int64_t T, const WeightView& w, uint8_t* buf) {
  const int64_t cols = w.cols;
  const int64_t groups = QuantGroups(cols, kInt8Block);
  int8_t* q = reinterpret_cast<int8_t*>(buf);
  float* d = reinterpret_cast<float*>(buf + T * groups * kInt8Block);
  int32_t* sum = reinterpret_cast<int32_t*>(d + T * groups);
  for (int64_t t = 0; t < T; ++t) {
    if (a.xq == nullptr) {
      QuantizeActBlocks(ActRow(a, t, cols), cols, q + t * groups * kInt8Block, d + t * groups,
                        sum + t * groups);
      continue;
    }
    const int64_t row = SourceRow(a, t);
    std::memcpy(q + t * groups * kInt8Block, a.xq->q + row * groups * kInt8Block,
                static_cast<size_t>(groups * kInt8Block));
    std::copy(a.xq->d + row * groups, a.xq->d + (row + 1) * groups, d + t * groups);
    std::copy(a.xq->sum + row * groups, a.xq->sum + (row + 1) * groups, sum + t * groups);
  }
}

// Weight blocks are decoded once per row and token tile; the integer dot of a block is a plain
// sum, and std::fma is the one rounding of each block's contribution, as in the SIMD kernels.
void MatMulRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y) {
  constexpr int64_t kTileT = 8;
  const int64_t groups = QuantGroups(w.cols, kInt8Block);
  const int8_t* q = reinterpret_cast<const int8_t*>(buf);
  const float* d = reinterpret_cast<const float*>(buf + T * groups * kInt8Block);
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int64_t t0 = 0; t0 < T; t0 += kTileT) {
      const int64_t nt = std::min(kTileT, T - t0);
      float acc[kTileT] = {};
      for (int64_t b = 0; b < groups; ++b) {
        int32_t codes[kInt8Block];
        LoadWeightCodes(w, r, b, codes);
        const float dw = GroupScale(w, r, b);  // d_w[r, b]
        for (int64_t t = 0; t < nt; ++t) {
          const int8_t* qx = q + ((t0 + t) * groups + b) * kInt8Block;  // q_x[t0 + t, block b]
          int32_t isum = 0;
          for (int64_t c = 0; c < kInt8Block; ++c) isum += qx[c] * codes[c];
          const float scaled = static_cast<float>(isum) * d[(t0 + t) * groups + b];  // exact
          acc[t] = std::fma(scaled, dw, acc[t]);
        }
      }
      for (int64_t t = 0; t < nt; ++t) y[(t0 + t) * w.rows + r] = acc[t];  // y[t0 + t, r]
    }
  }
}

}  // namespace scalar

int64_t Int8ChunkTokens(int64_t cols) {
  const int64_t per_token = QuantGroups(cols, kInt8Block) * (kInt8Block + 8);
  if (per_token <= 0) return 0;
  // Multiples of 32 where they fit: the prefill kernel's full micro-tiles take 32 tokens.
  const int64_t fit = kInt8ActBufferBytes / per_token;
  return fit >= 32 ? fit / 32 * 32 : fit / 16 * 16;
}

bool UsesInt8Dot(const KernelContext& ctx, const WeightView& w) {
  return ctx.int8_dot && (w.dtype == DType::kI8 || w.dtype == DType::kU8) &&
         w.group_size == kInt8Block && w.cols > 0 && Int8ChunkTokens(w.cols) > 0;
}

// Values below which a layout stays on the calling thread (~6 us of quantizing; a wake-up of the
// pool costs a few).
constexpr int64_t kMinParallelQuantize = 16384;

// k.quantize(a, T, w, buf), split over ctx's threads in runs of whole tiles where k's layout is
// made of them (Int8Kernels::tile_tokens; the last run takes the tokens past the last whole tile):
// the same bytes. On the calling thread alone, a prefill chunk (192 tokens x 2048 columns) kept the
// other thread waiting ~8 % of the product's time. bench-medium q4_0 and q8_0 shapes, 2 threads,
// calls alternating with the serial layout in one process: 2048x2048 at T = 64 2-4 % less time,
// T = 512 5-6 %, 768x3072 at T = 512 7-12 %, T = 32 0-2 %. pp512 forwards alternating: 0.5 %
// slower and 2.7 % faster (2 runs); whole pp512 runs against the previous commit level.
void QuantizeChunk(const KernelContext& ctx, const Int8Kernels& k, const ActSource& a, int64_t T,
                   const WeightView& w, uint8_t* buf) {
  const int64_t tiles = k.tile_tokens > 0 ? T / k.tile_tokens : 0;
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1 || tiles < 2 ||
      T * w.cols < kMinParallelQuantize)
    return k.quantize(a, T, w, buf);
  struct Args {
    const Int8Kernels* k;
    const ActSource* a;
    int64_t T, tiles;
    const WeightView* w;
    uint8_t* buf;
  } const args{&k, &a, T, tiles, &w, buf};
  // One captured pointer keeps the lambda in std::function's small buffer (no allocation).
  ctx.pool->ParallelFor(
      tiles,
      [p = &args](int64_t begin, int64_t end) {
        const int64_t tile = p->k->tile_tokens;
        const int64_t first = begin * tile, last = end == p->tiles ? p->T : end * tile;
        p->k->quantize(SourceFrom(*p->a, first), last - first, *p->w,
                       p->buf + Int8ActBytes(first, p->w->cols));
      },
      1);
}

void MatMulInt8(const KernelContext& ctx, const float* x, int64_t T, const WeightView& w,
                float* y) {
  const Int8Kernels k = SelectInt8(ctx.isa, w);
  const int64_t chunk = Int8ChunkTokens(w.cols);
  alignas(64) uint8_t buffer[kInt8ActBufferBytes];
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t nt = std::min(chunk, T - t0);
    // x[t0 : t0 + nt, :] quantized once (by the threads, where the layout splits), before the
    // rows are split over the threads.
    QuantizeChunk(ctx, k, SourceFrom(ActSource{x}, t0), nt, w, buffer);
    float* y_chunk = y + t0 * w.rows;  // y[t0 : t0 + nt, :]
    if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1 ||
        nt * w.rows * w.cols < kMinParallelMacs || w.rows <= kRowGrain) {
      StagedRows(k.rows, buffer, nt, w, 0, w.rows, y_chunk);
      continue;
    }
    // Chunks of kRowGrain rows, balanced at run time (ParallelForStealing): each row's sum is the
    // same whichever thread computes it.
    struct Args {
      RowsInt8Fn rows;
      const uint8_t* buffer;
      int64_t T;
      const WeightView* w;
      float* y;
    } const args{k.rows, buffer, nt, &w, y_chunk};
    ctx.pool->ParallelForStealing(
        (w.rows + kRowGrain - 1) / kRowGrain, nullptr, [&args](int, UnitQueue& queue) {
          int64_t begin = 0, end = 0;
          while (queue.Next(&begin, &end)) {
            StagedRows(args.rows, args.buffer, args.T, *args.w, begin * kRowGrain,
                       std::min(args.w->rows, end * kRowGrain), args.y);
          }
        });
  }
}

Int8Activations QuantizeActivations(const KernelContext& ctx, const float* x, int64_t rows,
                                    int64_t cols, uint8_t* buf) {
  const int64_t groups = QuantGroups(cols, kInt8Block);
  int8_t* q = reinterpret_cast<int8_t*>(buf);
  float* d = reinterpret_cast<float*>(buf + rows * groups * kInt8Block);
  int32_t* sum = reinterpret_cast<int32_t*>(d + rows * groups);
  struct Args {
    QuantizeBlocksFn quantize;
    const float* x;
    int64_t cols, groups;
    int8_t* q;
    float* d;
    int32_t* sum;
  } const args{ctx.isa == Isa::kAvx512 ? avx512::QuantizeActBlocks
               : ctx.isa == Isa::kAvx2 ? avx2::QuantizeActBlocks
                                       : scalar::QuantizeActBlocks,
               x,
               cols,
               groups,
               q,
               d,
               sum};
  // One captured pointer keeps the lambda in std::function's small buffer (no allocation).
  const auto quantize_rows = [a = &args](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      a->quantize(a->x + r * a->cols, a->cols, a->q + r * a->groups * kInt8Block,
                  a->d + r * a->groups, a->sum + r * a->groups);
  };
  // 16 rows a grain: decoding's one token stays on this thread.
  constexpr int64_t kQuantizeGrain = 16;
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1 || rows <= kQuantizeGrain)
    quantize_rows(0, rows);
  else
    ctx.pool->ParallelFor(rows, quantize_rows, kQuantizeGrain);
  return {q, d, sum, cols};
}

void LayOutInt8(Isa isa, const float* x, int64_t T, const WeightView& w, uint8_t* buf) {
  SelectInt8(isa, w).quantize(ActSource{x}, T, w, buf);
}

void MatMulInt8Rows(Isa isa, const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                    int64_t row_end, float* y) {
  if (T <= 0 || row_begin >= row_end) return;
  SelectInt8(isa, w).rows(buf, T, w, row_begin, row_end, y);
}

void Int8RowRunner::Run(const float* x, int64_t T, const WeightView& w, int64_t row_begin,
                        int64_t row_end, float* y, const int32_t* x_rows, const Int8Activations* xq,
                        int64_t first_token) {
  if (T <= 0 || row_begin >= row_end) return;
  assert((xq == nullptr || xq->cols == w.cols) && "Int8RowRunner::Run: xq holds x of w.cols");
  const Int8Kernels k = SelectInt8(isa_, w);
  const int64_t chunk = Int8ChunkTokens(w.cols);
  const ActSource source{x, x_rows, xq, first_token};
  if (T <= chunk) {
    const void* layout = reinterpret_cast<const void*>(k.quantize);
    if (x != cached_x_ || x_rows != cached_rows_ || xq != cached_xq_ ||
        first_token != cached_first_ || T != cached_T_ || w.cols != cached_cols_ ||
        w.dtype != cached_dtype_ || w.row_tiles != cached_row_tiles_ || layout != cached_layout_) {
      k.quantize(source, T, w, buffer_);
      cached_x_ = x;
      cached_rows_ = x_rows;
      cached_xq_ = xq;
      cached_first_ = first_token;
      cached_T_ = T;
      cached_cols_ = w.cols;
      cached_dtype_ = w.dtype;
      cached_row_tiles_ = w.row_tiles;
      cached_layout_ = layout;
    }
    StagedRows(k.rows, buffer_, T, w, row_begin, row_end, y);
    return;
  }
  cached_x_ = nullptr;  // the buffer ends up holding only the last chunk
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t nt = std::min(chunk, T - t0);
    k.quantize(SourceFrom(source, t0), nt, w, buffer_);
    StagedRows(k.rows, buffer_, nt, w, row_begin, row_end, y + t0 * w.rows);
  }
}

}  // namespace dsv3::ops
