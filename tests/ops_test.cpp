// Kernel tests: every ISA variant against its scalar twin, and the scalar twins against naive
// double-precision arithmetic. Sizes are deliberately not multiples of the vector widths (8, 16)
// or of the 128 FP8 block, so every tail and ragged-edge path runs.
//
// Tolerances come from the standard floating-point error bound (Higham, "Accuracy and Stability of
// Numerical Algorithms", §3.1): a sum of products evaluated in any order, where every term passes
// through at most m roundings, differs from the exact value by at most
//   gamma_m * sum |terms|,   gamma_m = m*u / (1 - m*u),   u = 2^-24 (f32 unit roundoff).
// For m*u <= 0.0099 (m <= 1.6e5, far above our sizes) gamma_m <= 1.01*m*u. Two f32 evaluations of
// the same exact value therefore differ by at most 2*gamma_m*S <= 1.01*m*eps*S, eps = 2^-23.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/thread_pool.h"
#include "float_test_util.h"
#include "ops/isa.h"
#include "ops/kernels_internal.h"
#include "ops/matmul.h"
#include "ops/vector_ops.h"
#include "util/dtype.h"

namespace dsv3::ops {
namespace {

using testing::BitwiseEqual;
using testing::GammaBound;
using testing::RandomFloats;

constexpr double kEpsF32 = 0x1p-23;  // 2u: bound for the gap between two f32 evaluations

// A weight matrix in one of the MatMul dtypes, with the exact value of every element available in
// double for the naive reference.
struct TestWeight {
  DType dtype = DType::kF32;
  int64_t rows = 0, cols = 0, block_rows = 128, block_cols = 128;
  std::vector<uint8_t> bytes;
  std::vector<float> scale;  // [ceil(rows / block_rows), ceil(cols / block_cols)] for FP8

  int64_t ScaleCols() const { return (cols + block_cols - 1) / block_cols; }

  WeightView View() const {
    WeightView v;
    v.dtype = dtype;
    v.rows = rows;
    v.cols = cols;
    v.data = bytes.data();
    v.scale = dtype == DType::kF8E4M3 ? scale.data() : nullptr;
    v.block_rows = block_rows;
    v.block_cols = block_cols;
    return v;
  }

  // W[r, c] exactly (e4m3 * f32 scale needs 4 + 24 significant bits: exact in double).
  double At(int64_t r, int64_t c) const {
    const int64_t i = r * cols + c;
    uint16_t h;
    switch (dtype) {
      case DType::kF32: {
        float f;
        std::memcpy(&f, bytes.data() + 4 * i, 4);
        return f;
      }
      case DType::kF16:
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return F16ToF32(h);
      case DType::kBF16:
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return Bf16ToF32(h);
      case DType::kF8E4M3:
        return static_cast<double>(Fp8E4M3ToF32(bytes[i])) *
               scale[(r / block_rows) * ScaleCols() + c / block_cols];
      default:
        return NAN;
    }
  }
};

TestWeight MakeWeight(std::mt19937& rng, DType dtype, int64_t rows, int64_t cols,
                      int64_t block_rows = 128, int64_t block_cols = 128) {
  TestWeight w;
  w.dtype = dtype;
  w.rows = rows;
  w.cols = cols;
  w.block_rows = block_rows;
  w.block_cols = block_cols;
  const int64_t n = rows * cols;
  w.bytes.resize(static_cast<size_t>(n * static_cast<int64_t>(DTypeSize(dtype))));
  const std::vector<float> values = RandomFloats(rng, n);
  for (int64_t i = 0; i < n; ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(w.bytes.data() + 4 * i, &values[i], 4);
    } else if (dtype == DType::kF16 || dtype == DType::kBF16) {
      const uint16_t h = dtype == DType::kF16 ? F32ToF16(values[i]) : F32ToBf16(values[i]);
      std::memcpy(w.bytes.data() + 2 * i, &h, 2);
    }
  }
  if (dtype == DType::kF8E4M3) {
    // Every finite code (subnormals and ±448 included); the NaN codes 0x7F/0xFF never occur in
    // checkpoints (quantisers saturate), and the SIMD decoders do not special-case them.
    std::uniform_int_distribution<int> code(0, 253);
    for (auto& b : w.bytes) {
      const int c = code(rng);
      b = static_cast<uint8_t>(c < 127 ? c : c + 1);  // skip 0x7F; 0xFF is out of range
    }
    const int64_t scale_rows = (rows + block_rows - 1) / block_rows;
    // Realistic dequantisation multipliers (amax / 448) over a few binades.
    std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
    std::uniform_int_distribution<int> exponent(-14, -6);
    w.scale.resize(static_cast<size_t>(scale_rows * w.ScaleCols()));
    for (auto& s : w.scale) s = std::ldexp(mantissa(rng), exponent(rng));
  }
  return w;
}

// Exact y and the per-output sum of |terms| that scales the error bound. y, s: [T, rows]
void NaiveMatMul(const std::vector<float>& x, int64_t T, const TestWeight& w,
                 std::vector<double>* y, std::vector<double>* abs_sum) {
  y->assign(static_cast<size_t>(T * w.rows), 0.0);
  abs_sum->assign(static_cast<size_t>(T * w.rows), 0.0);
  for (int64_t r = 0; r < w.rows; ++r) {
    for (int64_t c = 0; c < w.cols; ++c) {
      const double wrc = w.At(r, c);
      for (int64_t t = 0; t < T; ++t) {
        const double term = static_cast<double>(x[t * w.cols + c]) * wrc;
        (*y)[t * w.rows + r] += term;
        (*abs_sum)[t * w.rows + r] += std::fabs(term);
      }
    }
  }
}

// Roundings one term of an f32 MatMul output can see, in any summation order: one for the product
// (for FP8 possibly one more: dequantise then multiply, or scale the block's partial sum), at most
// cols - 1 additions, and for FP8 one more addition when block partials are summed.
double MatMulRoundings(int64_t cols) {
  return static_cast<double>(cols) + 2.0;
}

const DType kMatMulDTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3};

