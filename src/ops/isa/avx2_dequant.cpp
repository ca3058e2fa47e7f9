// AVX2 DequantizeRow: 8 columns per vector, bitwise equal to scalar::DequantizeRowRange (each
// code's exact f32 value times its scale, one rounding). The last cols % 8 columns, and whole rows
// whose scale grid does not hold whole vectors (a q8_0/q4_0 group or FP8 block width that is not
// a multiple of 8), take the scalar reference.
#include <cstring>

#include "ops/isa/simd_intrinsics.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int64_t kV = 8;

// The exact values of 8 e4m3 codes (the low 8 bytes): the f16 of e4m3 * 2^-8 (avx2_matmul.cpp's
// Fp8ToF32) times 2^8, exact. The NaN codes 0x7F and 0xFF become the scalar table's quiet NaN.
__m256 Fp8Values(__m128i bytes) {
  const __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(bytes), 7);
  const __m256 v =
      _mm256_mul_ps(_mm256_cvtph_ps(_mm_and_si128(h, _mm_set1_epi16(static_cast<short>(0xbfff)))),
                    _mm256_set1_ps(256.0f));
  const __m128i low7 = _mm_set1_epi8(0x7f);
  const __m256i nan = _mm256_cvtepi8_epi32(_mm_cmpeq_epi8(_mm_and_si128(bytes, low7), low7));
  return _mm256_blendv_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000)),
                          _mm256_castsi256_ps(nan));
}

// q4_0 codes of columns c .. c + 8 (c even) as floats: 4 bytes, the low nibble the even column,
// each nibble the code + 8.
__m256 Q4Values(const uint8_t* row, int64_t c) {
  int32_t four;
  std::memcpy(&four, row + c / 2, 4);
  const __m128i b = _mm_cvtsi32_si128(four);
  const __m256i lanes = _mm256_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));  // lane k: byte k / 2
  const __m256i shift = _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4);
  const __m256i code = _mm256_and_si256(_mm256_srlv_epi32(lanes, shift), _mm256_set1_epi32(0xf));
  return _mm256_cvtepi32_ps(_mm256_sub_epi32(code, _mm256_set1_epi32(8)));
}

__m256 I8Values(const int8_t* row, int64_t c) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}

}  // namespace

void DequantizeRow(const WeightView& w, int64_t row, float* out) {
  const int64_t cols = w.cols, full = cols / kV * kV;
  int64_t done = 0;  // columns [0, done) converted here, the rest by the reference
  switch (w.dtype) {
    case DType::kF32:
      if (cols > 0) std::memcpy(out, static_cast<const float*>(w.data) + row * cols, cols * 4);
      return;
    case DType::kF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + row * cols;
      for (; done < full; done += kV) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + done));
        _mm256_storeu_ps(out + done, _mm256_cvtph_ps(h));
      }
      break;
    }
    case DType::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + row * cols;
      for (; done < full; done += kV) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + done));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + done),
                            _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
      }
      break;
    }
    case DType::kF8E4M3: {
      if (w.block_cols % kV != 0) break;
      const uint8_t* src = static_cast<const uint8_t*>(w.data) + row * cols;
      const float* scale_row =
          w.scale + (row / w.block_rows) * ((cols + w.block_cols - 1) / w.block_cols);
      // Blocks are whole vectors wide: the scale index steps when `done` reaches the next block
      // (no division per vector).
      for (int64_t block = 0, block_end = w.block_cols; done < full; done += kV) {
        if (done == block_end) ++block, block_end += w.block_cols;
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + done));
        const __m256 s = _mm256_set1_ps(scale_row[block]);
        _mm256_storeu_ps(out + done, _mm256_mul_ps(Fp8Values(b), s));
      }
      break;
    }
    case DType::kI8:
    case DType::kU8: {
      if (w.group_size % kV != 0) break;
      const float* scale_row = w.scale + row * ((cols + w.group_size - 1) / w.group_size);
      const bool q4 = w.dtype == DType::kU8;
      const uint8_t* src = static_cast<const uint8_t*>(w.data) + row * (q4 ? (cols + 1) / 2 : cols);
      for (int64_t group = 0, group_end = w.group_size; done < full; done += kV) {
        if (done == group_end) ++group, group_end += w.group_size;
        const __m256 v =
            q4 ? Q4Values(src, done) : I8Values(reinterpret_cast<const int8_t*>(src), done);
        _mm256_storeu_ps(out + done, _mm256_mul_ps(v, _mm256_set1_ps(scale_row[group])));
      }
      break;
    }
    default:
      break;
  }
  if (done < cols) scalar::DequantizeRowRange(w, row, done, cols, out + done);
}

}  // namespace dsv3::ops::avx2
