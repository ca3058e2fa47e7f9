// Large read-mostly buffers (weights read into memory, the bandwidth probe's buffer) backed by
// transparent huge pages where the kernel offers them (THP "always" or "madvise").
//
// Streaming gigabytes of weights through 4 KiB pages costs a TLB miss, and a page walk, every
// 4 KiB; the packed prefill kernels read 16 rows a row length apart at a time, so 16 walks are in
// flight at once. With 2 MiB pages the walks all but vanish. Where THP is off the advice is
// ignored and the buffer is ordinary memory: behaviour never depends on it, only speed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "util/aligned_vector.h"

namespace dsv3 {

struct LargeBufferDeleter {
  size_t bytes = 0;
  void operator()(uint8_t* p) const;
};
using LargeBuffer = std::unique_ptr<uint8_t, LargeBufferDeleter>;

// `bytes` bytes (rounded up to a multiple of 2 MiB, at least one), 2 MiB aligned, uninitialised,
// with MADV_HUGEPAGE advice. nullptr when the memory cannot be mapped.
LargeBuffer AllocateLargeBuffer(size_t bytes);

// The mapped size AllocateLargeBuffer(bytes) gives (what its deleter unmaps).
size_t LargeBufferBytes(size_t bytes);

// An allocator for std::vector buffers the kernels stream, such as the KV cache: from 1 MiB on,
// AllocateLargeBuffer's 2 MiB pages (the hardware prefetchers stop at every page boundary, and
// each 4 KiB page costs a TLB miss); below, CacheLineAllocator's 64-byte aligned operator new.
template <typename T>
class HugePageAllocator {
 public:
  using value_type = T;
  static constexpr std::size_t kHugeFrom = std::size_t{1} << 20;

  HugePageAllocator() noexcept = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>& /*other*/) noexcept {}

  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kHugeFrom) return CacheLineAllocator<T>().allocate(n);
    LargeBuffer buffer = AllocateLargeBuffer(bytes);
    if (buffer == nullptr) throw std::bad_alloc();
    return reinterpret_cast<T*>(buffer.release());
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kHugeFrom) return CacheLineAllocator<T>().deallocate(p, n);
    LargeBufferDeleter{LargeBufferBytes(bytes)}(reinterpret_cast<uint8_t*>(p));
  }
  template <typename U>
  bool operator==(const HugePageAllocator<U>& /*other*/) const noexcept {
    return true;
  }
};

template <typename T>
using LargeVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace dsv3
