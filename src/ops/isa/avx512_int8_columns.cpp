// AVX-512 VNNI VecMatInt8 (ops/int8_columns.h has the arithmetic and the layout; the scalar twin
// is in ops/int8_columns.cpp). Per output group: a_g = x * s[g] in vectors, quantized block by
// block (avx512_int8_blocks.h's QuantizeBlock, the int8 path's bits), then the group's two tiles
// of 16 columns together: per block, each line of a tile times 4 broadcast codes (vpdpbusd)
// into two chains per tile (q8_0: even and odd lines; q4_0: low and high nibbles), so four
// independent chains hide vpdpbusd's latency; then the block's f32 step per tile.
#include "ops/isa/simd_intrinsics.h"

#include <cstdint>

#include "ops/int8_columns.h"
#include "ops/isa/avx512_int8_blocks.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx512 {

namespace {

// Each group requests the lines of the group this many further on (its codes as its own lines are
// read, its scales before): the matrix streams from DRAM, and without the requests the kernel
// waited on it (bench-medium q4_0 decode, 8 heads' W_UK [128, 512] a thread: 27 us from DRAM
// against 6.5 from the L2; with them 15). Distances 1-3 measured alike in the model, 4-8 less.
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
  for (int64_t k = 0; k * kBlock < n; ++k) {
    const QuantizedBlock qb = QuantizeBlock(a + k * kBlock, std::min(kBlock, n - k * kBlock));
    _mm256_store_si256(reinterpret_cast<__m256i*>(acts.q + k * kBlock), qb.codes);
    acts.d[k] = qb.d;
    acts.bias[k] = -offset * qb.sum;
  }
}

__m512i Bcast(const int8_t* q) {
  return _mm512_set1_epi32(LoadDword(reinterpret_cast<const uint8_t*>(q)));
}

// y[0, 32) of the group whose two tiles start at t0 and t1 (blocks of 512 bytes).
void GroupQ8(const uint8_t* t0, const uint8_t* t1, int64_t blocks, const GroupActs& acts,
             int64_t ahead, float* y) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < blocks; ++k) {
    const uint8_t* p0 = t0 + k * 512;
    const uint8_t* p1 = t1 + k * 512;
    __m512i s0a = _mm512_set1_epi32(acts.bias[k]), s1a = s0a;
    __m512i s0b = _mm512_setzero_si512(), s1b = s0b;
    for (int l = 0; l < 8; l += 2) {
      _mm_prefetch(reinterpret_cast<const char*>(p0 + l * 64 + ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p0 + l * 64 + 64 + ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p1 + l * 64 + ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p1 + l * 64 + 64 + ahead), _MM_HINT_T0);
      const __m512i xa = Bcast(acts.q + k * kBlock + 4 * l);
      const __m512i xb = Bcast(acts.q + k * kBlock + 4 * l + 4);
      s0a = _mm512_dpbusd_epi32(s0a, _mm512_loadu_si512(p0 + l * 64), xa);
      s1a = _mm512_dpbusd_epi32(s1a, _mm512_loadu_si512(p1 + l * 64), xa);
      s0b = _mm512_dpbusd_epi32(s0b, _mm512_loadu_si512(p0 + l * 64 + 64), xb);
      s1b = _mm512_dpbusd_epi32(s1b, _mm512_loadu_si512(p1 + l * 64 + 64), xb);
    }
    const __m512 d = _mm512_set1_ps(acts.d[k]);
    acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0a, s0b)), d, acc0);
    acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s1a, s1b)), d, acc1);
  }
  _mm512_storeu_ps(y, acc0);
  _mm512_storeu_ps(y + 16, acc1);
}

// The same for q4_0 (blocks of 256 bytes: low nibbles rows 0-15 of the block, high 16-31).
void GroupQ4(const uint8_t* t0, const uint8_t* t1, int64_t blocks, const GroupActs& acts,
             int64_t ahead, float* y) {
  const __m512i low = _mm512_set1_epi8(15);
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int64_t k = 0; k < blocks; ++k) {
    const uint8_t* p0 = t0 + k * 256;
    const uint8_t* p1 = t1 + k * 256;
    __m512i s0a = _mm512_set1_epi32(acts.bias[k]), s1a = s0a;
    __m512i s0b = _mm512_setzero_si512(), s1b = s0b;
    for (int l = 0; l < 4; ++l) {
      _mm_prefetch(reinterpret_cast<const char*>(p0 + l * 64 + ahead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(p1 + l * 64 + ahead), _MM_HINT_T0);
      const __m512i xa = Bcast(acts.q + k * kBlock + 4 * l);
      const __m512i xb = Bcast(acts.q + k * kBlock + 16 + 4 * l);
      const __m512i v0 = _mm512_loadu_si512(p0 + l * 64), v1 = _mm512_loadu_si512(p1 + l * 64);
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
  const int64_t tile_bytes = blocks * (q8 ? 512 : 256);
  GroupActs acts;
  for (int64_t g = 0; g < w.m / kBlock; ++g) {
    for (int64_t i = 0; i < n; i += 16)  // past the matrix: the next head's in a model's copy
      _mm_prefetch(reinterpret_cast<const char*>(w.scale + (g + kAhead) * n + i), _MM_HINT_T0);
    QuantizeGroup(x, w.scale + g * n, n, q8 ? 128 : 8, acts);
    const uint8_t* t0 = w.codes + 2 * g * tile_bytes;
    if (q8)
      GroupQ8(t0, t0 + tile_bytes, blocks, acts, kAhead * 2 * tile_bytes, y + g * kBlock);
    else
      GroupQ4(t0, t0 + tile_bytes, blocks, acts, kAhead * 2 * tile_bytes, y + g * kBlock);
  }
}

}  // namespace dsv3::ops::avx512
