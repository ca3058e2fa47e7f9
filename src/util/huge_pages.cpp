#include "util/huge_pages.h"

#include <sys/mman.h>

namespace dsv3 {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

void LargeBufferDeleter::operator()(uint8_t* p) const {
  if (p != nullptr) ::munmap(p, bytes);
}

size_t LargeBufferBytes(size_t bytes) {
  return (bytes == 0 ? 1 : (bytes + kHugePage - 1) / kHugePage) * kHugePage;
}

LargeBuffer AllocateLargeBuffer(size_t bytes) {
  const size_t rounded = LargeBufferBytes(bytes);
  // Over-map by one huge page and trim, so the buffer starts on a 2 MiB boundary (THP backs only
  // aligned 2 MiB ranges).
  const size_t mapped = rounded + kHugePage;
  void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return LargeBuffer(nullptr, LargeBufferDeleter{0});
  const auto base = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (base + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > base) ::munmap(raw, aligned - base);
  const uintptr_t end = base + mapped, used_end = aligned + rounded;
  if (end > used_end) ::munmap(reinterpret_cast<void*>(used_end), end - used_end);
  auto* p = reinterpret_cast<uint8_t*>(aligned);
#ifdef MADV_HUGEPAGE
  ::madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure leaves ordinary pages
#endif
  return LargeBuffer(p, LargeBufferDeleter{rounded});
}

}  // namespace dsv3