std::string CaseName(DType dtype, int64_t rows, int64_t cols, int64_t T) {
  return std::string(DTypeName(dtype)) + " rows=" + std::to_string(rows) +
         " cols=" + std::to_string(cols) + " T=" + std::to_string(T);
}

TEST(Isa, ScalarAlwaysRunnableAndFirst) {
  const auto isas = RunnableIsas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::kScalar);
  for (Isa isa : isas) EXPECT_TRUE(CpuSupports(isa));
  // DSV3_ISA caps the choice (the whole suite also runs under DSV3_ISA=avx2 and =scalar).
  const char* cap = std::getenv("DSV3_ISA");
  EXPECT_EQ(BestIsa() == Isa::kScalar,
            isas.size() == 1 || (cap != nullptr && std::string(cap) == "scalar"));
}

TEST(Isa, NamesRoundTrip) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    EXPECT_EQ(IsaFromName(IsaName(isa)), isa);
  EXPECT_FALSE(IsaFromName("sse9").has_value());
}

TEST(Isa, EnvironmentCapsBestIsa) {
  const char* saved = std::getenv("DSV3_ISA");
  const std::string saved_value = saved ? saved : "";
  ASSERT_EQ(setenv("DSV3_ISA", "scalar", 1), 0);
  EXPECT_EQ(BestIsa(), Isa::kScalar);
  ASSERT_EQ(setenv("DSV3_ISA", "avx2", 1), 0);
  EXPECT_EQ(BestIsa(), CpuSupports(Isa::kAvx2) ? Isa::kAvx2 : Isa::kScalar);
  ASSERT_EQ(unsetenv("DSV3_ISA"), 0);
  EXPECT_EQ(BestIsa(), RunnableIsas().back());
  if (saved) setenv("DSV3_ISA", saved_value.c_str(), 1);
}

TEST(DequantizeRow, Fp8TableMatchesSpecDecoder) {
  // All 256 codes in one row, unit scale: DequantizeRow must reproduce the spec formula exactly.
  TestWeight w;
  w.dtype = DType::kF8E4M3;
  w.rows = 1;
  w.cols = 256;
  for (int i = 0; i < 256; ++i) w.bytes.push_back(static_cast<uint8_t>(i));
  w.scale = {1.0f, 1.0f};
  std::vector<float> out(256);
  DequantizeRow(w.View(), 0, out.data());
  for (int i = 0; i < 256; ++i) {
    const float expected = Fp8E4M3ToF32(static_cast<uint8_t>(i));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(out[i])) << i;
    } else {
      EXPECT_EQ(out[i], expected) << i;
    }
  }
}

