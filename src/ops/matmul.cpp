// MatMul entry point (ISA dispatch + row split over the thread pool) and the scalar reference.
#include "ops/matmul.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstring>
#include <limits>
#include <vector>

#include "ops/bf16_tiles.h"
#include "ops/int8_dot.h"
#include "ops/kernels_internal.h"
#include "ops/row_tiles.h"
#include "ops/vector_ops.h"

namespace dsv3::ops {

namespace {

// e4m3fn decode table built at compile time from the spec's formula (§9.3), so the scalar path
// does not call ldexp per weight. Immutable, hence not global mutable state.
constexpr float Fp8E4M3Value(int bits) {
  const int exponent = (bits >> 3) & 0xf;
  const int mantissa = bits & 0x7;
  if (exponent == 0xf && mantissa == 0x7) return std::numeric_limits<float>::quiet_NaN();
  // Subnormal: m * 2^-9; normal: (8 + m) * 2^(e - 10). Both are exact in float.
  float magnitude = exponent == 0 ? static_cast<float>(mantissa) : static_cast<float>(8 + mantissa);
  int power = exponent == 0 ? -9 : exponent - 10;
  for (; power < 0; ++power) magnitude *= 0.5f;
  for (; power > 0; --power) magnitude *= 2.0f;
  return (bits & 0x80) ? -magnitude : magnitude;
}

constexpr std::array<float, 256> MakeFp8Table() {
  std::array<float, 256> table{};
  for (int i = 0; i < 256; ++i) table[i] = Fp8E4M3Value(i);
  return table;
}

constexpr std::array<float, 256> kFp8E4M3Table = MakeFp8Table();

bool IsGroupQuantized(DType dtype) {
  return dtype == DType::kI8 || dtype == DType::kU8;
}

bool IsMatMulDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kF16 || dtype == DType::kBF16 ||
         dtype == DType::kF8E4M3 || IsGroupQuantized(dtype);
}

// out[i] = W[row, col + i] for i < n, exact conversion to f32 without the FP8 block scale or
// the q8_0/q4_0 group scale.
void ConvertRowSegment(const WeightView& w, int64_t row, int64_t col, int64_t n, float* out) {
  if (n <= 0) return;  // also keeps memcpy away from a null `data` of an empty matrix
  if (w.row_tiles != 0 && IsGroupQuantized(w.dtype)) {
    // Tiled rows (ops/row_tiles.h): the row's bytes copied out 64 columns at a time.
    uint8_t bytes[64];
    for (int64_t i = 0; i < n; i += 64) {
      const int64_t c = col + i, m = std::min<int64_t>(64, n - i);
      if (w.dtype == DType::kI8) {
        CopyRowBytes(w, row, c, m, bytes);
        for (int64_t k = 0; k < m; ++k)
          out[i + k] = static_cast<float>(static_cast<int8_t>(bytes[k]));
        continue;
      }
      const int64_t first = c / 2;
      CopyRowBytes(w, row, first, (c + m - 1) / 2 - first + 1, bytes);
      for (int64_t k = 0; k < m; ++k) {
        const int64_t cc = c + k;
        const int code = (cc & 1) ? bytes[cc / 2 - first] >> 4 : bytes[cc / 2 - first] & 0xf;
        out[i + k] = static_cast<float>(code - 8);
      }
    }
    return;
  }
  if (w.row_tiles != 0 && (w.dtype == DType::kBF16 || w.dtype == DType::kF8E4M3)) {
    // Tiled rows (ops/bf16_tiles.h): the row's bytes copied out 64 columns at a time, converted
    // as a one-row row-major weight.
    uint8_t bytes[128];
    WeightView segment = w;
    segment.row_tiles = 0;
    segment.rows = 1;
    segment.data = bytes;
    for (int64_t i = 0; i < n; i += 64) {
      const int64_t m = std::min<int64_t>(64, n - i);
      CopyTiledRow(w, row, col + i, m, bytes);
      segment.cols = m;
      ConvertRowSegment(segment, 0, 0, m, out + i);
    }
    return;
  }
  if (w.dtype == DType::kU8) {
    // q4_0 rows are ceil(cols / 2) bytes; the low nibble holds the even column.
    const uint8_t* src = static_cast<const uint8_t*>(w.data) + row * ((w.cols + 1) / 2);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t c = col + i;
      const int code = (c & 1) ? src[c >> 1] >> 4 : src[c >> 1] & 0xf;
      out[i] = static_cast<float>(code - 8);
    }
    return;
  }
  const int64_t offset = row * w.cols + col;
  switch (w.dtype) {
    case DType::kF32:
      std::memcpy(out, static_cast<const float*>(w.data) + offset, n * sizeof(float));
      break;
    case DType::kF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = F16ToF32(src[i]);
      break;
    }
    case DType::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = Bf16ToF32(src[i]);
      break;
    }
    case DType::kF8E4M3: {
      const uint8_t* src = static_cast<const uint8_t*>(w.data) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = kFp8E4M3Table[src[i]];
      break;
    }
    case DType::kI8: {
      const int8_t* src = static_cast<const int8_t*>(w.data) + offset;
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(src[i]);
      break;
    }
    default:
      std::fill(out, out + n, std::numeric_limits<float>::quiet_NaN());
      break;
  }
}

