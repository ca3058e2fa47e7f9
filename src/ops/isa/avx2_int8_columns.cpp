// AVX2 VecMatInt8 (ops/int8_columns.h has the arithmetic and the layout; the scalar twin is in
// ops/int8_columns.cpp), with the operand split of the AVX2 int8 GEMV (avx2_int8_kernels.h) so
// vpmaddubsw's int16 pair sums never saturate: q8_0 |c| times sign(c) * q_a (the stored c + 128
// made signed again, so no offset is owed), q4_0 the stored nibble (c + 8) times q_a, owing
// 8 * sum(q_a). vpmaddwd against ones widens the pairs; a line's 128 bytes are four ymm of 8
// columns. The integer sums are exact, so the f32 steps give the scalar twin's bits.
#include "ops/isa/simd_intrinsics.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "ops/int8_columns.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int64_t kBlock = 32;

__m256i Bcast(const int8_t* q) {
  int32_t v;
  std::memcpy(&v, q, 4);
  return _mm256_set1_epi32(v);
}

__m256i Load(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// 8 columns' int32 partial dots of one line half v (4 bytes a column) with the codes xb.
__m256i DotQ8(__m256i v, __m256i xb, __m256i ones) {
  const __m256i c = _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80)));
  const __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(xb, c));
  return _mm256_madd_epi16(p, ones);
}
__m256i DotQ4(__m256i nibbles, __m256i xb, __m256i ones) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles, xb), ones);
}

}  // namespace

void VecMatInt8(const Int8Columns& w, const float* x, float* y) {
  const bool q8 = w.dtype == DType::kI8;
  const int64_t n = w.n, blocks = (n + kBlock - 1) / kBlock;
  const int64_t block_bytes = q8 ? 1024 : 512, group_bytes = blocks * block_bytes;
  const __m256i ones = _mm256_set1_epi16(1), low = _mm256_set1_epi8(15);
  alignas(32) float a[kMaxInt8ColumnRows];
  alignas(32) int8_t q[kMaxInt8ColumnRows];
  float d[kMaxInt8ColumnRows / kBlock];
  int32_t sum[kMaxInt8ColumnRows / kBlock];
  for (int64_t g = 0; g < w.m / kBlock; ++g) {
    const float* s_g = w.scale + g * n;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_store_ps(a + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(s_g + i)));
    for (; i < n; ++i) a[i] = x[i] * s_g[i];
    QuantizeActBlocks(a, n, q, d, sum);
    // The group's 4 ymm of 8 columns, bytes 32 part .. 32 part + 31 of each 128-byte line, all
    // four at once so the group's bytes are read front to back (one part at a time, every pass
    // skipping 96 of each 128 bytes, read W_UK from DRAM 2.4 times slower).
    const uint8_t* group = w.codes + g * group_bytes;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                     _mm256_setzero_ps()};
    for (int64_t k = 0; k < blocks; ++k) {
      const uint8_t* p = group + k * block_bytes;
      const int8_t* qk = q + k * kBlock;
      __m256i isum[4];
      for (int part = 0; part < 4; ++part)
        isum[part] = q8 ? _mm256_setzero_si256() : _mm256_set1_epi32(-8 * sum[k]);
      if (q8) {
        for (int l = 0; l < 8; ++l) {
          const __m256i xb = Bcast(qk + 4 * l);
          for (int part = 0; part < 4; ++part)
            isum[part] =
                _mm256_add_epi32(isum[part], DotQ8(Load(p + l * 128 + part * 32), xb, ones));
        }
      } else {
        for (int l = 0; l < 4; ++l) {
          const __m256i xlo = Bcast(qk + 4 * l), xhi = Bcast(qk + 16 + 4 * l);
          for (int part = 0; part < 4; ++part) {
            const __m256i v = Load(p + l * 128 + part * 32);
            const __m256i lo = DotQ4(_mm256_and_si256(v, low), xlo, ones);
            const __m256i hi = DotQ4(_mm256_and_si256(_mm256_srli_epi16(v, 4), low), xhi, ones);
            isum[part] = _mm256_add_epi32(isum[part], _mm256_add_epi32(lo, hi));
          }
        }
      }
      const __m256 d_k = _mm256_set1_ps(d[k]);
      for (int part = 0; part < 4; ++part)
        acc[part] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[part]), d_k, acc[part]);
    }
    for (int part = 0; part < 4; ++part) _mm256_storeu_ps(y + g * kBlock + part * 8, acc[part]);
  }
}

}  // namespace dsv3::ops::avx2
