// The int8-activation path for q8_0 / q4_0 weights (KernelContext::int8_dot, ops/int8_dot.h).
//
// What is checked:
//  - The activation quantizer of every ISA gives the scalar twin's codes, scales and sums bit for
//    bit, including partial blocks, all-zero blocks, ties, subnormals and NaN/inf blocks; and the
//    scalar one is within half a step: |x - q d| <= d/2 + (rounding of x / d).
//  - Every ISA's MatMul with int8_dot equals the scalar twin bit for bit (the kernels perform the
//    same integer block dots and the same f32 fma sequence, so no tolerance is needed), for T = 1
//    .. 7 (GEMV kernels), T >= 8 (AVX-512 packed token tiles, odd and even tile counts), cols not
//    multiples of 32 or of the vector widths, row ranges not multiples of the row tiles, token
//    chunking (wide cols) and thread splits; MatMulBatch and MatMulRowRange give the same bits.
//  - The scalar twin against double arithmetic on the same quantized operands: its only error is
//    the f32 combination (one rounding for d_x * d_w, one per fma): gamma_{G+1} * sum |terms|
//    over the G blocks.
//  - The int8 path against the exact f32 path: x moves by at most d_x / 2 per element (plus the
//    rounding of x / d), so |y_int8 - y_exact| <= sum_b (d_x,b / 2 + slack) * sum_{c in b} |W_rc|
//    plus the rounding bounds of both paths.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/thread_pool.h"
#include "float_test_util.h"
#include "ops/int8_dot.h"
#include "ops/isa.h"
#include "ops/kernels_internal.h"
#include "ops/matmul.h"
#include "ops/quant.h"
#include "ops/row_tiles.h"
#include "quant_weight.h"
#include "util/dtype.h"

namespace dsv3::ops {
namespace {

using testing::BitwiseEqual;
using testing::GammaBound;
using testing::RandomFloats;

constexpr int64_t kB = kInt8Block;

// Index and values of the first differing element, for failure messages.
std::string FirstDifference(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], 4) != 0)
      return "i=" + std::to_string(i) + " " + std::to_string(a[i]) + " vs " + std::to_string(b[i]);
  }
  return "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
}

