#include "ops/transpose.h"

#include <algorithm>

#include "backend/thread_pool.h"
#include "util/dtype.h"

namespace dsv3::ops {

namespace scalar {

void TransposeRows(const float* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                   float* dst) {
  // 8x8 tiles, written along dst's rows: strided reads of 8 src rows stay in cache while 8
  // contiguous dst runs are written (writing with a power-of-two stride thrashes the cache sets).
  constexpr int64_t kTile = 8;
  for (int64_t rb = r0; rb < r1; rb += kTile) {
    const int64_t re = std::min(r1, rb + kTile);
    for (int64_t cb = 0; cb < cols; cb += kTile) {
      const int64_t ce = std::min(cols, cb + kTile);
      for (int64_t c = cb; c < ce; ++c)
        for (int64_t r = rb; r < re; ++r) dst[c * rows + r] = src[r * cols + c];
    }
  }
}

void CopyToBf16(const float* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst,
                int64_t ld_dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * ld_dst + c] = F32ToBf16(src[r * ld_src + c]);
}

void TransposeToBf16(const float* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst) {
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) dst[c * rows + r] = F32ToBf16(src[r * ld_src + c]);
}

}  // namespace scalar

void CopyToBf16(Isa isa, const float* src, int64_t rows, int64_t cols, int64_t ld_src,
                uint16_t* dst, int64_t ld_dst) {
  if (isa == Isa::kAvx512) return avx512::CopyToBf16(src, rows, cols, ld_src, dst, ld_dst);
  scalar::CopyToBf16(src, rows, cols, ld_src, dst, ld_dst);
}

void TransposeToBf16(Isa isa, const float* src, int64_t rows, int64_t cols, int64_t ld_src,
                     uint16_t* dst) {
  if (isa == Isa::kAvx512) return avx512::TransposeToBf16(src, rows, cols, ld_src, dst);
  scalar::TransposeToBf16(src, rows, cols, ld_src, dst);
}

void Transpose(const KernelContext& ctx, const float* src, int64_t rows, int64_t cols, float* dst) {
  if (rows <= 0 || cols <= 0) return;
  auto band = [&](int64_t r0, int64_t r1) {
    if (ctx.isa == Isa::kAvx512)
      avx512::TransposeRows(src, rows, cols, r0, r1, dst);
    else
      scalar::TransposeRows(src, rows, cols, r0, r1, dst);
  };
  constexpr int64_t kBand = 16;  // rows per task: one AVX-512 tile
  const int64_t bands = (rows + kBand - 1) / kBand;
  if (ctx.pool == nullptr || ctx.pool->num_threads() <= 1 || rows * cols < (int64_t{1} << 15)) {
    band(0, rows);
    return;
  }
  ctx.pool->ParallelFor(
      bands, [&](int64_t b0, int64_t b1) { band(b0 * kBand, std::min(rows, b1 * kBand)); });
}

}  // namespace dsv3::ops
