// VecMatInt8 (ops/int8_columns.h): y = x W on int8 activations from W's column layout.
//
// What is checked:
//  - LayOutInt8Columns keeps every code and scale: read back through the layout's definition
//    (the header's byte formula, written out here again), from row-major and from tiled weights,
//    for a range of rows that does not start at row 0.
//  - Every ISA's kernel gives the scalar twin's bits (the same integer block dots and f32 steps),
//    for n a multiple of 32 and not (a partial last block), m from 32 to 512, and with NaN in x.
//  - The scalar twin against the exact product in double on the same weights: its error is the
//    activation's quantisation, each a_g[i] = x[i] s[i, g] off by at most d_a / 2 of its block
//    (plus 2^-24 relative for the f32 product, and for q / d's rounding), times |c[i, j]|, plus
//    one rounding per block's fma: gamma_{blocks} * sum_k |isum_k d_k|.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ops/int8_columns.h"
#include "ops/isa.h"
#include "ops/kernels_internal.h"
#include "ops/quant.h"
#include "ops/row_tiles.h"
#include "quant_weight.h"
#include "util/aligned_vector.h"
#include "util/dtype.h"

namespace dsv3::ops {
namespace {

QuantWeight RandomWeight(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
  QuantWeight w{dtype, rows, cols, {}, {}};
  const int64_t groups = QuantGroups(cols), row_bytes = dtype == DType::kI8 ? cols : cols / 2;
  w.bytes.resize(static_cast<size_t>(rows * row_bytes));
  w.scale.resize(static_cast<size_t>(rows * groups));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    // Rows of different magnitudes, so each group's a_g differs from x's shape.
    const float mag = std::exp2(static_cast<float>(r % 7) - 3.0f);
    for (float& v : row) v = mag * normal(rng);
    if (dtype == DType::kI8)
      QuantizeRowQ8_0(row.data(), cols, kQuantGroupSize,
                      reinterpret_cast<int8_t*>(w.bytes.data()) + r * row_bytes,
                      w.scale.data() + r * groups);
    else
      QuantizeRowQ4_0(row.data(), cols, kQuantGroupSize, w.bytes.data() + r * row_bytes,
                      w.scale.data() + r * groups);
  }
  return w;
}

struct Laid {
  AlignedVector<uint8_t> codes;
  std::vector<float> scale;
  Int8Columns cols;
};

Laid LayOut(const WeightView& v, int64_t row0, int64_t n) {
  Laid l;
  l.codes.resize(static_cast<size_t>(Int8ColumnsBytes(v.dtype, n, v.cols)));
  l.scale.resize(static_cast<size_t>(Int8ColumnsScales(n, v.cols)));
  LayOutInt8Columns(v, row0, n, l.codes.data(), l.scale.data());
  l.cols = {v.dtype, n, v.cols, l.codes.data(), l.scale.data()};
  return l;
}

// The header's layout, read back: the signed code of row i, column j.
int32_t LaidCode(const Int8Columns& c, int64_t i, int64_t j) {
  const int64_t blocks = (c.n + 31) / 32, k = i / 32, ib = i % 32;
  const bool q8 = c.dtype == DType::kI8;
  const uint8_t* block = c.codes + ((j / 32) * blocks + k) * (q8 ? 1024 : 512);
  if (q8) return block[(ib / 4) * 128 + (j % 32) * 4 + ib % 4] - 128;
  const uint8_t byte = block[((ib % 16) / 4) * 128 + (j % 32) * 4 + ib % 4];
  return (ib < 16 ? (byte & 15) : (byte >> 4)) - 8;
}

std::vector<float> VecMat(Isa isa, const Int8Columns& c, const std::vector<float>& x) {
  std::vector<float> y(static_cast<size_t>(c.m), -1.0f);
  VecMatInt8(isa, c, x.data(), y.data());
  return y;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

struct Shape {
  int64_t n, m;
};
constexpr Shape kShapes[] = {{128, 512}, {37, 64}, {1, 32}, {96, 96}, {200, 160}, {512, 32}};

TEST(Int8Columns, LayoutKeepsEveryCodeAndScaleFromEitherRowLayout) {
  std::mt19937 rng(1);
  for (DType dtype : {DType::kI8, DType::kU8}) {
    for (const Shape s : {Shape{37, 64}, Shape{128, 96}}) {
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " n=" + std::to_string(s.n));
      const int64_t row0 = 5;
      QuantWeight w = RandomWeight(dtype, 176, s.m, rng);
      const Laid l = LayOut(w.View(), row0, s.n);
      for (int64_t i = 0; i < s.n; ++i) {
        for (int64_t j = 0; j < s.m; ++j)
          ASSERT_EQ(LaidCode(l.cols, i, j), w.Code(row0 + i, j)) << i << "," << j;
        for (int64_t g = 0; g < s.m / 32; ++g)
          ASSERT_EQ(l.scale[g * s.n + i], w.scale[(row0 + i) * (s.m / 32) + g]);
      }
      // Rows past n hold code 0.
      for (int64_t i = s.n; i < (s.n + 31) / 32 * 32; ++i) ASSERT_EQ(LaidCode(l.cols, i, 3), 0);
      // The same layout from the weight in 16-row tiles (ops/row_tiles.h).
      QuantWeight tiled = w;
      WeightView tv = tiled.View();
      ASSERT_TRUE(CanTileRows(tv));
      TileRows(&tv, tiled.bytes.data(), tiled.scale.data());
      const Laid lt = LayOut(tv, row0, s.n);
      EXPECT_EQ(std::vector<uint8_t>(lt.codes.begin(), lt.codes.end()),
                std::vector<uint8_t>(l.codes.begin(), l.codes.end()));
      EXPECT_EQ(lt.scale, l.scale);
    }
  }
}

TEST(Int8Columns, EveryIsaGivesTheScalarTwinsBits) {
  std::mt19937 rng(2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DType dtype : {DType::kI8, DType::kU8}) {
    for (const Shape s : kShapes) {
      QuantWeight w = RandomWeight(dtype, s.n + 3, s.m, rng);
      const Laid l = LayOut(w.View(), 3, s.n);
      std::vector<float> x(static_cast<size_t>(s.n));
      for (float& v : x) v = normal(rng);
      x[0] = 0.0f;  // a zero, and a block of tiny values
      for (int64_t i = 32; i < std::min<int64_t>(s.n, 64); ++i) x[i] *= 1e-30f;
      const std::vector<float> want = VecMat(Isa::kScalar, l.cols, x);
      std::vector<float> with_nan = x;
      with_nan[s.n - 1] = NAN;
      const std::vector<float> want_nan = VecMat(Isa::kScalar, l.cols, with_nan);
      for (Isa isa : RunnableIsas()) {
        SCOPED_TRACE(std::string(DTypeName(dtype)) + " n=" + std::to_string(s.n) +
                     " m=" + std::to_string(s.m) + " " + std::string(IsaName(isa)));
        EXPECT_TRUE(SameBits(VecMat(isa, l.cols, x), want));
        EXPECT_TRUE(SameBits(VecMat(isa, l.cols, with_nan), want_nan));
      }
    }
  }
}

TEST(Int8Columns, ScalarTwinIsWithinTheActivationsQuantisation) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (DType dtype : {DType::kI8, DType::kU8}) {
    for (const Shape s : kShapes) {
      SCOPED_TRACE(std::string(DTypeName(dtype)) + " n=" + std::to_string(s.n) +
                   " m=" + std::to_string(s.m));
      QuantWeight w = RandomWeight(dtype, s.n, s.m, rng);
      const Laid l = LayOut(w.View(), 0, s.n);
      std::vector<float> x(static_cast<size_t>(s.n));
      for (float& v : x) v = normal(rng);
      const std::vector<float> y = VecMat(Isa::kScalar, l.cols, x);
      const int64_t groups = s.m / 32, blocks = (s.n + 31) / 32;
      double worst = 0.0;  // the largest error as a fraction of its bound
      for (int64_t j = 0; j < s.m; ++j) {
        const int64_t g = j / 32;
        double exact = 0.0, bound = 0.0, terms = 0.0;
        for (int64_t k = 0; k < blocks; ++k) {
          // d_a of block k: the smallest power of two at or above max |a_g[i]| / 127 over the
          // block's rows (ops/int8_dot.h; at most that, should the f32 division round down onto
          // a power of two).
          double amax = 0.0;
          for (int64_t i = 32 * k; i < std::min(s.n, 32 * k + 32); ++i)
            amax = std::max(amax, std::fabs(double{x[i]} * w.scale[i * groups + g]));
          const double d = amax > 0 ? std::exp2(std::ceil(std::log2(amax / 127.0))) : 0.0;
          double block = 0.0, block_abs = 0.0;
          for (int64_t i = 32 * k; i < std::min(s.n, 32 * k + 32); ++i) {
            const double a = double{x[i]} * w.scale[i * groups + g];
            const double c = w.Code(i, j);
            block += a * c;
            block_abs += std::fabs(a * c);
            // d / 2 for the rounding to a code, plus the f32 product and the division's rounding.
            bound += std::fabs(c) * (d / 2 + 0x1p-23 * (std::fabs(a) + 127.0 * d));
          }
          exact += block;
          terms += block_abs + bound;
        }
        bound += 1.01 * blocks * 0x1p-24 * terms;  // one rounding per block's fma
        const double err = std::fabs(y[j] - exact);
        ASSERT_LE(err, bound) << "j=" << j << " y=" << y[j] << " exact=" << exact;
        if (bound > 0) worst = std::max(worst, err / bound);
      }
      // The bound is not vacuous: the quantisation shows in the errors (one row alone is exact:
      // its code is +-127).
      if (s.n > 1) {
        EXPECT_GT(worst, 0.01);
      }
    }
  }
}

}  // namespace
}  // namespace dsv3::ops
