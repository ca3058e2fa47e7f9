// The tiled q8_0 / q4_0 layout (ops/row_tiles.h): the accessors read back what was stored, and
// every product over a tiled weight equals the same product over the row-major weight, bit for
// bit, on every ISA (the AVX-512 and AVX2 int8 kernels read tiles natively; everything else takes
// the scalar reference, so the f32 path is compared with the scalar kernel on the row-major copy).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/thread_pool.h"
#include "float_test_util.h"
#include "ops/isa.h"
#include "ops/matmul.h"
#include "ops/quant.h"
#include "ops/row_tiles.h"
#include "ops/vector_ops.h"

namespace dsv3::ops {
namespace {

using testing::RandomFloats;

// A quantized weight and a tiled copy of it. The quantizers round scales to f16 values, so the
// tiles hold them as f16 (f16_tile_scales); with f16_scales false one scale of the first tile is
// moved off the f16 grid and the tiles keep f32 scales.
struct Pair {
  std::vector<uint8_t> bytes, tiled_bytes;
  std::vector<float> scale, tiled_scale;
  WeightView rows, tiles;
};

Pair MakePair(std::mt19937& rng, DType dtype, int64_t rows, int64_t cols, bool f16_scales = true) {
  Pair p;
  const int64_t groups = QuantGroups(cols);
  const int64_t row_bytes = dtype == DType::kI8 ? cols : Q4RowBytes(cols);
  const std::vector<float> source = RandomFloats(rng, rows * cols);
  p.bytes.resize(static_cast<size_t>(rows * row_bytes));
  p.scale.resize(static_cast<size_t>(rows * groups));
  for (int64_t r = 0; r < rows; ++r) {
    if (dtype == DType::kI8)
      QuantizeRowQ8_0(source.data() + r * cols, cols, 32,
                      reinterpret_cast<int8_t*>(p.bytes.data()) + r * row_bytes,
                      p.scale.data() + r * groups);
    else
      QuantizeRowQ4_0(source.data() + r * cols, cols, 32, p.bytes.data() + r * row_bytes,
                      p.scale.data() + r * groups);
  }
  // The extreme codes: q8_0 -128 (legal in a file), q4_0 nibbles 0 and 15.
  p.bytes[0] = dtype == DType::kI8 ? 0x80 : 0xf0;
  if (!f16_scales) p.scale[groups + 1 < rows * groups ? groups + 1 : 0] *= 1 + 0x1p-20f;
  p.tiled_bytes = p.bytes;
  p.tiled_scale = p.scale;
  p.rows = WeightView{dtype, rows, cols, p.bytes.data(), p.scale.data()};
  p.tiles = WeightView{dtype, rows, cols, p.tiled_bytes.data(), p.tiled_scale.data()};
  EXPECT_TRUE(CanTileRows(p.tiles));
  TileRows(&p.tiles, p.tiled_bytes.data(), p.tiled_scale.data());
  EXPECT_EQ(p.tiles.f16_tile_scales, f16_scales);
  return p;
}

const DType kDTypes[] = {DType::kI8, DType::kU8};

std::string Name(DType dtype, int64_t rows, int64_t cols, int64_t T) {
  return std::string(dtype == DType::kI8 ? "q8_0" : "q4_0") + " rows=" + std::to_string(rows) +
         " cols=" + std::to_string(cols) + " T=" + std::to_string(T);
}

TEST(RowTiles, AccessorsReadBackTheStoredRows) {
  std::mt19937 rng(1);
  for (DType dtype : kDTypes) {
    for (int64_t rows : {16, 33, 50}) {
      for (int64_t cols : {32, 96, 544}) {
        const Pair p = MakePair(rng, dtype, rows, cols, /*f16_scales=*/cols != 96);
        EXPECT_EQ(p.tiles.row_tiles, kRowTile);
        const int64_t row_bytes = StoredRowBytes(p.rows);
        // The bytes did move (a tile is not its rows), and each row reads back as stored.
        EXPECT_NE(std::memcmp(p.bytes.data(), p.tiled_bytes.data(), 16 * row_bytes), 0);
        std::vector<uint8_t> row(static_cast<size_t>(row_bytes));
        for (int64_t r = 0; r < rows; ++r) {
          CopyRowBytes(p.tiles, r, 0, row_bytes, row.data());
          ASSERT_EQ(std::memcmp(row.data(), p.bytes.data() + r * row_bytes, row_bytes), 0)
              << Name(dtype, rows, cols, 0) << " r=" << r;
          CopyRowBytes(p.tiles, r, 5, 3, row.data());  // an unaligned piece
          ASSERT_EQ(std::memcmp(row.data(), p.bytes.data() + r * row_bytes + 5, 3), 0);
          for (int64_t g = 0; g < QuantGroups(cols); ++g)
            ASSERT_EQ(GroupScale(p.tiles, r, g), p.scale[r * QuantGroups(cols) + g]);
        }
      }
    }
  }
}

// Scales held as f16 when every tiled one is exactly an f16 value (normal or subnormal, either
// sign, zero); one that is not (between two f16 values, past 65504, below 2^-24, an f32
// subnormal, inf, NaN) keeps the tiles' scales f32. The row-major rows past the last tile do not
// count. Either way every scale reads back as stored. The tiles' scales are checked in runs of a
// tile's (the inexact one lies in the second), with a short path for runs of zeros and normal
// f16 values only: taken with the subnormals left out, and not with them.
TEST(RowTiles, ScalesExactInF16AreHeldAsF16) {
  const float normal[] = {0.0f, -0.0f, 0x1p-14f, 65504.0f, -1.5f, 0.1875f, 3.0f, -0x1.ffcp-3f};
  const float subnormal[] = {0x1p-24f, -0x1.8p-20f, 0x1.ff8p-15f, 0x1p-15f, -0x1p-24f};
  const float inexact[] = {1.0f / 3,   65520.0f, 0x1p-25f,  0x1.002p0f, NAN,
                           0x1.8p-24f, 65536.0f, -INFINITY, 0x1p-130f};
  for (bool subnormals : {false, true}) {
    std::vector<float> exact(std::begin(normal), std::end(normal));
    if (subnormals) exact.insert(exact.end(), std::begin(subnormal), std::end(subnormal));
    for (int k = -1; k < static_cast<int>(std::size(inexact)); ++k) {
      std::vector<uint8_t> bytes(40 * 64, 1);
      std::vector<float> scale(40 * 2);
      for (size_t i = 0; i < scale.size(); ++i) scale[i] = exact[i % exact.size()];
      scale[40 * 2 - 1] = 1.0f / 3;  // row 39: past the last tile
      if (k >= 0) scale[37] = inexact[k];
      const std::vector<float> stored = scale;
      WeightView w{DType::kI8, 40, 64, bytes.data(), scale.data()};
      TileRows(&w, bytes.data(), scale.data());
      EXPECT_EQ(w.f16_tile_scales, k < 0) << "subnormals=" << subnormals << " k=" << k;
      for (int64_t r = 0; r < 40; ++r) {
        for (int64_t g = 0; g < 2; ++g) {
          const float got = GroupScale(w, r, g), want = stored[r * 2 + g];
          ASSERT_EQ(std::memcmp(&got, &want, 4), 0) << "k=" << k << " r=" << r << " g=" << g;
        }
      }
    }
  }
}

TEST(RowTiles, OnlyWholeGroupsOfThirtyTwoAndAWholeTileQualify) {
  std::vector<uint8_t> bytes(64 * 64);
  std::vector<float> scale(64 * 4);
  WeightView w{DType::kI8, 16, 64, bytes.data(), scale.data()};
  EXPECT_TRUE(CanTileRows(w));
  WeightView narrow = w;
  narrow.cols = 40;  // a partial group
  EXPECT_FALSE(CanTileRows(narrow));
  WeightView short_rows = w;
  short_rows.rows = 15;
  EXPECT_FALSE(CanTileRows(short_rows));
  WeightView groups = w;
  groups.group_size = 64;
  EXPECT_FALSE(CanTileRows(groups));
  WeightView bf16 = w;
  bf16.dtype = DType::kBF16;
  EXPECT_FALSE(CanTileRows(bf16));
  WeightView done = w;
  done.row_tiles = kRowTile;
  EXPECT_FALSE(CanTileRows(done));
}

void ExpectBitwise(const std::vector<float>& a, const std::vector<float>& b,
                   const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
}

// The int8 path (the GEMV, the packed prefill tiles, and both for one call: PrefillTokens), whole
// and partial tiles, every ISA: tiled and row-major weights give the same bits.
TEST(RowTiles, Int8ProductsEqualTheRowMajorWeight) {
  std::mt19937 rng(2);
  for (DType dtype : kDTypes) {
    for (int64_t rows : {16, 33, 70}) {
      for (int64_t cols : {32, 96, 544}) {
        const Pair p = MakePair(rng, dtype, rows, cols, /*f16_scales=*/rows != 33);
        // From 16 tokens on a tiled weight's tokens go to the prefill tiles in whole tiles, and a
        // rest of fewer than 12 to the GEMV (17, 40: split; 28: padded; 9: GEMV only); q4_0
        // tiles are read in place up to 4 token tiles, unpacked beyond (80).
        for (int64_t T : {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 28, 40, 80}) {
          const std::vector<float> x = RandomFloats(rng, T * cols);
          for (Isa isa : RunnableIsas()) {
            KernelContext ctx{nullptr, isa};
            ctx.int8_dot = true;
            std::vector<float> want(static_cast<size_t>(T * rows)), got(want.size(), NAN);
            MatMul(ctx, x.data(), T, p.rows, want.data());
            MatMul(ctx, x.data(), T, p.tiles, got.data());
            ExpectBitwise(got, want, std::string(IsaName(isa)) + " " + Name(dtype, rows, cols, T));
            // Row ranges: inside tiles, reaching the row-major tail, on half-tile bounds; rows
            // outside the range are left alone.
            for (auto [lo, hi] :
                 {std::pair<int64_t, int64_t>{5, rows - 1}, {8, rows - 1}, {8, 16}, {16, rows}}) {
              std::vector<float> part(want.size(), NAN);
              MatMulRowRange(ctx, x.data(), T, p.tiles, lo, hi, part.data());
              for (int64_t t = 0; t < T; ++t) {
                for (int64_t r = 0; r < rows; ++r) {
                  if (r >= lo && r < hi)
                    ASSERT_EQ(part[t * rows + r], want[t * rows + r])
                        << IsaName(isa) << " range " << Name(dtype, rows, cols, T) << " r=" << r;
                  else
                    ASSERT_TRUE(std::isnan(part[t * rows + r]))
                        << IsaName(isa) << " wrote outside " << lo << ".." << hi << " r=" << r;
                }
              }
            }
          }
        }
      }
    }
  }
}

// The widest rows a prefill panel holds (576 groups = 18432 columns, DeepSeek-V3's widest) and
// one group more (the GEMV at every T).
TEST(RowTiles, WidestPanelAndBeyondEqualTheRowMajorWeight) {
  std::mt19937 rng(5);
  for (DType dtype : kDTypes) {
    for (int64_t cols : {18432, 18464}) {
      const Pair p = MakePair(rng, dtype, 16, cols);
      for (int64_t T : {17, 40}) {
        const std::vector<float> x = RandomFloats(rng, T * cols);
        for (Isa isa : RunnableIsas()) {
          const KernelContext ctx{nullptr, isa, false, true};
          std::vector<float> want(static_cast<size_t>(T * 16)), got(want.size(), NAN);
          MatMul(ctx, x.data(), T, p.rows, want.data());
          MatMul(ctx, x.data(), T, p.tiles, got.data());
          ExpectBitwise(got, want, std::string(IsaName(isa)) + " " + Name(dtype, 16, cols, T));
        }
      }
    }
  }
}

// A row range is a weight of its own: any rows of a row-major weight (the decompressed prefill
// attention multiplies one head's rows of kv_b_proj), whole tiles or the rows past them of a tiled
// one (the MoE layer's down projections, per range of output rows). Its product is those columns
// of the whole product, bit for bit, with f16 and f32 tile scales.
TEST(RowTiles, Int8RowRangeIsThoseRowsOfTheWeight) {
  std::mt19937 rng(5);
  using Range = std::pair<int64_t, int64_t>;
  for (DType dtype : kDTypes) {
    const int64_t rows = 70, cols = 96;  // 4 tiles, then 6 row-major rows
    for (bool f16_scales : {true, false}) {
      const Pair p = MakePair(rng, dtype, rows, cols, f16_scales);
      EXPECT_TRUE(Int8RowRangeFits(p.rows, 53, 17));
      EXPECT_FALSE(Int8RowRangeFits(p.rows, 53, 18));
      EXPECT_FALSE(Int8RowRangeFits(p.tiles, 8, 16));   // half a tile
      EXPECT_FALSE(Int8RowRangeFits(p.tiles, 16, 24));  // a tile and a half
      EXPECT_FALSE(Int8RowRangeFits(p.tiles, 48, 22));  // a tile and the row-major rows
      // Activations laid out for the whole weight serve a range that keeps its tiling.
      EXPECT_TRUE(Int8RowRangeSharesLayout(p.rows, 53, 17));
      EXPECT_TRUE(Int8RowRangeSharesLayout(p.tiles, 16, 48));
      EXPECT_FALSE(Int8RowRangeSharesLayout(p.tiles, 64, 6));  // row-major rows of a tiled one
      const std::pair<const WeightView*, std::vector<Range>> cases[] = {
          {&p.rows, {{0, 24}, {24, 24}, {53, 17}}},
          {&p.tiles, {{0, 16}, {16, 48}, {48, 16}, {64, 6}, {66, 3}}}};
      for (int64_t T : {3, 40}) {  // the GEMV and the prefill kernels
        const std::vector<float> x = RandomFloats(rng, T * cols);
        for (Isa isa : RunnableIsas()) {
          KernelContext ctx{nullptr, isa};
          ctx.int8_dot = true;
          for (const auto& [w, ranges] : cases) {
            const std::string what = std::string(IsaName(isa)) + " " + Name(dtype, rows, cols, T) +
                                     (w->row_tiles != 0 ? " tiled" : " row-major") +
                                     (f16_scales ? " f16 scales" : " f32 scales");
            std::vector<float> whole(static_cast<size_t>(T * rows));
            MatMul(ctx, x.data(), T, *w, whole.data());
            for (auto [first, n] : ranges) {
              ASSERT_TRUE(Int8RowRangeFits(*w, first, n)) << what << " rows " << first << "+" << n;
              const WeightView range = Int8RowRange(*w, first, n);
              ASSERT_EQ(range.rows, n);
              std::vector<float> part(static_cast<size_t>(T * n));
              MatMul(ctx, x.data(), T, range, part.data());
              for (int64_t t = 0; t < T; ++t)
                for (int64_t r = 0; r < n; ++r)
                  ASSERT_EQ(part[t * n + r], whole[t * rows + first + r])
                      << what << " rows " << first << "+" << n << " t=" << t << " r=" << r;
            }
          }
        }
      }
    }
  }
}

// Split over two threads, alone and in a batch with a row-major job (the two quantize x in
// different layouts: the runner must not reuse one for the other), and with the tokens picked
// by x_rows (the MoE layer's experts), the GEMV's share of them after the tiles'.
TEST(RowTiles, ThreadsAndBatchesEqualTheRowMajorWeight) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (DType dtype : kDTypes) {
    const Pair p = MakePair(rng, dtype, 200, 512);
    // From 32 tokens the threads lay out runs of whole token tiles: a last run with a rest for the
    // GEMV (33, 40) or a padded tile (44, 60), or whole tiles only (80).
    for (int64_t T : {1, 3, 33, 40, 44, 60, 80}) {
      const std::vector<float> x = RandomFloats(rng, T * 512);
      for (Isa isa : RunnableIsas()) {
        KernelContext ctx{&pool, isa};
        ctx.int8_dot = true;
        std::vector<float> want(static_cast<size_t>(T * 200)), got(want.size(), NAN);
        MatMul(KernelContext{nullptr, isa, false, true}, x.data(), T, p.rows, want.data());
        MatMul(ctx, x.data(), T, p.tiles, got.data());
        ExpectBitwise(got, want,
                      std::string(IsaName(isa)) + " threads " + Name(dtype, 200, 512, T));
        std::vector<float> a(want.size(), NAN), b(want.size(), NAN);
        const MatMulJob jobs[2] = {{x.data(), T, &p.tiles, a.data()},
                                   {x.data(), T, &p.rows, b.data()}};
        MatMulBatch(ctx, jobs, 2);
        ExpectBitwise(a, want, std::string(IsaName(isa)) + " batch " + Name(dtype, 200, 512, T));
        ExpectBitwise(b, want, std::string(IsaName(isa)) + " batch row-major");
        // One thread runs both jobs in turn with one runner.
        std::fill(a.begin(), a.end(), NAN);
        std::fill(b.begin(), b.end(), NAN);
        MatMulBatch(KernelContext{nullptr, isa, false, true}, jobs, 2);
        ExpectBitwise(a, want, std::string(IsaName(isa)) + " one-thread batch");
        ExpectBitwise(b, want, std::string(IsaName(isa)) + " one-thread batch row-major");
        // Token t is row T - 1 - t of x.
        std::vector<int32_t> reversed(static_cast<size_t>(T));
        std::vector<float> x_reversed(x.size());
        for (int64_t t = 0; t < T; ++t) {
          reversed[t] = static_cast<int32_t>(T - 1 - t);
          std::copy(x.begin() + (T - 1 - t) * 512, x.begin() + (T - t) * 512,
                    x_reversed.begin() + t * 512);
        }
        MatMul(KernelContext{nullptr, isa, false, true}, x_reversed.data(), T, p.rows, want.data());
        std::vector<float> c(want.size(), NAN);
        MatMulJob picked{x.data(), T, &p.tiles, c.data()};
        picked.x_rows = reversed.data();
        MatMulBatch(ctx, &picked, 1);
        ExpectBitwise(c, want, std::string(IsaName(isa)) + " x_rows " + Name(dtype, 200, 512, T));
      }
    }
  }
}

// Readers without a tiled kernel take the scalar reference: the f32 path, DequantizeRow and
// AccumulateRows on a tiled weight equal the scalar kernels on the row-major one.
TEST(RowTiles, OtherReadersEqualTheScalarReference) {
  std::mt19937 rng(4);
  for (DType dtype : kDTypes) {
    const Pair p = MakePair(rng, dtype, 40, 96, /*f16_scales=*/dtype == DType::kI8);
    for (int64_t T : {1, 5, 40}) {
      const std::vector<float> x = RandomFloats(rng, T * 96);
      std::vector<float> want(static_cast<size_t>(T * 40));
      MatMul(KernelContext{nullptr, Isa::kScalar}, x.data(), T, p.rows, want.data());
      for (Isa isa : RunnableIsas()) {
        std::vector<float> got(want.size(), NAN);
        MatMul(KernelContext{nullptr, isa}, x.data(), T, p.tiles, got.data());
        ExpectBitwise(got, want, std::string(IsaName(isa)) + " f32 " + Name(dtype, 40, 96, T));
      }
    }
    std::vector<float> row_want(96), row_got(96), buf(96);
    const std::vector<float> a = RandomFloats(rng, 20), y0 = RandomFloats(rng, 96);
    for (Isa isa : RunnableIsas()) {
      for (int64_t r : {0, 17, 39}) {
        DequantizeRow(Isa::kScalar, p.rows, r, row_want.data());
        DequantizeRow(isa, p.tiles, r, row_got.data());
        ExpectBitwise(row_got, row_want, std::string(IsaName(isa)) + " DequantizeRow");
      }
      std::vector<float> acc_want = y0, acc_got = y0;
      for (int64_t k = 0; k < 20; ++k) {
        DequantizeRow(Isa::kScalar, p.rows, 10 + k, buf.data());
        Axpy(isa, a[k], buf.data(), 96, acc_want.data());
      }
      AccumulateRows(isa, p.tiles, 10, 20, a.data(), acc_got.data(), buf.data());
      ExpectBitwise(acc_got, acc_want, std::string(IsaName(isa)) + " AccumulateRows");
    }
  }
}

}  // namespace
}  // namespace dsv3::ops
