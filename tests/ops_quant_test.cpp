// q8_0 / q4_0 kernels (ops/quant.h): the quantisers' error bounds, DequantizeRow against the
// format's definition, the scalar MatMul against exact arithmetic, and every ISA variant against
// the scalar twin. Sizes are not multiples of the group (32) or vector widths (8, 16), so every
// partial group and odd q4_0 tail runs.
//
// Tolerances (Higham §3.1, as in ops_test.cpp): a sum of products in any order, each term seeing
// at most m roundings, is within gamma_m * sum|terms| of exact, gamma_m <= 1.01 * m * u,
// u = 2^-24. A term sees at most: code * scale (SIMD paths) or partial * scale (scalar), x * w,
// cols - 1 additions and one addition of group partials: m = cols + 3. Two evaluations of the same
// exact value differ by at most twice that.
#include <gtest/gtest.h>

#include <algorithm>
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
#include "ops/vector_ops.h"
#include "quant_weight.h"
#include "util/dtype.h"

namespace dsv3::ops {
namespace {

using testing::GammaBound;
using testing::RandomFloats;

// A quantized matrix produced by the library's own quantisers from random values.
struct SourcedWeight : QuantWeight {
  std::vector<float> source;  // [rows, cols] the values that were quantised
};

SourcedWeight MakeQuantWeight(std::mt19937& rng, DType dtype, int64_t rows, int64_t cols) {
  SourcedWeight w;
  w.dtype = dtype;
  w.rows = rows;
  w.cols = cols;
  w.source = RandomFloats(rng, rows * cols);
  // A few all-zero and one-hot groups: the zero-scale and exact-extreme edge cases.
  if (rows > 1 && cols > 0) {
    std::fill(w.source.begin() + cols, w.source.begin() + cols + std::min<int64_t>(cols, 32), 0.0f);
  }
  w.scale.resize(static_cast<size_t>(rows * w.Groups()));
  if (dtype == DType::kI8) {
    w.bytes.resize(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      QuantizeRowQ8_0(w.source.data() + r * cols, cols, kQuantGroupSize,
                      reinterpret_cast<int8_t*>(w.bytes.data()) + r * cols,
                      w.scale.data() + r * w.Groups());
  } else {
    w.bytes.resize(static_cast<size_t>(rows * Q4RowBytes(cols)));
    for (int64_t r = 0; r < rows; ++r)
      QuantizeRowQ4_0(w.source.data() + r * cols, cols, kQuantGroupSize,
                      w.bytes.data() + r * Q4RowBytes(cols), w.scale.data() + r * w.Groups());
  }
  return w;
}

const DType kQuantDTypes[] = {DType::kI8, DType::kU8};

std::string CaseName(DType dtype, int64_t rows, int64_t cols, int64_t T) {
  return std::string(dtype == DType::kI8 ? "q8_0" : "q4_0") + " rows=" + std::to_string(rows) +
         " cols=" + std::to_string(cols) + " T=" + std::to_string(T);
}

TEST(Quantize, Q8ErrorWithinHalfStep) {
  std::mt19937 rng(11);
  for (int64_t cols : {1, 31, 32, 33, 100, 1000}) {
    const SourcedWeight w = MakeQuantWeight(rng, DType::kI8, 5, cols);
    for (int64_t r = 0; r < w.rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const double d = w.scale[r * w.Groups() + c / kQuantGroupSize];
        EXPECT_LE(std::abs(w.Code(r, c)), 127);
        // Half a step, plus the rounding of x / d in f32 (relative 2^-24 of |x / d| <= 127).
        EXPECT_LE(std::fabs(w.At(r, c) - w.source[r * cols + c]), d * (0.5 + 127 * 0x1p-23))
            << r << "," << c;
      }
    }
  }
}

TEST(Quantize, Q4ErrorWithinHalfStepExceptClampedEnd) {
  std::mt19937 rng(12);
  for (int64_t cols : {1, 31, 32, 33, 101, 1000}) {
    const SourcedWeight w = MakeQuantWeight(rng, DType::kU8, 5, cols);
    for (int64_t r = 0; r < w.rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const double d = w.scale[r * w.Groups() + c / kQuantGroupSize];
        const double x = w.source[r * cols + c];
        const double err = std::fabs(w.At(r, c) - x);
        const double slack = std::fabs(d) * 8 * 0x1p-23;  // rounding of x / d
        // Clamped to code 7: x is at most |m| = 8 |d0|, d0 the scale before its rounding to f16
        // (|d0| <= |d| (1 + 2^-11)), so within |d| + 8 |d| 2^-11 (1 + 2^-11).
        if (d != 0 && x / d > 7.5)
          EXPECT_LE(err, std::fabs(d) * (1 + 8 * 0x1p-11 * (1 + 0x1p-11)) + slack) << r << "," << c;
        else
          EXPECT_LE(err, std::fabs(d) * 0.5 + slack) << r << "," << c;
      }
    }
    // The odd tail's padding nibble is 8 (zero).
    if (cols % 2 == 1) {
      for (int64_t r = 0; r < w.rows; ++r) {
        EXPECT_EQ(w.bytes[r * Q4RowBytes(cols) + cols / 2] >> 4, 8);
      }
    }
  }
}

// Scales are rounded to the nearest f16 value before the codes are computed, subnormal f16 values
// included (the tiny magnitudes), so every scale of a quantized matrix is exact in f16; q8_0
// elements stay within |d| / 2 + 127 * 2^-25 (quant.h), plus the rounding of x / d.
TEST(Quantize, ScalesAreF16Values) {
  std::mt19937 rng(14);
  for (float magnitude : {3.0f, 0.02f, 1e-3f, 1e-6f, 0.0f}) {
    std::uniform_real_distribution<float> dist(-magnitude, magnitude);
    std::vector<float> x(96);
    for (float& v : x) v = dist(rng);
    int8_t q8[96];
    uint8_t q4[48];
    float d8[3], d4[3];
    QuantizeRowQ8_0(x.data(), 96, 32, q8, d8);
    QuantizeRowQ4_0(x.data(), 96, 32, q4, d4);
    for (int g = 0; g < 3; ++g) {
      float amax = 0, m = 0;
      for (int c = g * 32; c < g * 32 + 32; ++c) {
        amax = std::max(amax, std::fabs(x[c]));
        if (std::fabs(x[c]) > std::fabs(m)) m = x[c];
      }
      for (const auto& [got, exact] : {std::pair{d8[g], amax / 127.0f}, {d4[g], m / -8.0f}}) {
        EXPECT_EQ(got, F16ToF32(F32ToF16(exact))) << magnitude << " g=" << g;
        if (magnitude == 3.0f) {
          EXPECT_NE(got, exact);  // the rounding did happen
        }
      }
      for (int c = g * 32; c < g * 32 + 32; ++c) {
        const double d = d8[g], err = std::fabs(static_cast<double>(q8[c]) * d - x[c]);
        EXPECT_LE(err, d * (0.5 + 127 * 0x1p-23) + 127 * 0x1p-25) << magnitude << " c=" << c;
      }
    }
  }
}

TEST(Quantize, Q4ExtremeIsExact) {
  const float row[4] = {0.5f, -2.0f, 1.0f, 2.0f};  // m = -2 (first of largest magnitude)
  uint8_t packed[2];
  float scale;
  QuantizeRowQ4_0(row, 4, 32, packed, &scale);
  EXPECT_EQ(scale, 0.25f);
  EXPECT_EQ(packed[0] >> 4, 0);   // -2 = -8 * 0.25
  EXPECT_EQ(packed[1] >> 4, 15);  // +2 clamps to 7 * 0.25
}

TEST(DequantizeRow, QuantFormatsExact) {
  std::mt19937 rng(13);
  for (DType dtype : kQuantDTypes) {
    const SourcedWeight w = MakeQuantWeight(rng, dtype, 6, 259);
    std::vector<float> out(static_cast<size_t>(w.cols));
    for (int64_t r = 0; r < w.rows; ++r) {
      DequantizeRow(w.View(), r, out.data());
      for (int64_t c = 0; c < w.cols; ++c)
        ASSERT_EQ(out[c], static_cast<float>(w.At(r, c))) << CaseName(dtype, r, c, 0);
    }
  }
}

// The SIMD row decoders give the reference's bits: every code (random bytes), group sizes that
// fill whole vectors (16, 32, 48) and one that does not (20: the reference takes the row), widths
// that leave tails of every length.
TEST(DequantizeRow, EveryIsaBitwiseEqualsScalarQuant) {
  std::mt19937 rng(16);
  std::uniform_int_distribution<int> byte(0, 255);
  for (DType dtype : kQuantDTypes) {
    for (int64_t group : {16, 20, 32, 48}) {
      for (int64_t cols : {1, 5, 8, 15, 16, 17, 31, 33, 100, 259}) {
        const int64_t rows = 3, groups = (cols + group - 1) / group;
        SourcedWeight q = MakeQuantWeight(rng, dtype, rows, cols);
        for (auto& b : q.bytes) b = static_cast<uint8_t>(byte(rng));  // every code
        const std::vector<float> scale = RandomFloats(rng, rows * groups);
        WeightView v = q.View();
        v.scale = scale.data();
        v.group_size = group;
        for (int64_t r = 0; r < rows; ++r) {
          std::vector<float> ref(static_cast<size_t>(cols));
          DequantizeRow(v, r, ref.data());
          for (Isa isa : RunnableIsas()) {
            std::vector<float> out(static_cast<size_t>(cols), NAN);
            DequantizeRow(isa, v, r, out.data());
            ASSERT_EQ(std::memcmp(out.data(), ref.data(), ref.size() * 4), 0)
                << IsaName(isa) << " " << CaseName(dtype, r, cols, 0) << " group=" << group;
          }
        }
      }
    }
  }
}

// AccumulateRows equals DequantizeRow + Axpy per row on every ISA, bit for bit, for the integer
// formats (whole-vector groups and the fallback for a group of 20; widths whose q4_0 groups take
// passes of 8, 4 and fewer: 416 = 8 + 4 + 1 groups, 704 = 8 + 8 + 4 + 2).
TEST(AccumulateRows, QuantFormatsEqualDequantizeRowThenAxpy) {
  std::mt19937 rng(17);
  for (DType dtype : kQuantDTypes) {
    for (int64_t group : {32, 48, 20}) {
      for (int64_t cols : {1, 31, 33, 130, 300, 416, 544, 704}) {
        const int64_t rows = 7, groups = (cols + group - 1) / group;
        const SourcedWeight q = MakeQuantWeight(rng, dtype, rows, cols);
        const std::vector<float> scale = RandomFloats(rng, rows * groups);
        WeightView v = q.View();
        v.scale = scale.data();
        v.group_size = group;
        const std::vector<float> a = RandomFloats(rng, 5);
        const std::vector<float> y0 = RandomFloats(rng, cols);
        for (Isa isa : RunnableIsas()) {
          std::vector<float> ref = y0, out = y0, row(static_cast<size_t>(cols));
          for (int64_t k = 0; k < 5; ++k) {
            DequantizeRow(isa, v, 2 + k, row.data());
            Axpy(isa, a[k], row.data(), cols, ref.data());
          }
          AccumulateRows(isa, v, 2, 5, a.data(), out.data(), row.data());
          ASSERT_EQ(std::memcmp(out.data(), ref.data(), ref.size() * 4), 0)
              << IsaName(isa) << " " << CaseName(dtype, rows, cols, 0) << " group=" << group;
        }
      }
    }
  }
}

void NaiveMatMul(const std::vector<float>& x, int64_t T, const QuantWeight& w,
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

double Roundings(int64_t cols) {
  return static_cast<double>(cols) + 3.0;
}

TEST(MatMulQuant, ScalarMatchesDoubleNaive) {
  std::mt19937 rng(14);
  for (DType dtype : kQuantDTypes) {
    for (int64_t rows : {1, 7, 130}) {
      for (int64_t cols : {1, 5, 31, 33, 129, 257, 1000}) {
        for (int64_t T : {1, 3, 17}) {
          const SourcedWeight w = MakeQuantWeight(rng, dtype, rows, cols);
          const std::vector<float> x = RandomFloats(rng, T * cols);
          std::vector<double> exact, abs_sum;
          NaiveMatMul(x, T, w, &exact, &abs_sum);
          std::vector<float> y(static_cast<size_t>(T * rows), NAN);
          MatMul(KernelContext{nullptr, Isa::kScalar}, x.data(), T, w.View(), y.data());
          const double gamma = GammaBound(Roundings(cols));
          for (size_t i = 0; i < y.size(); ++i)
            ASSERT_LE(std::fabs(y[i] - exact[i]), gamma * abs_sum[i])
                << CaseName(dtype, rows, cols, T) << " i=" << i;
        }
      }
    }
  }
}

TEST(MatMulQuant, EveryIsaMatchesScalar) {
  std::mt19937 rng(15);
  for (DType dtype : kQuantDTypes) {
    for (int64_t rows : {1, 7, 130, 300}) {
      for (int64_t cols : {1, 5, 31, 32, 33, 129, 257, 1000}) {
        for (int64_t T : {1, 2, 3, 4, 5, 13, 17, 40}) {
          const SourcedWeight w = MakeQuantWeight(rng, dtype, rows, cols);
          const std::vector<float> x = RandomFloats(rng, T * cols);
          std::vector<double> exact, abs_sum;
          NaiveMatMul(x, T, w, &exact, &abs_sum);
          std::vector<float> y_ref(static_cast<size_t>(T * rows));
          MatMul(KernelContext{nullptr, Isa::kScalar}, x.data(), T, w.View(), y_ref.data());
          const double bound = 2.0 * GammaBound(Roundings(cols));
          for (Isa isa : RunnableIsas()) {
            std::vector<float> y(static_cast<size_t>(T * rows), NAN);
            MatMul(KernelContext{nullptr, isa}, x.data(), T, w.View(), y.data());
            for (size_t i = 0; i < y.size(); ++i)
              ASSERT_LE(std::fabs(y[i] - y_ref[i]), bound * abs_sum[i])
                  << IsaName(isa) << " " << CaseName(dtype, rows, cols, T) << " i=" << i;
          }
        }
      }
    }
  }
}

// Row splits over threads must not change a single bit.
TEST(MatMulQuant, ThreadCountIndependent) {
  std::mt19937 rng(16);
  ThreadPool pool(2);
  for (DType dtype : kQuantDTypes) {
    const SourcedWeight w = MakeQuantWeight(rng, dtype, 333, 517);
    const std::vector<float> x = RandomFloats(rng, 5 * 517);
    for (Isa isa : RunnableIsas()) {
      std::vector<float> y1(5 * 333), y2(5 * 333);
      MatMul(KernelContext{nullptr, isa}, x.data(), 5, w.View(), y1.data());
      MatMul(KernelContext{&pool, isa}, x.data(), 5, w.View(), y2.data());
      ASSERT_EQ(std::memcmp(y1.data(), y2.data(), y1.size() * 4), 0) << IsaName(isa);
    }
  }
}

}  // namespace
}  // namespace dsv3::ops
