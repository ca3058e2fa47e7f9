// ops::Transpose on every ISA the CPU runs equals the naive definition exactly (it is a copy),
// for shapes that are not multiples of the 16x16 tile, on 1 and 2 threads; the bf16 copies
// (CopyToBf16, TransposeToBf16) give F32ToBf16's bits on every ISA.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "backend/thread_pool.h"
#include "ops/isa.h"
#include "ops/transpose.h"
#include "util/dtype.h"

namespace dsv3::ops {
namespace {

TEST(OpsTranspose, EqualsDefinitionOnEveryIsa) {
  ThreadPool pool(2);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!CpuSupports(isa)) continue;
    for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1},
                              {3, 17},
                              {16, 16},
                              {31, 5},
                              {257, 129},
                              {2048, 33},
                              {40, 1000}}) {
      std::vector<float> src(static_cast<size_t>(rows * cols));
      for (float& v : src) v = dist(rng);
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
        std::vector<float> dst(src.size(), -7.0f);
        Transpose(KernelContext{p, isa}, src.data(), rows, cols, dst.data());
        int64_t wrong = 0;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) wrong += dst[c * rows + r] != src[r * cols + c];
        EXPECT_EQ(wrong, 0) << IsaName(isa) << " " << rows << "x" << cols;
      }
    }
  }
}

float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Random values with the cases rounding can get wrong mixed in: ties (to even, both ways), a
// carry into the exponent, the largest finite value (rounds to inf), subnormals, zeros of both
// signs, infinities, quiet and signalling NaNs (which must stay NaN: the carry would make a
// signalling NaN with a low payload inf).
std::vector<float> Bf16Cases(int64_t n, std::mt19937& rng) {
  const float special[] = {FromBits(0x3f808000u),
                           FromBits(0x3f818000u),
                           FromBits(0x3fffffffu),
                           FromBits(0x7f7fffffu),
                           FromBits(0x00000001u),
                           FromBits(0x807fffffu),
                           0.0f,
                           -0.0f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(),
                           FromBits(0x7f800001u),
                           FromBits(0xff80ffffu)};
  std::uniform_real_distribution<float> dist(-3, 3);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[i] = i % 7 == 3 ? special[(i / 7) % std::size(special)] : dist(rng);
  return v;
}

TEST(OpsTranspose, Bf16CopiesRoundAsF32ToBf16OnEveryIsa) {
  std::mt19937 rng(11);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (!CpuSupports(isa)) continue;
    for (auto [rows, cols, ld] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1},
                                  {3, 17, 20},
                                  {16, 16, 16},
                                  {31, 5, 9},
                                  {257, 129, 130},
                                  {40, 192, 256}}) {
      const std::vector<float> src = Bf16Cases(rows * ld, rng);
      // A copy into rows cols + 3 apart (the gaps must stay as they were) and a transpose (with
      // 32 guard values past its end).
      const int64_t ld_dst = cols + 3;
      std::vector<uint16_t> copy(static_cast<size_t>(rows * ld_dst), 0xabcd);
      CopyToBf16(isa, src.data(), rows, cols, ld, copy.data(), ld_dst);
      std::vector<uint16_t> transposed(static_cast<size_t>(rows * cols + 32), 0xabcd);
      TransposeToBf16(isa, src.data(), rows, cols, ld, transposed.data());
      int64_t wrong = 0;
      for (int64_t i = rows * cols; i < rows * cols + 32; ++i) wrong += transposed[i] != 0xabcd;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < ld_dst; ++c) {
          const uint16_t want = c < cols ? F32ToBf16(src[r * ld + c]) : uint16_t{0xabcd};
          wrong += copy[r * ld_dst + c] != want;
          if (c < cols) wrong += transposed[c * rows + r] != want;
        }
      }
      EXPECT_EQ(wrong, 0) << IsaName(isa) << " " << rows << "x" << cols << " ld " << ld;
    }
  }
}

// The cases above are what F32ToBf16 says they are (so the comparison means something).
TEST(OpsTranspose, F32ToBf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(FromBits(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(F32ToBf16(FromBits(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(F32ToBf16(FromBits(0x3fffffffu)), 0x4000);  // carry into the exponent
  EXPECT_EQ(F32ToBf16(FromBits(0x7f7fffffu)), 0x7f80);  // to inf
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(FromBits(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(FromBits(0xff80ffffu)))));
}

}  // namespace
}  // namespace dsv3::ops