TEST(DequantizeRow, AllDTypesExact) {
  std::mt19937 rng(7);
  for (DType dtype : kMatMulDTypes) {
    const TestWeight w = MakeWeight(rng, dtype, 9, 259, 4, 100);  // ragged 3x3 scale grid
    std::vector<float> out(static_cast<size_t>(w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
      DequantizeRow(w.View(), r, out.data());
      for (int64_t c = 0; c < w.cols; ++c) {
        // For FP8 the product e4m3 * scale is rounded once to f32.
        EXPECT_EQ(out[c], static_cast<float>(w.At(r, c)))
            << DTypeName(dtype) << " " << r << "," << c;
      }
    }
  }
}

// The SIMD row decoders give the reference's bits for every dtype, on widths that leave tails of
// every length and FP8 grids whose block width fills whole vectors (16, 32, 128) or not (5, 20:
// the reference takes the row). Rows hold random bit patterns (every FP8 code, the NaN codes
// 0x7F / 0xFF included; F16 NaNs with payloads).
TEST(DequantizeRow, EveryIsaBitwiseEqualsScalar) {
  std::mt19937 rng(8);
  const int64_t grids[][2] = {{128, 128}, {2, 16}, {3, 32}, {1, 5}, {2, 20}};
  for (DType dtype : kMatMulDTypes) {
    for (const auto& grid : grids) {
      for (int64_t cols : {1, 7, 8, 15, 16, 17, 33, 259, 300}) {
        TestWeight w = MakeWeight(rng, dtype, 5, cols, grid[0], grid[1]);
        // Every byte pattern: FP8 codes, and F16/BF16/F32 NaNs (payloads kept), infinities and
        // subnormals.
        for (size_t i = 0; i < w.bytes.size(); ++i)
          w.bytes[i] = static_cast<uint8_t>(dtype == DType::kF8E4M3 ? i * 7 : rng());
        for (int64_t r = 0; r < w.rows; ++r) {
          std::vector<float> ref(static_cast<size_t>(cols));
          DequantizeRow(w.View(), r, ref.data());
          for (Isa isa : RunnableIsas()) {
            std::vector<float> out(static_cast<size_t>(cols), 1.0f);
            DequantizeRow(isa, w.View(), r, out.data());
            ASSERT_TRUE(BitwiseEqual(out, ref))
                << IsaName(isa) << " " << DTypeName(dtype) << " cols=" << cols << " row=" << r
                << " grid=" << grid[0] << "x" << grid[1];
          }
        }
      }
    }
  }
}

// W^T a over a row range equals decoding each row (DequantizeRow) and adding it (Axpy) on the
// same ISA, bit for bit: ranges that start inside an FP8 block row and cross block rows, widths
// with tails, grids the vectors do not fit (the fallback), n = 0.
TEST(AccumulateRows, EqualsDequantizeRowThenAxpyOnEveryIsa) {
  std::mt19937 rng(9);
  const int64_t grids[][2] = {{128, 128}, {4, 16}, {3, 32}, {2, 20}};
  for (DType dtype : kMatMulDTypes) {
    for (const auto& grid : grids) {
      for (int64_t cols : {1, 16, 17, 130, 300, 560}) {  // 560: 16 + 16 + 3 vectors
        const TestWeight w = MakeWeight(rng, dtype, 13, cols, grid[0], grid[1]);
        for (const auto& [row0, n] : {std::pair<int64_t, int64_t>{0, 13}, {3, 9}, {5, 0}}) {
          const std::vector<float> a = RandomFloats(rng, n);
          const std::vector<float> y0 = RandomFloats(rng, cols);
          for (Isa isa : RunnableIsas()) {
            std::vector<float> ref = y0, out = y0, row(static_cast<size_t>(cols));
            for (int64_t k = 0; k < n; ++k) {
              DequantizeRow(isa, w.View(), row0 + k, row.data());
              Axpy(isa, a[k], row.data(), cols, ref.data());
            }
            AccumulateRows(isa, w.View(), row0, n, a.data(), out.data(), row.data());
            ASSERT_TRUE(BitwiseEqual(out, ref))
                << IsaName(isa) << " " << DTypeName(dtype) << " cols=" << cols << " rows " << row0
                << "+" << n << " grid=" << grid[0] << "x" << grid[1];
          }
        }
      }
    }
  }
}

struct BlockShape {
  int64_t rows, cols;
};

// FP8 block grids: the real 128x128, and ragged ones whose blocks straddle vector widths.
const BlockShape kFp8Blocks[] = {{128, 128}, {3, 5}, {7, 16}, {64, 100}};

// The scalar reference against exact arithmetic.
TEST(MatMul, ScalarMatchesDoubleNaive) {
  std::mt19937 rng(1);
  for (DType dtype : kMatMulDTypes) {
    for (const BlockShape block : kFp8Blocks) {
      if (dtype != DType::kF8E4M3 && block.rows != 128) continue;
      for (int64_t rows : {1, 7, 130}) {
        for (int64_t cols : {1, 5, 129, 257, 1000}) {
          for (int64_t T : {1, 3, 17}) {
            const TestWeight w = MakeWeight(rng, dtype, rows, cols, block.rows, block.cols);
            const std::vector<float> x = RandomFloats(rng, T * cols);
            std::vector<double> exact, abs_sum;
            NaiveMatMul(x, T, w, &exact, &abs_sum);
            std::vector<float> y(static_cast<size_t>(T * rows), NAN);
            MatMul(KernelContext{nullptr, Isa::kScalar}, x.data(), T, w.View(), y.data());
            const double gamma = GammaBound(MatMulRoundings(cols));
            for (size_t i = 0; i < y.size(); ++i)
              ASSERT_LE(std::fabs(y[i] - exact[i]), gamma * abs_sum[i])
                  << CaseName(dtype, rows, cols, T) << " block " << block.rows << "x" << block.cols
                  << " i=" << i;
          }
        }
      }
    }
  }
}

// MatMul on every ISA variant against the scalar twin, for one random case: both evaluations are
// within gamma of exact, so twice the bound between them.
// `codes`, for FP8: rewrites the weight's bytes first (the default draws every code).
void ExpectEveryIsaMatchesScalar(std::mt19937& rng, DType dtype, int64_t rows, int64_t cols,
                                 int64_t T, BlockShape block,
                                 const std::function<void(TestWeight*)>& codes = nullptr) {
  TestWeight w = MakeWeight(rng, dtype, rows, cols, block.rows, block.cols);
  if (codes) codes(&w);
  const std::vector<float> x = RandomFloats(rng, T * cols);
  std::vector<double> exact, abs_sum;
  NaiveMatMul(x, T, w, &exact, &abs_sum);
  std::vector<float> y_ref(static_cast<size_t>(T * rows));
  MatMul(KernelContext{nullptr, Isa::kScalar}, x.data(), T, w.View(), y_ref.data());
  const double bound = 2.0 * GammaBound(MatMulRoundings(cols));
  for (Isa isa : RunnableIsas()) {
    std::vector<float> y(static_cast<size_t>(T * rows), NAN);
    MatMul(KernelContext{nullptr, isa}, x.data(), T, w.View(), y.data());
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_LE(std::fabs(y[i] - y_ref[i]), bound * abs_sum[i])
          << IsaName(isa) << " " << CaseName(dtype, rows, cols, T) << " block " << block.rows << "x"
          << block.cols << " i=" << i;
  }
}

// Every ISA variant against the scalar twin.
TEST(MatMul, EveryIsaMatchesScalar) {
  std::mt19937 rng(2);
  for (DType dtype : kMatMulDTypes) {
    for (const BlockShape block : kFp8Blocks) {
      if (dtype != DType::kF8E4M3 && block.rows != 128) continue;
      for (int64_t rows : {1, 7, 130, 300})
        for (int64_t cols : {1, 5, 129, 257, 1000})
          for (int64_t T : {1, 2, 3, 4, 5, 13, 17, 40})
            ExpectEveryIsaMatchesScalar(rng, dtype, rows, cols, T, block);
    }
  }
}

// FP8 rows of realistic codes: whole 64-byte lines with no zero-exponent code (uniformly drawn
// codes put one in nearly every line) and some lines with one, against the scalar twin. 9 rows
// (a decode tile of 8 and one more), widths with and without a partial line, blocks of 128 and
// 100 columns, T = 1 to 4. (Written for a row-major form of the tiled kernels' line decoding,
// ops/isa/avx512_fp8_lines.h, measured slower and not kept; it checks whatever form runs.)
TEST(MatMul, Fp8LinesMatchScalar) {
  std::mt19937 rng(21);
  for (const BlockShape block : {BlockShape{128, 128}, BlockShape{3, 100}})
    for (int64_t cols : {64, 228, 1000})
      for (int64_t T : {1, 2, 3, 4})
        for (int every : {0, 5}) {  // a zero-exponent code in every `every`-th line (0: none)
          ExpectEveryIsaMatchesScalar(rng, DType::kF8E4M3, 9, cols, T, block, [&](TestWeight* w) {
            for (size_t i = 0; i < w->bytes.size(); ++i) {
              uint8_t& b = w->bytes[i];
              if ((b & 0x78) == 0) b |= 0x08;  // exponent 1
              if (every > 0 && i % 64 == 7 && (i / 64) % every == 0)
                b = static_cast<uint8_t>(i / 64 % 3 == 0 ? 0x00 : i / 64 % 3 == 1 ? 0x83 : 0x05);
            }
          });
        }
}

// Every e4m3 code through the row-major exact path, one product per row so each result is
// exact: row r (256 rows) holds code r at column k = (r * 7 + shift) % cols and +0 elsewhere
// (120 columns: k in the first 64 or in the 56 past them), x a signed power of two in
// [2^-40, 2^40], block scales 0.75 * 2^j: y[t, r] = e4m3(r) * x[t, k] * scale (at most 6
// significant bits) must come out bitwise on every ISA, NaN codes aside (a wrong decoding of a
// zero or subnormal code is far below the rounding bound of the test above).
TEST(MatMul, EveryFp8CodeExactRowMajor) {
  std::mt19937 rng(22);
  for (const BlockShape block : {BlockShape{128, 128}, BlockShape{3, 32}})
    for (int64_t shift : {0, 61}) {
      const int64_t rows = 256, cols = 120;
      TestWeight w = MakeWeight(rng, DType::kF8E4M3, rows, cols, block.rows, block.cols);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < cols; ++k)
          w.bytes[static_cast<size_t>(r * cols + k)] =
              k == (r * 7 + shift) % cols ? static_cast<uint8_t>(r) : 0;
      for (size_t i = 0; i < w.scale.size(); ++i)
        w.scale[i] = std::ldexp(0.75f, static_cast<int>(i % 9) - 4);
      for (int64_t T : {1, 2, 3, 4}) {
        std::vector<float> x(static_cast<size_t>(T * cols));
        for (size_t i = 0; i < x.size(); ++i)
          x[i] = std::ldexp(i % 3 == 0 ? -1.0f : 1.0f,
                            static_cast<int>((i * 7 + rng() % 3) % 81) - 40);
        for (Isa isa : RunnableIsas()) {
          std::vector<float> y(static_cast<size_t>(T * rows), NAN);
          MatMul(KernelContext{nullptr, isa}, x.data(), T, w.View(), y.data());
          for (int64_t t = 0; t < T; ++t)
            for (int64_t r = 0; r < rows; ++r) {
              if ((r & 0x7f) == 0x7f) continue;  // NaN codes
              const int64_t k = (r * 7 + shift) % cols;
              const double want = w.At(r, k) * x[static_cast<size_t>(t * cols + k)];
              ASSERT_EQ(y[static_cast<size_t>(t * rows + r)], static_cast<float>(want))
                  << IsaName(isa) << " grid " << block.rows << " T=" << T << " code " << r;
            }
        }
      }
    }
}

