// VecMatFp8 (ops/fp8_columns.h): y = x W in f32 from an FP8 W's column layout.
//
// What is checked:
//  - LayOutFp8Columns keeps every code and scale: read back through the layout's definition (the
//    header's byte formula, written out here again) for rows that do not start at row 0, with
//    column groups of 256 and a narrower last group, block grids of 16 to 128.
//  - CanLayOutFp8Columns refuses what the kernels cannot take: NaN codes, S = s 2^8 overflowing,
//    blocks or columns not whole vectors, rows not whole block rows, other dtypes.
//  - Every ISA's kernel gives the scalar twin's bits (the same fma chains), for every group width
//    the kernels have a path for (1 to 16 vectors; AVX2 passes of 1 to 4), subnormal, zero and
//    largest codes, and NaN or zeros in x.
//  - The scalar twin against the exact product in double: the fma chains round once per step, so
//    per column |y - exact| <= gamma_{block_rows + blocks} * sum_i |x_i W_ij| (gamma_k = k u /
//    (1 - k u), u = 2^-24); and the bound is not vacuous (a code off by one breaks it).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ops/fp8_columns.h"
#include "ops/isa.h"
#include "util/aligned_vector.h"
#include "util/dtype.h"

namespace dsv3::ops {
namespace {

struct Fp8Weight {
  int64_t rows = 0, cols = 0, block_rows = 0, block_cols = 0;
  std::vector<uint8_t> bytes;
  std::vector<float> scale;  // [ceil(rows / br), ceil(cols / bc)]