QuantWeight MakeQuantWeight(std::mt19937& rng, DType dtype, int64_t rows, int64_t cols) {
  QuantWeight w;
  w.dtype = dtype;
  w.rows = rows;
  w.cols = cols;
  std::vector<float> source = RandomFloats(rng, rows * cols);
  // An all-zero group (scale 0) in row 1 and the extreme codes (-128 is legal in a q8_0 file even
  // though our quantizer never writes it) are exercised below.
  if (rows > 1) std::fill(source.begin() + cols, source.begin() + cols + std::min(cols, kB), 0.0f);
  w.scale.resize(static_cast<size_t>(rows * w.Groups()));
  if (dtype == DType::kI8) {
    w.bytes.resize(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      QuantizeRowQ8_0(source.data() + r * cols, cols, kQuantGroupSize,
                      reinterpret_cast<int8_t*>(w.bytes.data()) + r * cols,
                      w.scale.data() + r * w.Groups());
    if (rows > 2) w.bytes[2 * cols] = 0x80;  // W[2, 0] = -128
  } else {
    w.bytes.resize(static_cast<size_t>(rows * Q4RowBytes(cols)));
    for (int64_t r = 0; r < rows; ++r)
      QuantizeRowQ4_0(source.data() + r * cols, cols, kQuantGroupSize,
                      w.bytes.data() + r * Q4RowBytes(cols), w.scale.data() + r * w.Groups());
  }
  return w;
}

const DType kQuantDTypes[] = {DType::kI8, DType::kU8};

std::string CaseName(DType dtype, int64_t rows, int64_t cols, int64_t T) {
  return std::string(dtype == DType::kI8 ? "q8_0" : "q4_0") + " rows=" + std::to_string(rows) +
         " cols=" + std::to_string(cols) + " T=" + std::to_string(T);
}

// Activations quantized by the scalar twin: q [T, G * 32], d [T, G], sum [T, G].
struct QuantizedActs {
  int64_t T = 0, cols = 0, groups = 0;
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> sum;
};

QuantizedActs QuantizeScalar(const std::vector<float>& x, int64_t T, int64_t cols) {
  QuantizedActs a;
  a.T = T;
  a.cols = cols;
  a.groups = QuantGroups(cols, kB);
  a.q.resize(static_cast<size_t>(T * a.groups * kB));
  a.d.resize(static_cast<size_t>(T * a.groups));
  a.sum.resize(static_cast<size_t>(T * a.groups));
  for (int64_t t = 0; t < T; ++t)
    scalar::QuantizeActBlocks(x.data() + t * cols, cols, a.q.data() + t * a.groups * kB,
                              a.d.data() + t * a.groups, a.sum.data() + t * a.groups);
  return a;
}

// The scalar twin run directly (quantizer + kernel), the reference of every comparison.
std::vector<float> TwinMatMul(const std::vector<float>& x, int64_t T, const WeightView& w) {
  std::vector<uint8_t> storage(static_cast<size_t>(Int8ActBytes(T, w.cols)) + 64);
  uint8_t* buf = storage.data() + (64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64;
  scalar::QuantizeActsInt8(ActSource{x.data()}, T, w, buf);
  std::vector<float> y(static_cast<size_t>(T * w.rows), NAN);
  scalar::MatMulRowsInt8(buf, T, w, 0, w.rows, y.data());
  return y;
}

KernelContext Int8Context(ThreadPool* pool, Isa isa) {
  KernelContext ctx{pool, isa};
  ctx.int8_dot = true;
  return ctx;
}

// ---- Activation quantizer ----

// Rows of x that hit the edge cases: ties (x / d = k + 0.5), zero blocks, one-hot blocks,
// subnormals, a NaN block, an inf block, values that make x / d round past 127.
std::vector<std::vector<float>> QuantizerEdgeRows(std::mt19937& rng, int64_t cols) {
  std::vector<std::vector<float>> rows;
  rows.push_back(RandomFloats(rng, cols));
  rows.push_back(RandomFloats(rng, cols, -1e-3f, 1e3f));
  std::vector<float> ties(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) ties[c] = (c % kB == 0) ? 127.0f : 0.5f + (c % 7) - 3;
  rows.push_back(ties);
  std::vector<float> sparse(static_cast<size_t>(cols), 0.0f);
  for (int64_t c = 0; c < cols; c += 37) sparse[c] = (c % 2 ? -1.0f : 1.0f) * (1.0f + c);
  rows.push_back(sparse);
  std::vector<float> tiny = RandomFloats(rng, cols, -1e-39f, 1e-39f);  // subnormal d and x
  rows.push_back(tiny);
  std::vector<float> specials = RandomFloats(rng, cols);
  specials[0] = std::numeric_limits<float>::quiet_NaN();
  if (cols > kB) specials[kB] = std::numeric_limits<float>::infinity();
  if (cols > 2 * kB + 1) specials[2 * kB + 1] = -std::numeric_limits<float>::max();
  rows.push_back(specials);
  return rows;
}

TEST(Int8Quantizer, ScalarWithinHalfStep) {
  std::mt19937 rng(21);
  for (int64_t cols : {1, 5, 31, 32, 33, 100, 1000}) {
    const std::vector<float> x = RandomFloats(rng, cols, -3.0f, 3.0f);
    const QuantizedActs a = QuantizeScalar(x, 1, cols);
    for (int64_t c = 0; c < a.groups * kB; ++c) {
      const int64_t b = c / kB;
      if (c >= cols) {
        EXPECT_EQ(a.q[c], 0) << "padding code, cols=" << cols;
        continue;
      }
      const double d = a.d[b];
      EXPECT_LE(std::abs(a.q[c]), 127);
      EXPECT_LE(std::fabs(a.q[c] * d - x[c]), d * (0.5 + 127 * 0x1p-23)) << cols << " c=" << c;
    }
    for (int64_t b = 0; b < a.groups; ++b) {
      int32_t s = 0;
      for (int64_t c = 0; c < kB; ++c) s += a.q[b * kB + c];
      EXPECT_EQ(a.sum[b], s);
    }
  }
}

// Step 1's scale is a power of two (so float(isum) d_x is exact and AVX-512 applies it with
// vscalefps): the smallest one at or above max |x| / 127, at least 2^-126; 0 for a zero block.
TEST(Int8Quantizer, ScaleIsTheSmallestPowerOfTwoAtOrAboveMaxOver127) {
  std::mt19937 rng(22);
  for (const auto& [lo, hi] : {std::pair{-3.0f, 3.0f}, {-1e-3f, 1e3f}, {-1e-30f, 1e-30f}}) {
    const int64_t cols = 1000;
    const std::vector<float> x = RandomFloats(rng, cols, lo, hi);
    const QuantizedActs a = QuantizeScalar(x, 1, cols);
    for (int64_t b = 0; b < a.groups; ++b) {
      double amax = 0.0;
      for (int64_t c = b * kB; c < std::min(cols, (b + 1) * kB); ++c)
        amax = std::max(amax, std::fabs(double{x[c]}));
      const double d = a.d[b];
      int exponent = 0;
      EXPECT_EQ(std::frexp(d, &exponent), 0.5) << "d=" << d << " is not a power of two";
      // amax / 127 rounds to f32 before the power is chosen: within 2^-24 of it.
      EXPECT_GE(d, amax / 127.0 * (1.0 - 0x1p-23)) << "b=" << b;
      EXPECT_LT(d / 2, amax / 127.0) << "b=" << b << ": a smaller power of two would do";
    }
  }
  const std::vector<float> zeros(40, 0.0f);
  EXPECT_EQ(QuantizeScalar(zeros, 1, 40).d[1], 0.0f);
  const std::vector<float> tiny(32, 1e-39f);  // amax / 127 below the smallest normal float
  EXPECT_EQ(QuantizeScalar(tiny, 1, 32).d[0], 0x1p-126f);
}

TEST(Int8Quantizer, EveryIsaMatchesScalarBitwise) {
  std::mt19937 rng(22);
  for (int64_t cols : {1, 7, 16, 17, 31, 32, 33, 65, 100, 259}) {
    for (const std::vector<float>& x : QuantizerEdgeRows(rng, cols)) {
      const QuantizedActs ref = QuantizeScalar(x, 1, cols);
      for (Isa isa : RunnableIsas()) {
        std::vector<int8_t> q(ref.q.size(), 99);
        std::vector<float> d(ref.d.size(), NAN);
        std::vector<int32_t> sum(ref.sum.size(), -1);
        if (isa == Isa::kAvx2)
          avx2::QuantizeActBlocks(x.data(), cols, q.data(), d.data(), sum.data());
        if (isa == Isa::kAvx512)
          avx512::QuantizeActBlocks(x.data(), cols, q.data(), d.data(), sum.data());
        if (isa == Isa::kScalar) continue;
        EXPECT_EQ(q, ref.q) << IsaName(isa) << " cols=" << cols;
        EXPECT_EQ(std::memcmp(d.data(), ref.d.data(), d.size() * 4), 0) << IsaName(isa);
        EXPECT_EQ(sum, ref.sum) << IsaName(isa) << " cols=" << cols;
      }
    }
  }
}

// QuantizeActivations (rows split over the threads) gives each row the scalar twin's blocks.
TEST(Int8Quantizer, QuantizeActivationsIsTheTwinPerRow) {
  std::mt19937 rng(23);
  for (int64_t cols : {7, 33, 259}) {
    std::vector<float> x;
    for (int rep = 0; rep < 7; ++rep)  // 42 rows: split over the threads in grains of 16
      for (const std::vector<float>& row : QuantizerEdgeRows(rng, cols))
        x.insert(x.end(), row.begin(), row.end());
    const int64_t T = static_cast<int64_t>(x.size()) / cols;
    const QuantizedActs ref = QuantizeScalar(x, T, cols);
    for (Isa isa : RunnableIsas()) {
      for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        std::vector<uint8_t> buf(static_cast<size_t>(Int8ActivationsBytes(T, cols)), 0xcd);
        const Int8Activations a =
            QuantizeActivations(Int8Context(&pool, isa), x.data(), T, cols, buf.data());
        EXPECT_EQ(a.cols, cols);
        EXPECT_EQ(std::vector<int8_t>(a.q, a.q + ref.q.size()), ref.q) << IsaName(isa);
        EXPECT_EQ(std::memcmp(a.d, ref.d.data(), ref.d.size() * 4), 0) << IsaName(isa);
        EXPECT_EQ(std::vector<int32_t>(a.sum, a.sum + ref.sum.size()), ref.sum) << IsaName(isa);
      }
    }
  }
}

TEST(Int8Quantizer, NonFiniteBlocksGetZeroCodes) {
  std::vector<float> x(64, 1.0f);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[40] = -std::numeric_limits<float>::infinity();
  const QuantizedActs a = QuantizeScalar(x, 1, 64);
  EXPECT_TRUE(std::isnan(a.d[0]));
  EXPECT_TRUE(std::isinf(a.d[1]));
  for (int64_t c = 0; c < 64; ++c) EXPECT_EQ(a.q[c], 0);
}

// ---- Kernels against the scalar twin ----

// MatMul (int8_dot) on every ISA, with and without a pool, equals the twin bit for bit.
void ExpectEveryIsaMatchesTwin(std::mt19937& rng, DType dtype, int64_t rows, int64_t cols,
                               int64_t T, ThreadPool* pool) {
  const QuantWeight w = MakeQuantWeight(rng, dtype, rows, cols);
  const std::vector<float> x = RandomFloats(rng, T * cols, -2.0f, 2.0f);
  const std::vector<float> ref = TwinMatMul(x, T, w.View());
  for (Isa isa : RunnableIsas()) {
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), pool}) {
      std::vector<float> y(static_cast<size_t>(T * rows), NAN);
      MatMul(Int8Context(p, isa), x.data(), T, w.View(), y.data());
      ASSERT_TRUE(BitwiseEqual(y, ref))
          << IsaName(isa) << (p ? " pool " : " ") << CaseName(dtype, rows, cols, T) << " "
          << FirstDifference(y, ref);
    }
  }
}