// The zero-exponent codes (zeros, subnormals) alone in their rows' lines: row r holds zero-exponent
// code r (0x00-0x07, 0x80-0x87) or a nonzero-exponent code (rows 16-40) in column k0 and 0x38
// (1.0) elsewhere, x is 0 but at k0: y[t, r] = e4m3 * x[t, k0] * scale exactly. k0 in the low and
// the high half of a 64-byte line, and past the whole lines (100 of 120 columns): a decoding that
// treats zero-exponent codes apart must find a lone one of either sign anywhere.
TEST(MatMul, LoneZeroExponentCodesExactRowMajor) {
  std::mt19937 rng(23);
  const int64_t rows = 41, cols = 120;
  for (int64_t k0 : {3, 40, 63, 100}) {
    TestWeight w = MakeWeight(rng, DType::kF8E4M3, rows, cols, 128, 128);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < cols; ++k) {
        const uint8_t code = r < 16 ? static_cast<uint8_t>(r < 8 ? 0x80 + r : r - 8)
                                    : static_cast<uint8_t>(r * 5 + 8);
        w.bytes[static_cast<size_t>(r * cols + k)] = k == k0 ? code : 0x38;
      }
    w.scale[0] = 0.375f;
    for (int64_t T : {1, 2, 3}) {
      std::vector<float> x(static_cast<size_t>(T * cols), 0.0f);
      for (int64_t t = 0; t < T; ++t)
        x[static_cast<size_t>(t * cols + k0)] =
            std::ldexp(t % 2 == 0 ? -1.0f : 1.0f, static_cast<int>(rng() % 41) - 20);
      for (Isa isa : RunnableIsas()) {
        std::vector<float> y(static_cast<size_t>(T * rows), NAN);
        MatMul(KernelContext{nullptr, isa}, x.data(), T, w.View(), y.data());
        for (int64_t t = 0; t < T; ++t)
          for (int64_t r = 0; r < rows; ++r) {
            const double want = w.At(r, k0) * x[static_cast<size_t>(t * cols + k0)];
            ASSERT_EQ(y[static_cast<size_t>(t * rows + r)], static_cast<float>(want))
                << IsaName(isa) << " k0 " << k0 << " T=" << T << " row " << r;
          }
      }
    }
  }
}

