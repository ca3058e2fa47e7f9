// Buffers a forward pass reuses from call to call. They only grow, so after the first call of a
// given size (e.g. the prefill) decoding allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace dsv3 {

class ScratchBuffer {
 public:
  // A buffer of at least n floats; contents are unspecified. Growing does not initialise the
  // new storage (a prefill's buffers are hundreds of MB: zeroing them cost ~7 % of its time).
  float* Get(int64_t n) {
    if (capacity_ < n) {
      data_.reset();  // the old buffer first: peak memory is the new size, not both
      capacity_ = 0;  // consistent if the allocation throws
      data_ = std::make_unique_for_overwrite<float[]>(static_cast<size_t>(n));
      capacity_ = n;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<float[]> data_;
  int64_t capacity_ = 0;
};

}  // namespace dsv3