TEST(MatMulInt8, GemvSizesEveryIsaMatchesTwin) {
  std::mt19937 rng(31);
  ThreadPool pool(2);
  for (DType dtype : kQuantDTypes)
    for (int64_t rows : {1, 7, 9, 130})
      for (int64_t cols : {1, 5, 31, 32, 33, 100, 257, 1000})
        for (int64_t T : {1, 2, 3, 4, 5, 7})
          ExpectEveryIsaMatchesTwin(rng, dtype, rows, cols, T, &pool);
}

TEST(MatMulInt8, PrefillSizesEveryIsaMatchesTwin) {
  std::mt19937 rng(32);
  ThreadPool pool(2);
  for (DType dtype : kQuantDTypes)
    for (int64_t rows : {1, 6, 67, 200})
      for (int64_t cols : {3, 32, 47, 129, 700})
        for (int64_t T : {8, 15, 16, 17, 31, 32, 33, 40, 49, 64})
          ExpectEveryIsaMatchesTwin(rng, dtype, rows, cols, T, &pool);
}

// Wide rows: token chunks smaller than T (cols 20000: 16 tokens per chunk), and panels too wide
// for the prefill kernel (cols 25000: GEMV at every T).
TEST(MatMulInt8, ChunkedAndWideRowsMatchTwin) {
  std::mt19937 rng(33);
  ThreadPool pool(2);
  ASSERT_LT(Int8ChunkTokens(20000), 40);
  for (DType dtype : kQuantDTypes) {
    ExpectEveryIsaMatchesTwin(rng, dtype, 9, 20000, 40, &pool);
    ExpectEveryIsaMatchesTwin(rng, dtype, 5, 25000, 19, &pool);
    // The same chunking inside MatMulRowRange / MatMulBatch's per-thread runner.
    const QuantWeight w = MakeQuantWeight(rng, dtype, 6, 20000);
    const std::vector<float> x = RandomFloats(rng, 37 * w.cols);
    const std::vector<float> ref = TwinMatMul(x, 37, w.View());
    for (Isa isa : RunnableIsas()) {
      std::vector<float> y(ref.size(), NAN);
      MatMulRowRange(Int8Context(nullptr, isa), x.data(), 37, w.View(), 0, 4, y.data());
      MatMulRowRange(Int8Context(nullptr, isa), x.data(), 37, w.View(), 4, 6, y.data());
      ASSERT_TRUE(BitwiseEqual(y, ref)) << IsaName(isa) << " " << FirstDifference(y, ref);
    }
  }
}

