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

}  // namespace
}  // namespace dsv3
