// AVX2 + F16C VecMatFp8 (ops/fp8_columns.h has the arithmetic and the layout; the scalar twin is
// in ops/fp8_columns.cpp). A column group's rows are read in passes of up to 64 columns (eight
// vectors of sums in registers), each row's 16 codes at a time widened to the f16 of
// e4m3 * 2^-8 (seven low bits up by 7, sign at bit 15), converted (vcvtph2ps) and summed with one
// fma per 8 codes; then the block row's scales.
#include "ops/isa/simd_intrinsics.h"

#include <algorithm>
#include <cstdint>

#include "ops/fp8_columns.h"
#include "ops/isa/avx2_fp8_f16.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

namespace {

// Rows ahead of the row being read that each row requests: the first pass over a group requests
// whole rows, later passes their own columns (from the L2 by then). 8 heads of [128, 512] from
// DRAM on one core (key_product_bench): each pass requesting its own columns 8 rows on 78 us,
// the first pass whole rows 50-56 (8 or 16 rows on), from the L2 32.
constexpr int64_t kAheadRows = 16;

// y [16 P] of the pass whose columns start at byte p of the group's first row (rows `width`
// apart), requesting ahead_bytes of each row kAheadRows on; scale: S of the pass's first 16
// columns, block rows `scale_stride` apart.
template <int P>
void Pass(const uint8_t* p, int64_t width, int64_t ahead_bytes, const float* x, int64_t n,
          int64_t block_rows, const float* scale, int64_t scale_stride, float* y) {
  for (int64_t b0 = 0; b0 < n; b0 += block_rows) {
    __m256 acc[2 * P];
    for (int v = 0; v < 2 * P; ++v) acc[v] = _mm256_setzero_ps();
    for (int64_t i = b0; i < b0 + block_rows; ++i) {
      const uint8_t* row = p + i * width;
      if (i + kAheadRows < n)
        for (int64_t l = 0; l < ahead_bytes; l += 64)
          _mm_prefetch(reinterpret_cast<const char*>(row + kAheadRows * width + l), _MM_HINT_T0);
      const __m256 xi = _mm256_set1_ps(x[i]);
      for (int q = 0; q < P; ++q) {
        __m256 lo, hi;
        Fp8ToF32x2(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * q)), &lo, &hi);
        acc[2 * q] = _mm256_fmadd_ps(xi, lo, acc[2 * q]);
        acc[2 * q + 1] = _mm256_fmadd_ps(xi, hi, acc[2 * q + 1]);
      }
    }
    const float* s = scale + b0 / block_rows * scale_stride;
    for (int v = 0; v < 2 * P; ++v) {
      const __m256 prev = b0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(y + 8 * v);
      _mm256_storeu_ps(y + 8 * v, _mm256_fmadd_ps(acc[v], _mm256_set1_ps(s[v / 2]), prev));
    }
  }
}

}  // namespace

void VecMatFp8(const Fp8Columns& w, const float* x, float* y) {
  for (int64_t g0 = 0; g0 < w.m; g0 += kFp8ColumnGroup) {
    const int64_t width = std::min(kFp8ColumnGroup, w.m - g0);
    for (int64_t c = 0; c < width; c += 64) {
      const uint8_t* p = w.codes + g0 * w.n + c;
      const float* s = w.scale + (g0 + c) / 16;
      float* out = y + g0 + c;
      switch (std::min<int64_t>(64, width - c) / 16) {
        case 4:
          Pass<4>(p, width, c == 0 ? width : 0, x, w.n, w.block_rows, s, w.m / 16, out);
          break;
        case 3:
          Pass<3>(p, width, c == 0 ? width : 0, x, w.n, w.block_rows, s, w.m / 16, out);
          break;
        case 2:
          Pass<2>(p, width, c == 0 ? width : 0, x, w.n, w.block_rows, s, w.m / 16, out);
          break;
        default:
          Pass<1>(p, width, c == 0 ? width : 0, x, w.n, w.block_rows, s, w.m / 16, out);
          break;
      }
    }
  }
}

}  // namespace dsv3::ops::avx2