// Chunked prefill: cols 18432 (576 groups, the widest panel; 16 tokens per chunk) with T = 40,
// and one group more (577: the row kernel at every T).
TEST(MatMulInt8, WidestPanelChunksMatchTwin) {
  std::mt19937 rng(37);
  ThreadPool pool(2);
  ASSERT_LT(Int8ChunkTokens(18432), 40);
  for (DType dtype : kQuantDTypes) {
    ExpectEveryIsaMatchesTwin(rng, dtype, 9, 18432, 40, &pool);
    ExpectEveryIsaMatchesTwin(rng, dtype, 9, 18464, 19, &pool);
  }
}

// The largest partial sums the kernels can meet: every activation code at +-127 (a block of
// equal |x|) against the extreme weight codes (q8_0 -128 / 127, q4_0 nibbles 0 / 15, all of one
// sign per row, then alternating), where the AVX2 q4_0 prefill's int16 sum of a block reaches
// 8 * 2 * 15 * 127 = 30480.
TEST(MatMulInt8, ExtremeCodesMatchTwin) {
  std::mt19937 rng(38);
  for (DType dtype : kQuantDTypes) {
    for (int64_t T : {4, 16, 40}) {
      QuantWeight w = MakeQuantWeight(rng, dtype, 6, 96);
      const int64_t row_bytes = dtype == DType::kI8 ? w.cols : Q4RowBytes(w.cols);
      const uint8_t lo = dtype == DType::kI8 ? 0x80 : 0x00, hi = dtype == DType::kI8 ? 0x7f : 0xff;
      for (int64_t r = 0; r < w.rows; ++r)
        for (int64_t i = 0; i < row_bytes; ++i)
          w.bytes[r * row_bytes + i] = r < 2 ? (r == 0 ? lo : hi) : ((i + r) % 2 ? lo : hi);
      std::vector<float> x(static_cast<size_t>(T * w.cols));
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < w.cols; ++c)
          x[t * w.cols + c] = (t % 3 == 0 ? 1.5f : t % 3 == 1 ? -1.5f : ((c % 2) ? 1.5f : -1.5f));
      const std::vector<float> ref = TwinMatMul(x, T, w.View());
      for (Isa isa : RunnableIsas()) {
        std::vector<float> y(ref.size(), NAN);
        MatMul(Int8Context(nullptr, isa), x.data(), T, w.View(), y.data());
        ASSERT_TRUE(BitwiseEqual(y, ref))
            << IsaName(isa) << " " << CaseName(dtype, w.rows, w.cols, T) << " "
            << FirstDifference(y, ref);
      }
    }
  }
}