// The packed (prefill) forms' edges: every micro-kernel width (T mod the tile), several token
// blocks (T > 192), row counts that end a strip early (1, 9, 17, 70 rows).
TEST(MatMul, PackedFormEdgesMatchScalar) {
  std::mt19937 rng(12);
  for (DType dtype : kMatMulDTypes)
    for (int64_t rows : {1, 9, 17, 70})
      for (int64_t cols : {5, 257})
        for (int64_t T : {32, 33, 34, 35, 37, 49, 50, 203})
          ExpectEveryIsaMatchesScalar(rng, dtype, rows, cols, T, BlockShape{16, 32});
}

void RunMatMulRows(Isa isa, const float* x, int64_t T, const WeightView& w, int64_t begin,
                   int64_t end, float* y) {
  switch (isa) {
    case Isa::kScalar:
      return scalar::MatMulRows(x, T, w, begin, end, y);
    case Isa::kAvx2:
      return avx2::MatMulRows(x, T, w, begin, end, y);
    case Isa::kAvx512:
      return avx512::MatMulRows(x, T, w, begin, end, y);
  }
}

// A row range writes exactly its rows, and gives bitwise the values the full range gives (the
// property that makes thread splits deterministic).
TEST(MatMul, RowRangeWritesOnlyItsRowsAndMatchesFullRange) {
  std::mt19937 rng(3);
  for (DType dtype : kMatMulDTypes) {
    const TestWeight w = MakeWeight(rng, dtype, 300, 257, 7, 16);
    for (int64_t T : {1, 3, 17, 40}) {  // 40: the packed (prefill) form
      const std::vector<float> x = RandomFloats(rng, T * w.cols);
      for (Isa isa : RunnableIsas()) {
        std::vector<float> full(static_cast<size_t>(T * w.rows));
        RunMatMulRows(isa, x.data(), T, w.View(), 0, w.rows, full.data());
        const float sentinel = 12345.0f;
        for (auto [begin, end] : {std::pair<int64_t, int64_t>{5, 133}, {64, 128}, {299, 300}}) {
          std::vector<float> part(static_cast<size_t>(T * w.rows), sentinel);
          RunMatMulRows(isa, x.data(), T, w.View(), begin, end, part.data());
          for (int64_t t = 0; t < T; ++t) {
            for (int64_t r = 0; r < w.rows; ++r) {
              const float got = part[t * w.rows + r];
              const float want = (r >= begin && r < end) ? full[t * w.rows + r] : sentinel;
              ASSERT_EQ(std::memcmp(&got, &want, 4), 0)
                  << IsaName(isa) << " " << CaseName(dtype, w.rows, w.cols, T) << " range ["
                  << begin << "," << end << ") t=" << t << " r=" << r;
            }
          }
        }
      }
    }
  }
}

