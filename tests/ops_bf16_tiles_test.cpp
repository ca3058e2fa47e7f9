// BF16 weights in the bf16-dot kernel's 32-row tiles (ops/bf16_tiles.h): the layout, and every
// reader of a tiled weight against the same weight row-major.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/thread_pool.h"
#include "ops/bf16_tiles.h"
#include "ops/isa.h"
#include "ops/matmul.h"
#include "util/dtype.h"

namespace dsv3::ops {
namespace {

// A random BF16 weight [rows, cols], row-major, and x [T, cols].
struct Case {
  int64_t rows, cols;
  std::vector<uint16_t> bits;

  Case(std::mt19937& rng, int64_t r, int64_t c) : rows(r), cols(c) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    bits.resize(static_cast<size_t>(rows * cols));
    for (uint16_t& b : bits) b = F32ToBf16(normal(rng));
  }
  WeightView View(const std::vector<uint16_t>& data) const {
    WeightView v;
    v.dtype = DType::kBF16;
    v.rows = rows;
    v.cols = cols;
    v.data = data.data();
    return v;
  }
};

std::vector<float> RandomX(std::mt19937& rng, int64_t T, int64_t cols) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * cols));
  for (float& v : x) v = normal(rng);
  return x;
}

// The tiled weight: the same bits, tiled in place in a copy.
std::pair<std::vector<uint16_t>, WeightView> Tiled(const Case& c) {
  std::pair<std::vector<uint16_t>, WeightView> out{c.bits, {}};
  out.second = c.View(out.first);
  EXPECT_TRUE(CanTileBf16Rows(out.second));
  TileBf16Rows(&out.second, out.first.data());
  return out;
}

// 2 tiles and a 16-row tail; 70 columns (not a multiple of 32: a partial pair block), 518.
TEST(Bf16Tiles, LayoutAndRowCopies) {
  std::mt19937 rng(1);
  for (int64_t cols : {2, 70, 518}) {
    const Case c(rng, 80, cols);
    auto [tiled, w] = Tiled(c);
    EXPECT_EQ(w.row_tiles, kBf16Tile);
    EXPECT_EQ(Bf16TiledRows(w), 64);
    // Pair j of row 32 t + i at dword j * 32 + i of tile t; the tail where it was.
    for (int64_t r = 0; r < 64; ++r)
      for (int64_t j = 0; j < cols / 2; ++j) {
        uint32_t pair, want;
        std::memcpy(&pair, Bf16TilePairs(w, r / 32, j) + r % 32, 4);
        std::memcpy(&want, &c.bits[static_cast<size_t>(r * cols + 2 * j)], 4);
        ASSERT_EQ(pair, want) << r << " " << j;
      }
    EXPECT_EQ(0, std::memcmp(tiled.data() + 64 * cols, c.bits.data() + 64 * cols,
                             static_cast<size_t>(16 * cols) * 2));
    std::vector<uint16_t> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < c.rows; ++r) {
      CopyBf16Row(w, r, 1, cols - 1, row.data());
      ASSERT_EQ(0, std::memcmp(row.data(), &c.bits[static_cast<size_t>(r * cols + 1)],
                               static_cast<size_t>(cols - 1) * 2))
          << r;
    }
  }
  WeightView odd = Case(rng, 64, 7).View({});
  odd.data = &odd;                     // not read
  EXPECT_FALSE(CanTileBf16Rows(odd));  // an odd column count has no whole pairs
}