// Row ranges that start and end off the row tiles give the bits of the full product.
TEST(MatMulInt8, RowRangesMatchTwin) {
  std::mt19937 rng(34);
  for (DType dtype : kQuantDTypes) {
    for (int64_t T : {1, 3, 20}) {
      const QuantWeight w = MakeQuantWeight(rng, dtype, 45, 77);
      const std::vector<float> x = RandomFloats(rng, T * w.cols);
      const std::vector<float> ref = TwinMatMul(x, T, w.View());
      for (Isa isa : RunnableIsas()) {
        std::vector<float> y(ref.size(), NAN);
        for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, 3}, {3, 14}, {14, 15}, {15, 45}})
          MatMulRowRange(Int8Context(nullptr, isa), x.data(), T, w.View(), lo, hi, y.data());
        ASSERT_TRUE(BitwiseEqual(y, ref)) << IsaName(isa) << " " << CaseName(dtype, 45, 77, T);
      }
    }
  }
}

// A batch of jobs (shared x, different weights, mixed with a non-quantized job) equals MatMul of
// each job, for any thread count.
TEST(MatMulInt8, BatchMatchesMatMul) {
  std::mt19937 rng(35);
  const QuantWeight a = MakeQuantWeight(rng, DType::kI8, 200, 130);
  const QuantWeight b = MakeQuantWeight(rng, DType::kU8, 70, 130);
  const QuantWeight c = MakeQuantWeight(rng, DType::kI8, 130, 75);
  std::vector<float> f32_bytes_storage = RandomFloats(rng, 64 * 130);
  WeightView f32;
  f32.dtype = DType::kF32;
  f32.rows = 64;
  f32.cols = 130;
  f32.data = f32_bytes_storage.data();
  // A BF16 job of 200 rows (4 chunks of 64: cut into several calls by the balanced split).
  std::vector<uint16_t> bf16_storage(200 * 130);
  for (uint16_t& h : bf16_storage) h = static_cast<uint16_t>(0x3c00 + rng() % 0x0400);
  WeightView bf16 = f32;
  bf16.dtype = DType::kBF16;
  bf16.rows = 200;
  bf16.data = bf16_storage.data();
  for (int64_t T : {1, 5, 24}) {
    const std::vector<float> x = RandomFloats(rng, T * 130);
    const std::vector<float> x2 = RandomFloats(rng, T * 75);
    const WeightView views[5] = {a.View(), b.View(), c.View(), f32, bf16};
    const float* xs[5] = {x.data(), x.data(), x2.data(), x.data(), x.data()};
    for (Isa isa : RunnableIsas()) {
      for (int threads : {1, 2, 3}) {
        ThreadPool pool(threads);
        const KernelContext ctx = Int8Context(&pool, isa);
        std::vector<std::vector<float>> ref(5), out(5);
        MatMulJob jobs[5];
        for (int j = 0; j < 5; ++j) {
          ref[j].assign(static_cast<size_t>(T * views[j].rows), NAN);
          out[j].assign(static_cast<size_t>(T * views[j].rows), NAN);
          MatMul(ctx, xs[j], T, views[j], ref[j].data());
          jobs[j] = {xs[j], T, &views[j], out[j].data()};
        }
        MatMulBatch(ctx, jobs, 5);
        for (int j = 0; j < 5; ++j)
          ASSERT_TRUE(BitwiseEqual(out[j], ref[j]))
              << IsaName(isa) << " threads=" << threads << " T=" << T << " job " << j;
        // The same batch without its int8 jobs: the exact / bf16 path alone (balanced at T < 8).
        for (int j = 3; j < 5; ++j) std::fill(out[j].begin(), out[j].end(), NAN);
        MatMulBatch(ctx, jobs + 3, 2);
        for (int j = 3; j < 5; ++j)
          ASSERT_TRUE(BitwiseEqual(out[j], ref[j]))
              << IsaName(isa) << " threads=" << threads << " T=" << T << " job " << j;
      }
    }
  }
}