// The pool splits by output rows, so the thread count must not change a single bit. 50 rows:
// decode's 16-row chunks (a router's few rows split over the threads), 300: 64-row chunks.
TEST(MatMul, ThreadCountDoesNotChangeResults) {
  std::mt19937 rng(4);
  ThreadPool one(1);
  ThreadPool two(2);
  ThreadPool three(3);
  for (DType dtype : kMatMulDTypes) {
    for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{300, 1000}, {50, 2000}}) {
      const TestWeight w = MakeWeight(rng, dtype, rows, cols, 128, 128);
      // 40: the packed (prefill) form; 64, 97: the 50 rows (one thread chunk) split their tokens
      // over the threads instead, 32 or more a thread.
      for (int64_t T : {1, 3, 17, 40, 64, 97}) {
        const std::vector<float> x = RandomFloats(rng, T * w.cols);
        for (Isa isa : RunnableIsas()) {
          std::vector<float> y0(static_cast<size_t>(T * w.rows));
          MatMul(KernelContext{nullptr, isa}, x.data(), T, w.View(), y0.data());
          for (ThreadPool* pool : {&one, &two, &three}) {
            std::vector<float> y(y0.size());
            MatMul(KernelContext{pool, isa}, x.data(), T, w.View(), y.data());
            EXPECT_TRUE(BitwiseEqual(y0, y)) << IsaName(isa) << " " << pool->num_threads()
                                             << " threads " << CaseName(dtype, rows, cols, T);
          }
        }
      }
    }
  }
}

