// ScratchBuffer (model/scratch.h): the buffers the forward pass reuses.
#include "model/scratch.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace dsv3 {
namespace {

// Every buffer, small or large (malloc serves large ones from mmap, 16 bytes past a page), starts
// on a 64-byte line, and a buffer keeps its storage until asked for more.
TEST(ScratchBuffer, StartsOnACacheLineAndOnlyGrows) {
  ScratchBuffer buffer;
  float* last = nullptr;
  for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{1000}, int64_t{1} << 20, int64_t{3} << 20}) {
    float* p = buffer.Get(n);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u) << n;
    p[0] = 1.0f;
    p[n - 1] = 2.0f;  // the whole range is usable
    last = p;
  }
  EXPECT_EQ(buffer.Get(5), last);  // smaller requests keep the buffer
}

}  // namespace
}  // namespace dsv3