// A batch of many jobs with packed f32 / bf16-dot products among them (T >= 8: they do not cut
// freely, so whole jobs are the units the threads take, and steal) equals MatMul of each job, with
// the exact and the bf16-dot path, for any thread count: every job computed once, into its own y.
TEST(MatMulInt8, ManyJobsBatchMatchesMatMul) {
  std::mt19937 rng(37);
  constexpr int kJobs = 29;
  std::vector<std::vector<uint16_t>> bf16_storage(kJobs);
  std::vector<std::vector<float>> f32_storage(kJobs);
  const QuantWeight q = MakeQuantWeight(rng, DType::kU8, 90, 96);
  std::vector<WeightView> views(kJobs);
  for (int j = 0; j < kJobs; ++j) {
    WeightView& v = views[j];
    v.rows = 20 + 7 * j;  // up to 216: some jobs span several 64-row chunks
    v.cols = 96;
    if (j % 7 == 3) {
      v = q.View();  // an int8 job among them
    } else if (j % 2 == 0) {
      f32_storage[j] = RandomFloats(rng, v.rows * v.cols);
      v.dtype = DType::kF32;
      v.data = f32_storage[j].data();
    } else {
      bf16_storage[j].resize(static_cast<size_t>(v.rows * v.cols));
      for (uint16_t& h : bf16_storage[j]) h = static_cast<uint16_t>(0x3c00 + rng() % 0x0400);
      v.dtype = DType::kBF16;
      v.data = bf16_storage[j].data();
    }
  }
  const int64_t T = 24;
  const std::vector<float> x = RandomFloats(rng, T * 96);
  for (Isa isa : RunnableIsas()) {
    for (bool bf16_dot : {false, true}) {
      for (int threads : {2, 3}) {
        ThreadPool pool(threads);
        KernelContext ctx = Int8Context(&pool, isa);
        ctx.bf16_dot = bf16_dot;
        std::vector<std::vector<float>> ref(kJobs), out(kJobs);
        std::vector<MatMulJob> jobs(kJobs);
        for (int j = 0; j < kJobs; ++j) {
          ref[j].assign(static_cast<size_t>(T * views[j].rows), NAN);
          out[j].assign(static_cast<size_t>(T * views[j].rows), NAN);
          MatMul(ctx, x.data(), T, views[j], ref[j].data());
          jobs[j] = {x.data(), T, &views[j], out[j].data()};
        }
        MatMulBatch(ctx, jobs.data(), kJobs);
        for (int j = 0; j < kJobs; ++j)
          ASSERT_TRUE(BitwiseEqual(out[j], ref[j]))
              << IsaName(isa) << " bf16_dot=" << bf16_dot << " threads=" << threads << " job " << j;
      }
    }
  }
}

// Jobs whose x rows are picked by x_rows (the MoE layer's experts): the int8 path reads them in
// place as it quantizes, other paths gather them; either way the result is that of the rows
// copied out. GEMV and prefill sizes, and a T past one activation chunk (18432 columns: chunks of
// 16 tokens), with repeated and out-of-order rows. The q8_0 job's 130 rows are 3 row chunks of the
// batch, so its units (row chunks of each token chunk) span both kinds of cut.
TEST(MatMulInt8, BatchRowsOfXMatchCopiedRows) {
  std::mt19937 rng(36);
  for (int64_t cols : {130, 18432}) {
    const QuantWeight a = MakeQuantWeight(rng, DType::kI8, 130, cols);
    const QuantWeight b = MakeQuantWeight(rng, DType::kU8, 24, cols);
    std::vector<float> f32_storage = RandomFloats(rng, 16 * cols);
    WeightView f32;
    f32.dtype = DType::kF32;
    f32.rows = 16;
    f32.cols = cols;
    f32.data = f32_storage.data();
    const WeightView views[3] = {a.View(), b.View(), f32};
    const int64_t source_rows = 50;
    const std::vector<float> x = RandomFloats(rng, source_rows * cols);
    for (int64_t T : {int64_t{3}, int64_t{40}}) {
      std::vector<int32_t> rows(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) rows[t] = static_cast<int32_t>((t * 17 + 5) % source_rows);
      rows[T - 1] = rows[0];  // a token twice
      std::vector<float> copied(static_cast<size_t>(T * cols));
      for (int64_t t = 0; t < T; ++t)
        std::copy(x.begin() + rows[t] * cols, x.begin() + (rows[t] + 1) * cols,
                  copied.begin() + t * cols);
      for (Isa isa : RunnableIsas()) {
        for (int threads : {1, 2}) {
          ThreadPool pool(threads);
          const KernelContext ctx = Int8Context(&pool, isa);
          std::vector<std::vector<float>> ref(3), out(3);
          MatMulJob jobs[3];
          for (int j = 0; j < 3; ++j) {
            ref[j].assign(static_cast<size_t>(T * views[j].rows), NAN);
            out[j].assign(static_cast<size_t>(T * views[j].rows), NAN);
            MatMul(ctx, copied.data(), T, views[j], ref[j].data());
            jobs[j] = {x.data(), T, &views[j], out[j].data(), rows.data()};
          }
          MatMulBatch(ctx, jobs, 3);
          for (int j = 0; j < 3; ++j)
            ASSERT_TRUE(BitwiseEqual(out[j], ref[j]))
                << IsaName(isa) << " threads=" << threads << " cols=" << cols << " T=" << T
                << " job " << j;
        }
      }
    }
  }
}