using MatMulRowsFn = void (*)(const float*, int64_t, const WeightView&, int64_t, int64_t, float*);

// The row kernel for ctx and w's dtype (the int8 path is chosen before this, UsesInt8Dot).
MatMulRowsFn SelectMatMul(const KernelContext& ctx, const WeightView& w) {
  const Isa isa = ctx.isa;
  const DType dtype = w.dtype;
  // Tiles: the int8 path reads its own natively, the AVX-512 and AVX2 kernels BF16's and FP8's;
  // the scalar kernels take the reference.
  const bool bf16_or_fp8 = dtype == DType::kBF16 || dtype == DType::kF8E4M3;
  const bool native_tiles = (isa == Isa::kAvx512 || isa == Isa::kAvx2) && bf16_or_fp8;
  if (w.row_tiles != 0 && !native_tiles) return scalar::MatMulRows;
  if (ctx.bf16_dot && isa == Isa::kAvx512 && bf16_or_fp8) return avx512::MatMulRowsBf16Dot;
  // The SIMD group-quantized kernels fall back to the reference for group sizes other than 32.
  if (IsGroupQuantized(dtype)) {
    switch (isa) {
      case Isa::kScalar:
        return scalar::MatMulRows;
      case Isa::kAvx2:
        return avx2::MatMulRowsQuant;
      case Isa::kAvx512:
        return avx512::MatMulRowsQuant;
    }
  }
  switch (isa) {
    case Isa::kScalar:
      return scalar::MatMulRows;
    case Isa::kAvx2:
      return avx2::MatMulRows;
    case Isa::kAvx512:
      return avx512::MatMulRows;
  }
  return scalar::MatMulRows;
}

// Below this many multiply-adds the wake-up of the pool costs more than it saves.
constexpr int64_t kMinParallelMacs = int64_t{1} << 16;
// Thread chunks are multiples of 64 rows: a multiple of every kernel's row tile, and 64 floats of
// y per token, so two threads never write the same cache line of y (for 64-byte aligned y and
// rows a multiple of 16, which all real shapes are).
constexpr int64_t kRowGrain = 64;
// Below this many tokens every kernel takes the dot-product form (tiles of at most 4 rows; the
// fewest tokens any packed kernel starts at is avx512_matmul.cpp's bf16-dot one, 8).
constexpr int64_t kMinPackedTokens = 8;
constexpr int64_t kDotRowGrain = 16;
// From this many tokens the F32 / F16 / BF16 SIMD kernels take their packed form
// (avx2_matmul.cpp, avx512_matmul.cpp: kMinPackedT), whose outputs for a token do not depend on
// the other tokens of the call; below it, the dot form's bits differ. (The scalar kernel's
// outputs never depend on the other tokens.)
constexpr int64_t kPackedFormTokens = 32;

// Whether a product with too few rows for one thread chunk each (a MoE router's 64 experts)
// splits its tokens over the threads instead: pieces of at least kPackedFormTokens tokens, so
// every piece takes the packed form and gives the bits of the whole call.
bool SplitsTokens(const KernelContext& ctx, int64_t T, const WeightView& w, int64_t grain) {
  const bool packed_alike =
      w.dtype == DType::kF32 || w.dtype == DType::kF16 || w.dtype == DType::kBF16;
  return packed_alike && !(ctx.bf16_dot && w.dtype == DType::kBF16) && ctx.pool != nullptr &&
         ctx.pool->num_threads() > 1 && w.rows <= grain && T >= 2 * kPackedFormTokens;
}

}  // namespace

