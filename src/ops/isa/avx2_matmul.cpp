// avx2 MatMul kernel. Placeholder: forwards to the scalar reference until the SIMD kernel lands.
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

void MatMulRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                float* y) {
  scalar::MatMulRows(x, T, w, row_begin, row_end, y);
}

}  // namespace dsv3::ops::avx2
