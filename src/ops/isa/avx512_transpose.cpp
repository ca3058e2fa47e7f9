// AVX-512 transpose: 16x16 tiles through registers, masked at the ragged edges; and the bf16
// copies, rounded as F32ToBf16 rounds.
#include <algorithm>

#include "ops/isa/avx512_transpose16.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/transpose.h"

namespace dsv3::ops::avx512 {

namespace {

// 16 floats rounded to bf16 as F32ToBf16 does (nearest even; NaN stays NaN, made quiet) and
// narrowed to 16 contiguous bf16. Integer arithmetic on the bits, so every input (subnormals and
// overflow to inf included) gives the scalar function's bits (vcvtne2ps2bf16, which the bf16-dot
// MatMul's x takes, flushes subnormals).
__m256i F32ToBf16x16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i high = _mm512_srli_epi32(u, 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  const __m512i bias =
      _mm512_add_epi32(_mm512_and_si512(high, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fff));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, bias), 16);
  return _mm512_cvtepi32_epi16(
      _mm512_mask_mov_epi32(rounded, nan, _mm512_or_si512(high, _mm512_set1_epi32(0x40))));
}

// Calls tile(rb, nr, cb, nc, v) for every 16x16 block of src's rows [r0, r1) (row stride ld,
// cols columns), v[j] = src[rb : rb + nr, cb + j] for j < nc (lanes past nr and columns past nc
// zero): loaded with masks at the ragged edges and transposed in registers.
template <typename Tile>
void ForEachTransposedTile(const float* src, int64_t ld, int64_t r0, int64_t r1, int64_t cols,
                           Tile&& tile) {
  for (int64_t rb = r0; rb < r1; rb += 16) {
    const int64_t nr = std::min<int64_t>(16, r1 - rb);
    for (int64_t cb = 0; cb < cols; cb += 16) {
      const int64_t nc = std::min<int64_t>(16, cols - cb);
      const __mmask16 cmask = static_cast<__mmask16>((1u << nc) - 1);
      __m512 v[16];
      for (int64_t i = 0; i < 16; ++i)  // v[i] = src[rb + i, cb:cb + 16]
        v[i] =
            i < nr ? _mm512_maskz_loadu_ps(cmask, src + (rb + i) * ld + cb) : _mm512_setzero_ps();
      Transpose16x16(v);
      tile(rb, nr, cb, nc, v);
    }
  }
}

}  // namespace

void TransposeRows(const float* src, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                   float* dst) {
  ForEachTransposedTile(src, cols, r0, r1, cols,
                        [&](int64_t rb, int64_t nr, int64_t cb, int64_t nc, const __m512* v) {
                          const __mmask16 rmask = static_cast<__mmask16>((1u << nr) - 1);
                          for (int64_t j = 0; j < nc; ++j)  // dst[cb + j, rb:rb + nr]
                            _mm512_mask_storeu_ps(dst + (cb + j) * rows + rb, rmask, v[j]);
                        });
}

void CopyToBf16(const float* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst,
                int64_t ld_dst) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = src + r * ld_src;
    uint16_t* out = dst + r * ld_dst;
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c),
                          F32ToBf16x16(_mm512_loadu_ps(in + c)));
    if (c < cols) {
      const __mmask16 m = static_cast<__mmask16>((1u << (cols - c)) - 1);
      _mm256_mask_storeu_epi16(out + c, m, F32ToBf16x16(_mm512_maskz_loadu_ps(m, in + c)));
    }
  }
}

void TransposeToBf16(const float* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst) {
  ForEachTransposedTile(src, ld_src, 0, rows, cols,
                        [&](int64_t rb, int64_t nr, int64_t cb, int64_t nc, const __m512* v) {
                          const __mmask16 rmask = static_cast<__mmask16>((1u << nr) - 1);
                          for (int64_t j = 0; j < nc; ++j) {  // dst[cb + j, rb:rb + nr]
                            uint16_t* out = dst + (cb + j) * rows + rb;
                            if (nr == 16)
                              _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                                                  F32ToBf16x16(v[j]));
                            else
                              _mm256_mask_storeu_epi16(out, rmask, F32ToBf16x16(v[j]));
                          }
                        });
}

}  // namespace dsv3::ops::avx512
