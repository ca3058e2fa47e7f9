// ops::Gemm: every variant gives the scalar twin's bits (the documented summation order) for all
// four operand layouts, overwrite and accumulate, on 1 and 2 threads, for shapes that are not
// multiples of the tile, the panel or the k block; and the scalar twin equals an fp64 product
// within the bound of f32 summation (|error| <= K * 2^-24 * sum_k |a_mk b_nk|, plus the C term).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/thread_pool.h"
#include "ops/gemm.h"
#include "ops/isa.h"

namespace dsv3::ops {
namespace {

struct Shape {
  int64_t M, N, K;
};

constexpr Shape kShapes[] = {{1, 1, 1},      {3, 5, 7},      {12, 32, 16},   {13, 33, 17},
                             {200, 70, 300}, {40, 129, 513}, {385, 64, 256}, {7, 300, 2},
                             {193, 65, 0},   {600, 20, 40},  {20, 200, 300}};

// A(m, k) for a [M, K] matrix stored row-major (ld = K + pad) or transposed (ld = M + pad).
struct Stored {
  std::vector<float> data;
  GemmOperand op;
  float At(int64_t i, int64_t k) const {
    return op.transposed ? op.data[k * op.ld + i] : op.data[i * op.ld + k];
  }
};

// pad: extra leading dimension; 0 makes the buffer exactly the matrix (an over-read of its last
// row would leave it, for ASan to see).
Stored MakeOperand(int64_t rows, int64_t K, bool transposed, int64_t pad, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1, 1);
  Stored s;
  const int64_t ld = (transposed ? rows : K) + pad;
  s.data.resize(static_cast<size_t>((transposed ? K : rows) * ld));
  for (float& v : s.data) v = dist(rng);
  s.op = GemmOperand{s.data.data(), ld, transposed};
  return s;
}

TEST(OpsGemm, EveryIsaGivesTheScalarTwinsBits) {
  ThreadPool pool(2);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (const Shape& sh : kShapes) {
    for (int layout = 0; layout < 4; ++layout) {
      const int64_t pad = layout % 2 == 0 ? 3 : 0;
      const Stored a = MakeOperand(sh.M, sh.K, layout & 1, pad, rng);
      const Stored b = MakeOperand(sh.N, sh.K, layout & 2, 3 - pad, rng);
      const int64_t ldc = sh.N + 5;
      std::vector<float> c0(static_cast<size_t>(sh.M * ldc));
      for (float& v : c0) v = dist(rng);
      for (bool accumulate : {false, true}) {
        std::vector<float> want = c0;
        Gemm(KernelContext{nullptr, Isa::kScalar}, sh.M, sh.N, sh.K, a.op, b.op, want.data(), ldc,
             accumulate);
        // The fp64 product, and the bound of f32 summation in blocks.
        double worst = 0;
        for (int64_t m = 0; m < sh.M; ++m) {
          for (int64_t n = 0; n < sh.N; ++n) {
            double exact = accumulate ? c0[m * ldc + n] : 0.0, mag = std::fabs(exact);
            for (int64_t k = 0; k < sh.K; ++k) {
              const double p = static_cast<double>(a.At(m, k)) * b.At(n, k);
              exact += p;
              mag += std::fabs(p);
            }
            const double bound = (sh.K + 2) * std::ldexp(1.0, -24) * mag + 1e-30;
            worst = std::max(worst, std::fabs(want[m * ldc + n] - exact) / bound);
          }
        }
        EXPECT_LE(worst, 1.0) << sh.M << "x" << sh.N << "x" << sh.K << " layout " << layout;
        for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
          if (!CpuSupports(isa)) continue;
          for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool}) {
            std::vector<float> got = c0;
            Gemm(KernelContext{p, isa}, sh.M, sh.N, sh.K, a.op, b.op, got.data(), ldc, accumulate);
            int64_t wrong = 0;
            for (size_t i = 0; i < got.size(); ++i)
              wrong += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
            EXPECT_EQ(wrong, 0) << IsaName(isa) << " " << sh.M << "x" << sh.N << "x" << sh.K
                                << " layout " << layout << " accumulate " << accumulate
                                << (p ? " 2 threads" : " 1 thread");
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace dsv3::ops
