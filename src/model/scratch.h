// Buffers a forward pass reuses from call to call. They only grow, so after the first call of a
// given size (e.g. the prefill) decoding allocates nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dsv3 {

class ScratchBuffer {
 public:
  // A buffer of at least n floats; contents are unspecified.
  float* Get(int64_t n) {
    if (data_.size() < static_cast<size_t>(n)) data_.resize(static_cast<size_t>(n));
    return data_.data();
  }

 private:
  std::vector<float> data_;
};

}  // namespace dsv3
