// AVX-512 VecMatFp8 (ops/fp8_columns.h has the arithmetic and the layout; the scalar twin is in
// ops/fp8_columns.cpp). Per column group (up to 16 vectors of 16 columns, the sums in registers)
// and block row: each row's codes, 16 at a time, widen to words whose seven low bits move up by
// 7 with the sign kept at bit 15 -- the f16 of e4m3 * 2^-8 -- and convert to f32 (vcvtph2ps),
// one fma per 16 codes into the column's chain; then the block row's scales, once per block row.
// Five vector operations per 16 codes where AccumulateRows spends ~10. (Fp8ToF32 on 16 codes in
// ymm words: 26.4 us for 8 heads of [128, 512] from the L2, key_product_bench; Fp8ToF32x2 on 32
// in zmm words: 29.4.)
#include "ops/isa/simd_intrinsics.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "ops/fp8_columns.h"
#include "ops/isa/avx512_fp8_f16.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx512 {

namespace {

// Bytes ahead of the row being read that each row requests (the matrix is one stream). 8 heads of
// [128, 512] from DRAM on one core (key_product_bench): 36.4 us without requests, 34-37 with 512
// or 1024 bytes ahead, 30-31.5 with 4096, 33-35 with 8192.
constexpr int64_t kAhead = 4096;

// y [16 NV] of the group whose rows (16 NV bytes each) start at g; end: the matrix's end.
template <int NV>
void Group(const uint8_t* g, const float* x, int64_t n, int64_t block_rows, const float* scale,
           int64_t scale_stride, const uint8_t* end, float* y) {
  constexpr int64_t kWidth = 16 * NV;
  for (int64_t b0 = 0; b0 < n; b0 += block_rows) {
    __m512 acc[NV];
    for (int v = 0; v < NV; ++v) acc[v] = _mm512_setzero_ps();
    for (int64_t i = b0; i < b0 + block_rows; ++i) {
      const uint8_t* row = g + i * kWidth;
      for (int64_t l = 0; l < kWidth; l += 64)
        if (kAhead + l < end - row)
          _mm_prefetch(reinterpret_cast<const char*>(row + kAhead + l), _MM_HINT_T0);
      const __m512 xi = _mm512_set1_ps(x[i]);
      for (int v = 0; v < NV; ++v)
        acc[v] = _mm512_fmadd_ps(
            xi, Fp8ToF32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * v))), acc[v]);
    }
    const float* s = scale + b0 / block_rows * scale_stride;
    for (int v = 0; v < NV; ++v) {
      const __m512 prev = b0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(y + 16 * v);
      _mm512_storeu_ps(y + 16 * v, _mm512_fmadd_ps(acc[v], _mm512_set1_ps(s[v]), prev));
    }
  }
}

using GroupFn = void (*)(const uint8_t*, const float*, int64_t, int64_t, const float*, int64_t,
                         const uint8_t*, float*);

template <int... NV>
constexpr GroupFn kGroups[] = {Group<NV + 1>...};

template <int... I>
constexpr const GroupFn* GroupTable(std::integer_sequence<int, I...>) {
  return kGroups<I...>;
}

}  // namespace

void VecMatFp8(const Fp8Columns& w, const float* x, float* y) {
  static_assert(kFp8ColumnGroup == 256);
  const GroupFn* groups = GroupTable(std::make_integer_sequence<int, 16>());
  const uint8_t* end = w.codes + Fp8ColumnsBytes(w.n, w.m);
  for (int64_t g0 = 0; g0 < w.m; g0 += kFp8ColumnGroup) {
    const int64_t nv = std::min(kFp8ColumnGroup, w.m - g0) / 16;
    // Scales: S[b][g0 / 16 + v], block rows m / 16 apart.
    groups[nv - 1](w.codes + g0 * w.n, x, w.n, w.block_rows, w.scale + g0 / 16, w.m / 16, end,
                   y + g0);
  }
}

}  // namespace dsv3::ops::avx512