  int64_t ScaleCols() const { return (cols + block_cols - 1) / block_cols; }
  WeightView View() const {
    WeightView v;
    v.dtype = DType::kF8E4M3;
    v.rows = rows;
    v.cols = cols;
    v.data = bytes.data();
    v.scale = scale.data();
    v.block_rows = block_rows;
    v.block_cols = block_cols;
    return v;
  }
  float Scale(int64_t i, int64_t j) const {
    return scale[i / block_rows * ScaleCols() + j / block_cols];
  }
  // W[i, j] exactly (an e4m3 value times an f32 is exact in double).
  double At(int64_t i, int64_t j) const {
    return static_cast<double>(Fp8E4M3ToF32(bytes[i * cols + j])) * Scale(i, j);
  }
};

struct Shape {
  int64_t n, m, block_rows, block_cols;
};
// DeepSeek-V3's W_UK; groups of 256 and 16 (AVX-512 one vector, AVX2 a one-vector pass); 13
// vectors in blocks 48 wide; 6 vectors (AVX2 passes of 4 and 2); 3 (AVX2 a 3-vector pass).
constexpr Shape kShapes[] = {{128, 512, 128, 128}, {32, 272, 16, 16}, {48, 208, 16, 48},
                             {64, 96, 32, 32},     {16, 48, 16, 16},  {8, 16, 8, 16}};

// Random codes (no NaN), every 17th a subnormal, zero or the largest; scales 2^-12 .. 2^2.
Fp8Weight RandomWeight(int64_t rows, const Shape& s, std::mt19937& rng) {
  Fp8Weight w{rows, s.m, s.block_rows, s.block_cols, {}, {}};
  std::uniform_int_distribution<int> byte(0, 255);
  const uint8_t special[] = {0x00, 0x80, 0x01, 0x87, 0x05, 0x7e, 0xfe, 0x08};
  w.bytes.resize(static_cast<size_t>(rows * s.m));
  for (size_t k = 0; k < w.bytes.size(); ++k) {
    int b = byte(rng);
    if ((b & 0x7f) == 0x7f) b ^= 1;
    w.bytes[k] = static_cast<uint8_t>(k % 17 == 0 ? special[(k / 17) % 8] : b);
  }
  std::uniform_real_distribution<float> exponent(-12.0f, 2.0f);
  w.scale.resize(static_cast<size_t>((rows + s.block_rows - 1) / s.block_rows * w.ScaleCols()));
  for (float& v : w.scale) v = std::exp2(exponent(rng));
  return w;
}

struct Laid {
  AlignedVector<uint8_t> codes;
  std::vector<float> scale;
  Fp8Columns cols;
};

Laid LayOut(const Fp8Weight& w, int64_t row0, int64_t n) {
  Laid l;
  l.codes.resize(static_cast<size_t>(Fp8ColumnsBytes(n, w.cols)));
  l.scale.resize(static_cast<size_t>(Fp8ColumnsScales(n, w.cols, w.block_rows)));
  LayOutFp8Columns(w.View(), row0, n, l.codes.data(), l.scale.data());
  l.cols = {n, w.cols, w.block_rows, l.codes.data(), l.scale.data()};
  return l;
}

// The header's layout, read back: the code of row i, column j.
uint8_t LaidCode(const Fp8Columns& c, int64_t i, int64_t j) {
  const int64_t g = j / 256, width = std::min<int64_t>(256, c.m - 256 * g);
  return c.codes[256 * c.n * g + i * width + (j - 256 * g)];
}

std::vector<float> VecMat(Isa isa, const Fp8Columns& c, const std::vector<float>& x) {
  std::vector<float> y(static_cast<size_t>(c.m), -1.0f);
  VecMatFp8(isa, c, x.data(), y.data());
  return y;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

TEST(Fp8Columns, LayoutKeepsEveryCodeAndScale) {
  std::mt19937 rng(1);
  for (const Shape s : kShapes) {
    SCOPED_TRACE("n=" + std::to_string(s.n) + " m=" + std::to_string(s.m));
    const int64_t row0 = 2 * s.block_rows;
    const Fp8Weight w = RandomWeight(row0 + s.n + s.block_rows, s, rng);
    ASSERT_TRUE(CanLayOutFp8Columns(w.View(), row0, s.n));
    const Laid l = LayOut(w, row0, s.n);
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t j = 0; j < s.m; ++j) {
        ASSERT_EQ(LaidCode(l.cols, i, j), w.bytes[(row0 + i) * s.m + j]) << i << "," << j;
        // S per block row and 16 columns: s * 2^8.
        ASSERT_EQ(l.scale[i / s.block_rows * (s.m / 16) + j / 16], w.Scale(row0 + i, j) * 256.0f);
      }
  }
}

TEST(Fp8Columns, RefusesWhatTheKernelsCannotTake) {
  std::mt19937 rng(2);
  const Shape s{32, 64, 16, 32};
  Fp8Weight w = RandomWeight(64, s, rng);
  EXPECT_TRUE(CanLayOutFp8Columns(w.View(), 16, 32));
  EXPECT_FALSE(CanLayOutFp8Columns(w.View(), 8, 32));   // not on a block row
  EXPECT_FALSE(CanLayOutFp8Columns(w.View(), 16, 24));  // not whole block rows
  EXPECT_FALSE(CanLayOutFp8Columns(w.View(), 48, 32));  // past the rows
  for (const uint8_t nan : {0x7f, 0xff}) {
    Fp8Weight bad = w;
    bad.bytes[20 * 64 + 5] = nan;
    EXPECT_FALSE(CanLayOutFp8Columns(bad.View(), 16, 32));
    EXPECT_TRUE(CanLayOutFp8Columns(bad.View(), 32, 32));  // the NaN is not among these rows
  }
  Fp8Weight big = w;
  big.scale[1 * 2 + 1] = std::ldexp(1.0f, 121);  // times 2^8 overflows
  EXPECT_FALSE(CanLayOutFp8Columns(big.View(), 16, 32));
  WeightView v = w.View();
  v.block_cols = 24;
  EXPECT_FALSE(CanLayOutFp8Columns(v, 16, 32));
  v = w.View();
  v.cols = 56;
  EXPECT_FALSE(CanLayOutFp8Columns(v, 16, 32));
  v = w.View();
  v.dtype = DType::kBF16;
  EXPECT_FALSE(CanLayOutFp8Columns(v, 16, 32));
}

TEST(Fp8Columns, EveryIsaGivesTheScalarTwinsBits) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<Shape> shapes(std::begin(kShapes), std::end(kShapes));
  for (int64_t nv = 1; nv <= 16; ++nv) shapes.push_back({32, 256 + 16 * nv, 16, 16});
  for (const Shape s : shapes) {
    const Fp8Weight w = RandomWeight(s.n + s.block_rows, s, rng);
    const Laid l = LayOut(w, s.block_rows, s.n);
    std::vector<float> x(static_cast<size_t>(s.n));
    for (float& v : x) v = normal(rng);
    x[0] = 0.0f;
    x[s.n / 2] = 1e-30f;
    std::vector<float> with_nan = x;
    with_nan[s.n - 1] = NAN;
    const std::vector<float> want = VecMat(Isa::kScalar, l.cols, x);
    const std::vector<float> want_nan = VecMat(Isa::kScalar, l.cols, with_nan);
    const std::vector<float> zeros(x.size(), 0.0f);
    for (Isa isa : RunnableIsas()) {
      SCOPED_TRACE("n=" + std::to_string(s.n) + " m=" + std::to_string(s.m) + " " +
                   std::string(IsaName(isa)));
      EXPECT_TRUE(SameBits(VecMat(isa, l.cols, x), want));
      EXPECT_TRUE(SameBits(VecMat(isa, l.cols, with_nan), want_nan));
      EXPECT_TRUE(SameBits(VecMat(isa, l.cols, zeros), VecMat(Isa::kScalar, l.cols, zeros)));
    }
  }
}

// Per column, the largest |y - exact| / (gamma * sum |x W|) of the scalar twin.
double WorstBoundRatio(const Fp8Weight& w, int64_t row0, const Fp8Columns& c,
                       const std::vector<float>& x) {
  const std::vector<float> y = VecMat(Isa::kScalar, c, x);
  const double u = std::ldexp(1.0, -24);
  const double k = static_cast<double>(c.block_rows + c.n / c.block_rows);
  const double gamma = k * u / (1.0 - k * u);
  double worst = 0.0;
  for (int64_t j = 0; j < c.m; ++j) {
    double exact = 0.0, magnitude = 0.0;
    for (int64_t i = 0; i < c.n; ++i) {
      exact += x[i] * w.At(row0 + i, j);
      magnitude += std::fabs(x[i] * w.At(row0 + i, j));
    }
    worst = std::max(worst, std::fabs(y[j] - exact) / (gamma * magnitude));
  }
  return worst;
}

TEST(Fp8Columns, ScalarTwinIsWithinFp32Rounding) {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const Shape s : kShapes) {
    SCOPED_TRACE("n=" + std::to_string(s.n) + " m=" + std::to_string(s.m));
    Fp8Weight w = RandomWeight(s.n + s.block_rows, s, rng);
    const int64_t row0 = s.block_rows;
    std::vector<float> x(static_cast<size_t>(s.n));
    for (float& v : x) v = normal(rng);
    x[0] = 1.0f;
    w.bytes[row0 * s.m] = 0x40;  // W[row0, 0] = 2 s
    const Laid l = LayOut(w, row0, s.n);
    EXPECT_LE(WorstBoundRatio(w, row0, l.cols, x), 1.0);
    // Not vacuous: that code one step up (2.25 s) moves column 0 past the bound.
    Laid moved = LayOut(w, row0, s.n);
    moved.codes[0] = 0x41;
    EXPECT_GT(WorstBoundRatio(w, row0, moved.cols, x), 1.0);
  }
}

}  // namespace
}  // namespace dsv3::ops
