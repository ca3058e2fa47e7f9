// util/huge_pages.h: large buffers start on a 2 MiB boundary, span whole 2 MiB pages, and say
// (LargeBufferBytes) what their deleter unmaps.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

#include "util/huge_pages.h"

namespace dsv3 {
namespace {

constexpr size_t kPage = size_t{2} << 20;

TEST(HugePages, BuffersAreWholeAlignedHugePages) {
  EXPECT_EQ(LargeBufferBytes(0), kPage);
  EXPECT_EQ(LargeBufferBytes(1), kPage);
  EXPECT_EQ(LargeBufferBytes(kPage), kPage);
  EXPECT_EQ(LargeBufferBytes(kPage + 1), 2 * kPage);
  for (size_t bytes : {size_t{1}, kPage, 3 * kPage + 5}) {
    LargeBuffer buffer = AllocateLargeBuffer(bytes);
    ASSERT_NE(buffer, nullptr) << bytes;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buffer.get()) % kPage, 0u) << bytes;
    EXPECT_EQ(buffer.get_deleter().bytes, LargeBufferBytes(bytes)) << bytes;
    // Every byte of the mapping is writable.
    std::memset(buffer.get(), 0x5a, LargeBufferBytes(bytes));
    EXPECT_EQ(buffer.get()[LargeBufferBytes(bytes) - 1], 0x5a);
  }
}

// LargeVector: small buffers on a 64-byte line, from 1 MiB on whole 2 MiB pages; values kept
// across growth past the threshold and back (ASan / the munmap of a wrong size would catch a
// deallocation that does not match its allocation).
TEST(HugePages, LargeVectorSwitchesToHugePagesFrom1MiB) {
  LargeVector<float> v(1000, 1.5f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % 64, 0u);
  const size_t big = HugePageAllocator<float>::kHugeFrom / sizeof(float) + 3;
  v.resize(big, 2.5f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % kPage, 0u);
  EXPECT_EQ(v[999], 1.5f);
  EXPECT_EQ(v[big - 1], 2.5f);
  v.resize(10);
  v.shrink_to_fit();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % 64, 0u);
  EXPECT_EQ(v[9], 1.5f);
  LargeVector<float> copy = LargeVector<float>(big, 4.0f);
  EXPECT_EQ(copy[big / 2], 4.0f);
}

}  // namespace
}  // namespace dsv3
