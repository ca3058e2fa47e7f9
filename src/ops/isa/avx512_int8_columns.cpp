// AVX-512 VNNI VecMatInt8 (ops/int8_columns.h has the arithmetic and the layout; the scalar twin
// is in ops/int8_columns.cpp). Per output group: a_g = x * s[g] in vectors, quantized block by
// block (QuantizeActBlocks, the int8 path's bits), then the group's two
// halves of 16 columns together: per block, each line's half times 4 broadcast codes (vpdpbusd)
// into two chains per half (q8_0: even and odd lines; q4_0: low and high nibbles), so four
// independent chains hide vpdpbusd's latency; then the block's f32 step per half.
#include "ops/isa/simd_intrinsics.h"

#include <cstdint>

#include "ops/int8_columns.h"
#include "ops/isa/avx512_int8_blocks.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx512 {

namespace {

// Each group requests the lines of the group this many further on (its codes as its own lines are
// read, its scales before): the matrix streams from DRAM, and without the requests the kernel
// waits on it (bench/key_product_bench.cpp, 8 heads' W_UK [128, 512] on one core: q8_0 31.4 us
// from DRAM without them, 20.7-22.7 with 1-4 groups ahead, 6.6 from the L2; q4_0 8.0, 7.0-8.3,
// 6.1). 2 measured best in the model (q4_0; 1-3 alike, 4-8 less).
constexpr int64_t kAhead = 2;

struct GroupActs {
  alignas(64) int8_t q[kMaxInt8ColumnRows];
  float d[kMaxInt8ColumnRows / kBlock];
  int32_t bias[kMaxInt8ColumnRows / kBlock];  // -offset * sum(q) per block
};

// a_g = x * s_g quantized per block of 32 into acts.
void QuantizeGroup(const float* x, const float* s_g, int64_t n, int32_t offset, GroupActs& acts) {
  alignas(64) float a[kMaxInt8ColumnRows];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_store_ps(a + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(s_g + i)));
  for (; i < n; ++i) a[i] = x[i] * s_g[i];
  QuantizeActBlocks(a, n, acts.q, acts.d, acts.bias);
  for (int64_t k = 0; k * kBlock < n; ++k) acts.bias[k] *= -offset;  // the codes' sum until here
}

__m512i Bcast(const int8_t* q) {
  return _mm512_set1_epi32(LoadDword(reinterpret_cast<const uint8_t*>(q)));
}

// y[0, 32) of the group whose blocks (of 1024 bytes: 8 lines) start at g.
void GroupQ8(const uint8_t* g, int64_t blocks, const GroupActs& acts, int64_t ahead, float* y) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < blocks; ++k) {
    const uint8_t* p0 = g + k * 1024;  // columns 0-15 of each 128-byte line
    const uint8_t* p1 = p0 + 64;       // columns 16-31
    __m512i s0a = _mm512_set1_epi32(acts.bias[k]), s1a = s0a;
    __m512i s0b = _mm512_setzero_si512(), s1b = s0b;
    for (int l = 0; l < 8; l += 2) {
      _mm_prefetch(reinterpret_cast<const char*>(p0 + l * 128 + ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p1 + l * 128 + ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p0 + l * 128 + 128 + ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p1 + l * 128 + 128 + ahead), _MM_HINT_T0);
      const __m512i xa = Bcast(acts.q + k * kBlock + 4 * l);
      const __m512i xb = Bcast(acts.q + k * kBlock + 4 * l + 4);
      s0a = _mm512_dpbusd_epi32(s0a, _mm512_loadu_si512(p0 + l * 128), xa);
      s1a = _mm512_dpbusd_epi32(s1a, _mm512_loadu_si512(p1 + l * 128), xa);
      s0b = _mm512_dpbusd_epi32(s0b, _mm512_loadu_si512(p0 + l * 128 + 128), xb);
      s1b = _mm512_dpbusd_epi32(s1b, _mm512_loadu_si512(p1 + l * 128 + 128), xb);
    }
    const __m512 d = _mm512_set1_ps(acts.d[k]);
    acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0a, s0b)), d, acc0);
    acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s1a, s1b)), d, acc1);
  }
  _mm512_storeu_ps(y, acc0);
  _mm512_storeu_ps(y + 16, acc1);
}

// The same for q4_0 (blocks of 512 bytes: 4 lines; low nibbles rows 0-15 of the block, high
// 16-31).
void GroupQ4(const uint8_t* g, int64_t blocks, const GroupActs& acts, int64_t ahead, float* y) {
  const __m512i low = _mm512_set1_epi8(15);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < blocks; ++k) {
    const uint8_t* p0 = g + k * 512;
    const uint8_t* p1 = p0 + 64;
    __m512i s0a = _mm512_set1_epi32(acts.bias[k]), s1a = s0a;
    __m512i s0b = _mm512_setzero_si512(), s1b = s0b;
    for (int l = 0; l < 4; ++l) {
      _mm_prefetch(reinterpret_cast<const char*>(p0 + l * 128 + ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p1 + l * 128 + ahead), _MM_HINT_T0);
      const __m512i xa = Bcast(acts.q + k * kBlock + 4 * l);
      const __m512i xb = Bcast(acts.q + k * kBlock + 16 + 4 * l);
      const __m512i v0 = _mm512_loadu_si512(p0 + l * 128), v1 = _mm512_loadu_si512(p1 + l * 128);
      s0a = _mm512_dpbusd_epi32(s0a, _mm512_and_si512(v0, low), xa);
      s1a = _mm512_dpbusd_epi32(s1a, _mm512_and_si512(v1, low), xa);
      s0b = _mm512_dpbusd_epi32(s0b, _mm512_and_si512(_mm512_srli_epi16(v0, 4), low), xb);
      s1b = _mm512_dpbusd_epi32(s1b, _mm512_and_si512(_mm512_srli_epi16(v1, 4), low), xb);
    }
    const __m512 d = _mm512_set1_ps(acts.d[k]);
    acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0a, s0b)), d, acc0);
    acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s1a, s1b)), d, acc1);
  }
  _mm512_storeu_ps(y, acc0);
  _mm512_storeu_ps(y + 16, acc1);
}

}  // namespace

void VecMatInt8(const Int8Columns& w, const float* x, float* y) {
  const bool q8 = w.dtype == DType::kI8;
  const int64_t n = w.n, blocks = (n + kBlock - 1) / kBlock;
  const int64_t group_bytes = blocks * (q8 ? 1024 : 512);
  GroupActs acts;
  for (int64_t g = 0; g < w.m / kBlock; ++g) {
    for (int64_t i = 0; i < n; i += 16)  // past the matrix: the next head's in a model's copy
      _mm_prefetch(reinterpret_cast<const char*>(w.scale + (g + kAhead) * n + i), _MM_HINT_T0);
    QuantizeGroup(x, w.scale + g * n, n, q8 ? 128 : 8, acts);
    const uint8_t* group = w.codes + g * group_bytes;
    if (q8)
      GroupQ8(group, blocks, acts, kAhead * group_bytes, y + g * kBlock);
    else
      GroupQ4(group, blocks, acts, kAhead * group_bytes, y + g * kBlock);
  }
}

}  // namespace dsv3::ops::avx512
