// Buffers a forward pass reuses from call to call. They only grow, so after the first call of a
// given size (e.g. the prefill) decoding allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace dsv3 {

class ScratchBuffer {
 public:
  // A buffer of at least n floats starting on a 64-byte cache line; contents are unspecified.
  // Growing does not initialise the new storage (a prefill's buffers are hundreds of MB: zeroing
  // them cost ~7 % of its time). Aligned, so that rows of a multiple of 16 floats never split a
  // full-width AVX-512 load over two lines (malloc's large blocks start 16 bytes past a page):
  // bench-medium q4_0 decoding at depth 2048, where the attention reads q_lat and o_lat from
  // here, 5 % less time per token, tokens alternating with a 16-byte offset in one process.
  float* Get(int64_t n) {
    if (capacity_ < n) {
      data_.reset();  // the old buffer first: peak memory is the new size, not both
      capacity_ = 0;  // consistent if the allocation throws
      data_.reset(static_cast<float*>(
          ::operator new[](static_cast<size_t>(n) * sizeof(float), std::align_val_t{kAlignment})));
      capacity_ = n;
    }
    return data_.get();
  }

  static constexpr size_t kAlignment = 64;

 private:
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, std::align_val_t{kAlignment}); }
  };
  std::unique_ptr<float[], Free> data_;
  int64_t capacity_ = 0;
};

}  // namespace dsv3
