// std::vector whose storage starts on a 64-byte cache line, for buffers the SIMD kernels stream
// through: rows whose length is a multiple of 16 floats then start on a line, and no full-width
// AVX-512 load splits across two (with malloc's 16-byte alignment every one did, which made the
// fused MLA attention over the KV cache ~1.5x slower).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace dsv3 {

template <typename T>
class CacheLineAllocator {
 public:
  using value_type = T;
  static constexpr std::size_t kAlignment = 64;

  CacheLineAllocator() noexcept = default;
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>& /*other*/) noexcept {}

  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kAlignment}));
  }
  void deallocate(T* p, std::size_t /*n*/) noexcept {
    ::operator delete (p, std::align_val_t{kAlignment});
  }
  template <typename U>
  bool operator==(const CacheLineAllocator<U>& /*other*/) const noexcept {
    return true;
  }
};

template <typename T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace dsv3