// Jobs given their x pre-quantized (QuantizeActivations, as the MoE layer quantizes its tokens
// once for all experts) equal the jobs quantizing x themselves, bit for bit, on every ISA: GEMV and
// prefill sizes, row-major and tiled weights, rows picked by x_rows (repeated, out of order) or
// all of x, and a T past one activation chunk (18432 columns: chunks of 16 tokens).
TEST(MatMulInt8, PreQuantizedActivationsGiveTheSameBits) {
  std::mt19937 rng(39);
  for (int64_t cols : {130, 2048, 18432}) {
    const int64_t source_rows = 50;
    const std::vector<float> x = RandomFloats(rng, source_rows * cols, -3.0f, 3.0f);
    for (DType dtype : kQuantDTypes) {
      QuantWeight q = MakeQuantWeight(rng, dtype, 37, cols);
      WeightView tiled = q.View();
      TileRows(&tiled, q.bytes.data(), q.scale.data());
      const QuantWeight row_major = MakeQuantWeight(rng, dtype, 37, cols);
      const WeightView views[2] = {row_major.View(), tiled};
      for (int64_t T : {1, 3, 20, 40}) {
        std::vector<int32_t> rows(static_cast<size_t>(T));
        for (int64_t t = 0; t < T; ++t) rows[t] = static_cast<int32_t>((t * 13 + 7) % source_rows);
        rows[T - 1] = rows[0];
        for (Isa isa : RunnableIsas()) {
          for (int threads : {1, 2}) {
            ThreadPool pool(threads);
            const KernelContext ctx = Int8Context(&pool, isa);
            std::vector<uint8_t> buf(static_cast<size_t>(Int8ActivationsBytes(source_rows, cols)));
            const Int8Activations xq =
                QuantizeActivations(ctx, x.data(), source_rows, cols, buf.data());
            for (const WeightView& w : views) {
              for (const int32_t* picked : {static_cast<const int32_t*>(nullptr),
                                            static_cast<const int32_t*>(rows.data())}) {
                const std::string what = std::string(IsaName(isa)) +
                                         " threads=" + std::to_string(threads) +
                                         " tiled=" + std::to_string(w.row_tiles) +
                                         " picked=" + std::to_string(picked != nullptr) + " " +
                                         CaseName(dtype, w.rows, cols, T);
                std::vector<float> ref(static_cast<size_t>(T * w.rows), NAN), out = ref;
                MatMulJob plain{x.data(), T, &w, ref.data(), picked};
                MatMulJob pre = plain;
                pre.y = out.data();
                pre.xq = &xq;
                MatMulBatch(ctx, &plain, 1);
                MatMulBatch(ctx, &pre, 1);
                ASSERT_TRUE(BitwiseEqual(out, ref)) << what << " " << FirstDifference(out, ref);
              }
            }
          }
        }
      }
    }
  }
}

// ---- Accuracy ----

TEST(MatMulInt8, TwinMatchesDoubleOnQuantizedOperands) {
  std::mt19937 rng(36);
  for (DType dtype : kQuantDTypes) {
    for (int64_t cols : {1, 33, 257, 1000}) {
      const int64_t rows = 9, T = 3;
      const QuantWeight w = MakeQuantWeight(rng, dtype, rows, cols);
      const std::vector<float> x = RandomFloats(rng, T * cols);
      const QuantizedActs a = QuantizeScalar(x, T, cols);
      const std::vector<float> y = TwinMatMul(x, T, w.View());
      const double gamma = GammaBound(static_cast<double>(a.groups) + 1);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t r = 0; r < rows; ++r) {
          double exact = 0, abs_sum = 0;
          for (int64_t b = 0; b < a.groups; ++b) {
            int64_t isum = 0;
            for (int64_t c = b * kB; c < std::min(cols, (b + 1) * kB); ++c)
              isum += a.q[t * a.groups * kB + c] * w.Code(r, c);
            const double term =
                static_cast<double>(isum) * a.d[t * a.groups + b] * w.Scale(r, b * kB);
            exact += term;
            abs_sum += std::fabs(term);
          }
          ASSERT_LE(std::fabs(y[t * rows + r] - exact), gamma * abs_sum)
              << CaseName(dtype, rows, cols, T) << " t=" << t << " r=" << r;
        }
      }
    }
  }
}