// The opt-in BF16 (and FP8) fast path rounds x to bf16 (8 significant bits: relative error <=
// u_bf16 = 2^-8 per value), which moves the exact result by at most 2^-8 * S; the f32 summation of
// the changed terms adds gamma_m * S(1 + 2^-8) as for the exact path. Below its T threshold (8) it
// must be the exact AVX-512 path, bitwise. x is rounded to bf16 as F32ToBf16 does (nearest even;
// subnormal x flushed to zero, their products far below the bound): the result must not change
// when x is rounded that way beforehand.
TEST(MatMul, Bf16DotFastPathWithinBf16Rounding) {
  if (!CpuSupports(Isa::kAvx512)) GTEST_SKIP() << "needs AVX-512 BF16";
  std::mt19937 rng(6);
  // FP8 runs on the fast path with its block scales applied per column block: the default grid,
  // a small one (row blocks change inside a 32-row strip, many column blocks); an odd block
  // width cannot (a bf16 pair would straddle two blocks) and must take the exact path.
  struct Format {
    DType dtype;
    int64_t block_rows, block_cols;
    bool fast;
  };
  const Format formats[] = {{DType::kBF16, 128, 128, true},
                            {DType::kF8E4M3, 128, 128, true},
                            {DType::kF8E4M3, 16, 32, true},
                            {DType::kF8E4M3, 16, 33, false}};
  for (const Format& f : formats) {
    for (int64_t rows : {7, 130}) {
      for (int64_t cols : {5, 129, 1000}) {
        for (int64_t T : {3, 7, 8, 13, 32, 45, 200}) {
          const TestWeight w = MakeWeight(rng, f.dtype, rows, cols, f.block_rows, f.block_cols);
          const std::string name = CaseName(f.dtype, rows, cols, T) + " grid " +
                                   std::to_string(f.block_rows) + "x" +
                                   std::to_string(f.block_cols);
          std::vector<float> x = RandomFloats(rng, T * cols);
          // Exact ties between two bf16 values, which round to the even one: down, up, negative;
          // subnormals, which the fast path flushes to zero (so do the pre-rounded ones below).
          const float ties[] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -0.5f - 0x1p-9f, 0x1p-130f,
                                -0x1.8p-140f};
          for (size_t i = 0; i < std::size(ties) && i < x.size(); ++i)
            x[i * 7 % x.size()] = ties[i];
          std::vector<double> exact, abs_sum;
          NaiveMatMul(x, T, w, &exact, &abs_sum);
          KernelContext fast{nullptr, Isa::kAvx512};
          fast.bf16_dot = true;
          std::vector<float> y(static_cast<size_t>(T * rows), NAN);
          MatMul(fast, x.data(), T, w.View(), y.data());
          const double bound = 0x1p-8 + GammaBound(MatMulRoundings(cols)) * (1.0 + 0x1p-8);
          for (size_t i = 0; i < y.size(); ++i)
            ASSERT_LE(std::fabs(y[i] - exact[i]), bound * abs_sum[i]) << name << " i=" << i;
          if (T < 8 || !f.fast) {
            std::vector<float> y_exact_path(y.size());
            MatMul(KernelContext{nullptr, Isa::kAvx512}, x.data(), T, w.View(),
                   y_exact_path.data());
            EXPECT_TRUE(BitwiseEqual(y, y_exact_path)) << name;
          } else {
            std::vector<float> x_bf16(x.size());
            for (size_t i = 0; i < x.size(); ++i) x_bf16[i] = Bf16ToF32(F32ToBf16(x[i]));
            std::vector<float> y_rounded(y.size());
            MatMul(fast, x_bf16.data(), T, w.View(), y_rounded.data());
            EXPECT_TRUE(BitwiseEqual(y, y_rounded)) << name;
          }
        }
      }
    }
  }
}

