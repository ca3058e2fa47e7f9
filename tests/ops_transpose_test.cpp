// ops::Transpose on every ISA the CPU runs equals the naive definition exactly (it is a copy),
// for shapes that are not multiples of the 16x16 tile, on 1 and 2 threads.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "backend/thread_pool.h"
#include "ops/isa.h"
#include "ops/transpose.h"

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

}  // namespace
}  // namespace dsv3::ops