TEST(MatMulInt8, WithinActivationQuantisationOfExactPath) {
  std::mt19937 rng(37);
  for (DType dtype : kQuantDTypes) {
    for (int64_t cols : {5, 33, 257, 1000}) {
      for (int64_t T : {1, 20}) {
        const int64_t rows = 11;
        const QuantWeight w = MakeQuantWeight(rng, dtype, rows, cols);
        const std::vector<float> x = RandomFloats(rng, T * cols, -4.0f, 4.0f);
        const QuantizedActs a = QuantizeScalar(x, T, cols);
        std::vector<float> exact_path(static_cast<size_t>(T * rows));
        MatMul(KernelContext{nullptr, Isa::kScalar}, x.data(), T, w.View(), exact_path.data());
        for (Isa isa : RunnableIsas()) {
          std::vector<float> y(static_cast<size_t>(T * rows));
          MatMul(Int8Context(nullptr, isa), x.data(), T, w.View(), y.data());
          for (int64_t t = 0; t < T; ++t) {
            for (int64_t r = 0; r < rows; ++r) {
              double quant_bound = 0, xw_abs = 0, int8_abs = 0;
              for (int64_t c = 0; c < cols; ++c) {
                const double d = a.d[t * a.groups + c / kB];
                const double xc = x[t * cols + c];
                // |x - q d| <= d / 2, plus the rounding of x / d (relative 2^-24 of <= 127).
                quant_bound += (d * (0.5 + 127 * 0x1p-23)) * std::fabs(w.At(r, c));
                xw_abs += std::fabs(xc * w.At(r, c));
                int8_abs += std::fabs(a.q[t * a.groups * kB + c] * d * w.At(r, c));
              }
              const double bound = quant_bound +
                                   GammaBound(static_cast<double>(cols) + 3) * xw_abs +
                                   GammaBound(static_cast<double>(a.groups) + 1) * int8_abs;
              ASSERT_LE(std::fabs(y[t * rows + r] - exact_path[t * rows + r]), bound)
                  << IsaName(isa) << " " << CaseName(dtype, rows, cols, T) << " t=" << t
                  << " r=" << r;
            }
          }
        }
      }
    }
  }
}

TEST(MatMulInt8, NanActivationsPropagate) {
  std::mt19937 rng(38);
  const QuantWeight w = MakeQuantWeight(rng, DType::kI8, 10, 70);
  std::vector<float> x = RandomFloats(rng, 2 * 70);
  x[70 + 40] = std::numeric_limits<float>::quiet_NaN();  // token 1, block 1
  for (Isa isa : RunnableIsas()) {
    std::vector<float> y(20);
    MatMul(Int8Context(nullptr, isa), x.data(), 2, w.View(), y.data());
    for (int64_t r = 0; r < 10; ++r) {
      EXPECT_FALSE(std::isnan(y[r])) << IsaName(isa);
      EXPECT_TRUE(std::isnan(y[10 + r])) << IsaName(isa);
    }
  }
}

// Off by default, other dtypes ignore it, and rows too wide for the buffer take the exact path.
TEST(MatMulInt8, OnlyForGroupQuantizedWeights) {
  EXPECT_FALSE(KernelContext{}.int8_dot);
  std::mt19937 rng(39);
  const QuantWeight wide = MakeQuantWeight(rng, DType::kU8, 3, 27000);
  EXPECT_EQ(Int8ChunkTokens(27000), 0);
  const std::vector<float> x = RandomFloats(rng, 27000);
  for (Isa isa : RunnableIsas()) {
    EXPECT_FALSE(UsesInt8Dot(Int8Context(nullptr, isa), wide.View()));
    std::vector<float> y(3), y_exact(3);
    MatMul(Int8Context(nullptr, isa), x.data(), 1, wide.View(), y.data());
    MatMul(KernelContext{nullptr, isa}, x.data(), 1, wide.View(), y_exact.data());
    EXPECT_TRUE(BitwiseEqual(y, y_exact)) << IsaName(isa);
  }
}

}  // namespace
}  // namespace dsv3::ops