namespace scalar {

// The reference: every output is a plain left-to-right f32 sum over the columns; for FP8 it is a
// left-to-right sum over column blocks of (left-to-right partial dot of the block) * block scale,
// and the same for q8_0/q4_0 with one-row blocks of group_size columns (their group scales).
// Weights are converted in short segments so T tokens share one conversion (tokens are tiled so
// the per-token accumulators live on the stack).
void MatMulRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                float* y) {
  constexpr int64_t kTileT = 8;
  constexpr int64_t kSegment = 64;
  const int64_t cols = w.cols;
  const bool grouped = IsGroupQuantized(w.dtype);
  const bool fp8 = w.dtype == DType::kF8E4M3 || grouped;  // scaled blocks
  const int64_t block_rows = grouped ? 1 : w.block_rows;
  const int64_t block_cols = grouped ? w.group_size
                             : fp8   ? w.block_cols
                                     : std::max<int64_t>(cols, 1);
  const int64_t scale_cols = fp8 ? (cols + block_cols - 1) / block_cols : 0;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* scale_row = fp8 && !grouped ? w.scale + (r / block_rows) * scale_cols : nullptr;
    for (int64_t t0 = 0; t0 < T; t0 += kTileT) {
      const int64_t nt = std::min(kTileT, T - t0);
      float acc[kTileT] = {};
      for (int64_t b0 = 0; b0 < cols; b0 += block_cols) {
        const int64_t b1 = std::min(cols, b0 + block_cols);
        float part[kTileT] = {};
        for (int64_t c0 = b0; c0 < b1; c0 += kSegment) {
          const int64_t n = std::min(kSegment, b1 - c0);
          float wseg[kSegment];
          ConvertRowSegment(w, r, c0, n, wseg);
          for (int64_t t = 0; t < nt; ++t) {
            const float* xt = x + (t0 + t) * cols + c0;  // x[t0 + t, c0:c0 + n]
            float p = part[t];
            for (int64_t c = 0; c < n; ++c) p += xt[c] * wseg[c];
            part[t] = p;
          }
        }
        const float s = grouped ? GroupScale(w, r, b0 / block_cols)
                        : fp8   ? scale_row[b0 / block_cols]
                                : 1.0f;
        for (int64_t t = 0; t < nt; ++t) acc[t] += part[t] * s;
      }
      for (int64_t t = 0; t < nt; ++t) y[(t0 + t) * w.rows + r] = acc[t];  // y[t0 + t, r]
    }
  }
}

}  // namespace scalar

void MatMul(const KernelContext& ctx, const float* x, int64_t T, const WeightView& w, float* y) {
  if (T <= 0 || w.rows <= 0) return;
  assert(IsMatMulDType(w.dtype) && "MatMul: weight dtype must be F32, F16, BF16, F8_E4M3, I8, U8");
  assert(CpuSupports(ctx.isa) && "MatMul: ctx.isa must be one of RunnableIsas()");
  if (!IsMatMulDType(w.dtype)) {
    // No error channel here: make misuse loud in the output instead of aborting.
    std::fill(y, y + T * w.rows, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  if (w.cols == 0) {
    std::fill(y, y + T * w.rows, 0.0f);
    return;
  }
  if (UsesInt8Dot(ctx, w)) return MatMulInt8(ctx, x, T, w, y);
  const MatMulRowsFn kernel = SelectMatMul(ctx, w);
  const int64_t macs = T * w.rows * w.cols;
  // Decode's dot-product kernels take 4 rows a tile, so their chunks can be 16 rows (16 floats of
  // y per token, a cache line): a router of 64 experts (64 x 7168 BF16, 0.9 MB) then splits over
  // the threads instead of running on one while the others wait.
  const int64_t grain = T < kMinPackedTokens ? kDotRowGrain : kRowGrain;
  if (SplitsTokens(ctx, T, w, grain) && macs >= kMinParallelMacs) {
    // bench-medium pp512, the router's 64 x 2048 gate per layer: 1.07-1.14 ms on one thread,
    // 0.71-0.82 split (forwards alternating, 2 runs; each thread packs all of W for its tokens).
    const int64_t pieces = std::min<int64_t>(ctx.pool->num_threads(), T / kPackedFormTokens);
    struct Args {
      MatMulRowsFn kernel;
      const float* x;
      int64_t T, pieces;
      const WeightView* w;
      float* y;
    } const args{kernel, x, T, pieces, &w, y};
    ctx.pool->ParallelFor(pieces, [&args](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t t0 = args.T * p / args.pieces, t1 = args.T * (p + 1) / args.pieces;
        const int64_t cols = args.w->cols, rows = args.w->rows;
        // tokens [t0, t1): x[t0:t1, :] -> y[t0:t1, :]
        args.kernel(args.x + t0 * cols, t1 - t0, *args.w, 0, rows, args.y + t0 * rows);
      }
    });
    return;
  }
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1 || macs < kMinParallelMacs ||
      w.rows <= grain) {
    kernel(x, T, w, 0, w.rows, y);
    return;
  }
  // One captured reference keeps the lambda inside std::function's small buffer (no allocation).
  struct Args {
    MatMulRowsFn kernel;
    const float* x;
    int64_t T;
    const WeightView* w;
    float* y;
  } const args{kernel, x, T, &w, y};
  ctx.pool->ParallelFor(
      w.rows,
      [&args](int64_t begin, int64_t end) {
        args.kernel(args.x, args.T, *args.w, begin, end, args.y);
      },
      grain);
}