// The bf16-dot path turns each e4m3 byte into the bf16 of e4m3 * 2^-8 with integer steps and a
// table for the subnormals (avx512_matmul.cpp, LoadBf16Pairs): every one of the 256 codes, one per
// row (each row's one nonzero weight, in a full and a partial 32-column group), times x values
// exact in bf16, must give the exact product, which the exact path also gives; the NaN codes
// 0x7F/0xFF decode as +-480 on both paths (checkpoints never hold them).
TEST(MatMul, Bf16DotDecodesEveryFp8Code) {
  if (!CpuSupports(Isa::kAvx512)) GTEST_SKIP() << "needs AVX-512 BF16";
  std::mt19937 rng(7);
  for (int64_t cols : {64, 45}) {
    TestWeight w = MakeWeight(rng, DType::kF8E4M3, 256, cols);
    std::fill(w.bytes.begin(), w.bytes.end(), uint8_t{0});
    std::fill(w.scale.begin(), w.scale.end(), 0.75f);
    const auto column = [&](int64_t r) { return (r * 5) % cols; };
    for (int64_t r = 0; r < 256; ++r) w.bytes[r * cols + column(r)] = static_cast<uint8_t>(r);
    constexpr int64_t T = 8;  // the bf16-dot path's first T
    std::vector<float> x(static_cast<size_t>(T * cols));
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.5f * static_cast<float>(i % 13) - 2.5f;
    // Column 0 not exact in bf16 (it rounds to 1): the bf16-dot path must have been taken.
    for (int64_t t = 0; t < T; ++t) x[t * cols] = 1.0f + 0x1p-10f;
    KernelContext fast{nullptr, Isa::kAvx512};
    fast.bf16_dot = true;
    std::vector<float> y(static_cast<size_t>(T * 256)), y_exact(y.size());
    MatMul(fast, x.data(), T, w.View(), y.data());
    MatMul(KernelContext{nullptr, Isa::kAvx512}, x.data(), T, w.View(), y_exact.data());
    int64_t rounded = 0;  // outputs where x's bf16 rounding shows
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t r = 0; r < 256; ++r) {
        const float code = (r & 0x7f) == 0x7f ? (r & 0x80 ? -480.0f : 480.0f)
                                              : Fp8E4M3ToF32(static_cast<uint8_t>(r));
        const float xv = x[t * cols + column(r)];
        // Exact products: x has at most 11 significant bits, the code 4, the scale 2.
        const float want = Bf16ToF32(F32ToBf16(xv)) * code * 0.75f;
        const float want_exact = xv * code * 0.75f;
        ASSERT_EQ(y[t * 256 + r], want) << "cols " << cols << " code " << r << " t " << t;
        ASSERT_EQ(y_exact[t * 256 + r], want_exact) << "exact path, code " << r;
        rounded += want != want_exact;
      }
    }
    EXPECT_GT(rounded, 0) << cols;
  }
}

TEST(MatMul, ZeroColumnsGiveZeros) {
  std::mt19937 rng(5);
  const TestWeight w = MakeWeight(rng, DType::kBF16, 3, 0);
  for (Isa isa : RunnableIsas()) {
    std::vector<float> y(6, NAN);
    MatMul(KernelContext{nullptr, isa}, nullptr, 2, w.View(), y.data());
    for (float v : y) EXPECT_EQ(v, 0.0f) << IsaName(isa);
  }
}

}  // namespace
}  // namespace dsv3::ops