// Every ISA's exact path on the tiled weight against the same path on the row-major one: the
// scalar reference (which other ISAs take for tiles) bitwise, as it reads the same values in the
// same order; AVX-512's tiled kernel sums even and odd columns apart, so against an fp64 sum
// within the f32 summation bound gamma_n * sum |w x| (n = cols terms, u = 2^-24). Row ranges
// that start or end inside a 16-row half take the reference for those rows. DequantizeRow reads
// the tiled rows bitwise as the row-major ones.
TEST(Bf16Tiles, ExactPathsMatchTheRowMajorWeight) {
  std::mt19937 rng(2);
  ThreadPool pool(2);
  for (int64_t cols : {70, 518}) {
    const Case c(rng, 80, cols);
    const WeightView plain = c.View(c.bits);
    auto [tiled, w] = Tiled(c);
    for (int64_t T : {1, 2, 3, 4, 7, 9}) {
      const std::vector<float> x = RandomX(rng, T, cols);
      for (Isa isa : RunnableIsas()) {
        KernelContext ctx{&pool, isa};
        std::vector<float> got(static_cast<size_t>(T * c.rows)), want(got.size());
        MatMul(ctx, x.data(), T, w, got.data());
        KernelContext ref{nullptr, Isa::kScalar};
        MatMul(ref, x.data(), T, plain, want.data());
        if (isa != Isa::kAvx512) {
          EXPECT_EQ(got, want) << IsaName(isa) << " T=" << T;
          continue;
        }
        // Rows [8, 72): a range cut inside halves at both ends.
        std::vector<float> part(got.size(), 0.0f);
        MatMulRowRange(ctx, x.data(), T, w, 8, 72, part.data());
        for (int64_t t = 0; t < T; ++t)
          for (int64_t r = 0; r < c.rows; ++r) {
            double sum = 0, mag = 0;
            for (int64_t k = 0; k < cols; ++k) {
              const double p = static_cast<double>(Bf16ToF32(c.bits[r * cols + k])) *
                               x[static_cast<size_t>(t * cols + k)];
              sum += p;
              mag += std::fabs(p);
            }
            const double bound = cols * std::ldexp(1.0, -24) * mag * 1.01 + 1e-30;
            const size_t i = static_cast<size_t>(t * c.rows + r);
            ASSERT_NEAR(got[i], sum, bound) << "T=" << T << " t=" << t << " r=" << r;
            if (r >= 8 && r < 72) {
              ASSERT_NEAR(part[i], sum, bound) << "range, r=" << r;
            }
          }
      }
    }
    std::vector<float> a(static_cast<size_t>(cols)), b(a.size());
    for (Isa isa : RunnableIsas())
      for (int64_t r = 0; r < c.rows; ++r) {
        DequantizeRow(isa, w, r, a.data());
        DequantizeRow(isa, plain, r, b.data());
        ASSERT_EQ(a, b) << IsaName(isa) << " row " << r;
      }
  }
}

// The bf16-dot path (AVX-512 BF16, T >= 8) multiplies the tiles in place: the bits of the
// row-major weight's packed panels, on 1 and 2 threads, for the whole weight and for row ranges
// that start on a tile; a range starting inside a tile takes the exact path instead.
TEST(Bf16Tiles, Bf16DotReadsTilesInPlace) {
  if (!CpuSupports(Isa::kAvx512)) GTEST_SKIP() << "the bf16-dot path runs on AVX-512 BF16";
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (int64_t cols : {70, 518, 1100}) {
    const Case c(rng, 80, cols);
    const WeightView plain = c.View(c.bits);
    auto [tiled, w] = Tiled(c);
    for (int64_t T : {8, 13, 64, 200}) {
      const std::vector<float> x = RandomX(rng, T, cols);
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        KernelContext ctx{p, Isa::kAvx512};
        ctx.bf16_dot = true;
        std::vector<float> got(static_cast<size_t>(T * c.rows)), want(got.size());
        MatMul(ctx, x.data(), T, w, got.data());
        MatMul(ctx, x.data(), T, plain, want.data());
        ASSERT_EQ(got, want) << "cols=" << cols << " T=" << T;
        std::vector<float> part(got.size(), 0.0f), part_want(got.size(), 0.0f);
        MatMulRowRange(ctx, x.data(), T, w, 32, 80, part.data());
        MatMulRowRange(ctx, x.data(), T, plain, 32, 80, part_want.data());
        ASSERT_EQ(part, part_want) << "rows [32, 80), cols=" << cols << " T=" << T;
      }
      // Rows [16, 48): not on a tile, so the exact path (which differs from bf16-dot's bits).
      KernelContext ctx{nullptr, Isa::kAvx512};
      KernelContext exact = ctx;
      ctx.bf16_dot = true;
      std::vector<float> got(static_cast<size_t>(T * c.rows), 0.0f), want(got.size(), 0.0f);
      MatMulRowRange(ctx, x.data(), T, w, 16, 48, got.data());
      MatMulRowRange(exact, x.data(), T, w, 16, 48, want.data());
      ASSERT_EQ(got, want) << "cols=" << cols << " T=" << T;
    }
  }
}

}  // namespace
}  // namespace dsv3::ops