void MatMulRowRange(const KernelContext& ctx, const float* x, int64_t T, const WeightView& w,
                    int64_t row_begin, int64_t row_end, float* y) {
  if (T <= 0 || row_begin >= row_end) return;
  if (!IsMatMulDType(w.dtype)) {
    for (int64_t t = 0; t < T; ++t)
      std::fill(y + t * w.rows + row_begin, y + t * w.rows + row_end,
                std::numeric_limits<float>::quiet_NaN());
    return;
  }
  if (w.cols == 0) {
    for (int64_t t = 0; t < T; ++t)
      std::fill(y + t * w.rows + row_begin, y + t * w.rows + row_end, 0.0f);
    return;
  }
  if (UsesInt8Dot(ctx, w)) {
    Int8RowRunner runner(ctx.isa);
    return runner.Run(x, T, w, row_begin, row_end, y);
  }
  const MatMulRowsFn kernel = SelectMatMul(ctx, w);
  kernel(x, T, w, row_begin, row_end, y);
}

namespace {
bool Bf16DotRowsInPlace(const KernelContext& ctx, const WeightView& w, int64_t T) {
  return ctx.bf16_dot && ctx.isa == Isa::kAvx512 && avx512::Bf16DotReadsRows(w, T);
}
}  // namespace

bool ReadsRowsInPlace(const KernelContext& ctx, const WeightView& w, int64_t T) {
  return UsesInt8Dot(ctx, w) || Bf16DotRowsInPlace(ctx, w, T);
}

void MatMulRowRangeOfRows(const KernelContext& ctx, const float* x, const int32_t* x_rows,
                          int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                          float* y) {
  if (T <= 0 || row_begin >= row_end) return;
  if (Bf16DotRowsInPlace(ctx, w, T))
    return avx512::MatMulRowsBf16DotRows(x, x_rows, T, w, row_begin, row_end, y);
  const int64_t cols = w.cols;
  std::vector<float> gathered(static_cast<size_t>(T * cols));
  for (int64_t t = 0; t < T; ++t)
    std::copy(x + x_rows[t] * cols, x + (x_rows[t] + 1) * cols, gathered.begin() + t * cols);
  MatMulRowRange(ctx, gathered.data(), T, w, row_begin, row_end, y);
}

namespace scalar {

void DequantizeRowRange(const WeightView& w, int64_t row, int64_t c0, int64_t c1, float* out) {
  ConvertRowSegment(w, row, c0, c1 - c0, out);
  if (IsGroupQuantized(w.dtype)) {
    for (int64_t c = c0; c < c1;) {
      const int64_t g = c / w.group_size, end = std::min(c1, (g + 1) * w.group_size);
      const float s = GroupScale(w, row, g);
      for (; c < end; ++c) out[c - c0] *= s;
    }
    return;
  }
  if (w.dtype != DType::kF8E4M3) return;
  const int64_t scale_cols = (w.cols + w.block_cols - 1) / w.block_cols;
  const float* scale_row = w.scale + (row / w.block_rows) * scale_cols;
  for (int64_t c = c0; c < c1; ++c) out[c - c0] *= scale_row[c / w.block_cols];
}

}  // namespace scalar

void DequantizeRow(const WeightView& w, int64_t row, float* out) {
  scalar::DequantizeRowRange(w, row, 0, w.cols, out);
}

void AccumulateRows(Isa isa, const WeightView& w, int64_t row0, int64_t n, const float* a, float* y,
                    float* row_buf) {
  if (isa == Isa::kAvx512 && w.row_tiles == 0)
    return avx512::AccumulateRows(w, row0, n, a, y, row_buf);
  if (isa == Isa::kAvx2 && w.row_tiles == 0) return avx2::AccumulateRows(w, row0, n, a, y, row_buf);
  for (int64_t k = 0; k < n; ++k) {
    DequantizeRow(isa, w, row0 + k, row_buf);
    Axpy(isa, a[k], row_buf, w.cols, y);
  }
}

void DequantizeRow(Isa isa, const WeightView& w, int64_t row, float* out) {
  if (w.row_tiles != 0) isa = Isa::kScalar;  // tiled rows: the reference reads them
  switch (isa) {
    case Isa::kAvx512:
      return avx512::DequantizeRow(w, row, out);
    case Isa::kAvx2:
      return avx2::DequantizeRow(w, row, out);
    case Isa::kScalar:
      break;
  }
  scalar::DequantizeRowRange(w, row, 0, w.cols, out);
}

}  // namespace dsv3::ops
