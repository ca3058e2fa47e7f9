// AVX2 DequantizeRow: 8 columns per vector, bitwise equal to scalar::DequantizeRowRange (each
// code's exact f32 value times its scale, one rounding). The last cols % 8 columns, and whole rows
// whose scale grid does not hold whole vectors (a q8_0/q4_0 group or FP8 block width that is not
// a multiple of 8), take the scalar reference.
#include <cstring>

#include "ops/isa/avx2_fp8_f16.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int64_t kV = 8;

// The exact values of 8 e4m3 codes (the low 8 bytes): Fp8ToF32's e4m3 * 2^-8 times 2^8, exact.
// The NaN codes 0x7F and 0xFF become the scalar table's quiet NaN.
__m256 Fp8Values(__m128i bytes) {
  const __m256 v = _mm256_mul_ps(Fp8ToF32(bytes), _mm256_set1_ps(256.0f));
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

// Whether DequantizeRow converts whole vectors of w's rows (else the reference does all of it).
bool Vectorizes(const WeightView& w) {
  switch (w.dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return true;
    case DType::kF8E4M3:
      return w.block_cols % kV == 0;
    case DType::kI8:
    case DType::kU8:
      return w.group_size % kV == 0;
    default:
      return false;
  }
}

// W[row, c .. c + 8) as DequantizeRow writes them (c a multiple of 8 within the row's whole
// vectors): the code's value times `s`, its scale (1 for the unscaled dtypes).
template <DType D>
__m256 Values8(const uint8_t* src, int64_t c, float s) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(src) + c);
  } else if constexpr (D == DType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * c)));
  } else if constexpr (D == DType::kBF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * c));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else if constexpr (D == DType::kF8E4M3) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + c));
    return _mm256_mul_ps(Fp8Values(b), _mm256_set1_ps(s));
  } else if constexpr (D == DType::kU8) {
    return _mm256_mul_ps(Q4Values(src, c), _mm256_set1_ps(s));
  } else {
    return _mm256_mul_ps(I8Values(reinterpret_cast<const int8_t*>(src), c), _mm256_set1_ps(s));
  }
}

// Bytes of one stored row.
int64_t StoredBytes(const WeightView& w) {
  switch (w.dtype) {
    case DType::kF32:
      return 4 * w.cols;
    case DType::kF16:
    case DType::kBF16:
      return 2 * w.cols;
    case DType::kU8:
      return (w.cols + 1) / 2;
    default:
      return w.cols;
  }
}

// Columns [c0, c0 + 8 NV) of AccumulateRows over all n rows, y's 8 NV values in registers (one
// pass reads each row's few lines a row length apart; the lines 8 rows on are prefetched).
template <DType D, int NV>
void AccumulatePass(const WeightView& w, int64_t row0, int64_t n, const float* a, int64_t c0,
                    float* y) {
  const uint8_t* data = static_cast<const uint8_t*>(w.data);
  const int64_t row_bytes = StoredBytes(w);
  const bool grouped = D == DType::kI8 || D == DType::kU8;
  const int64_t width = grouped ? w.group_size : D == DType::kF8E4M3 ? w.block_cols : 1;
  const int64_t scale_cols = (w.cols + width - 1) / width;
  int64_t scale_col[NV];
  for (int v = 0; v < NV; ++v) scale_col[v] = (c0 + v * kV) / width;
  constexpr int64_t kElemBytes = D == DType::kF32                        ? 4
                                 : D == DType::kF16 || D == DType::kBF16 ? 2
                                                                         : 1;
  const int64_t first_byte = D == DType::kU8 ? c0 / 2 : c0 * kElemBytes;
  // Bytes of a row this pass reads (q4_0: half a byte a column).
  constexpr int64_t kSpan = D == DType::kU8 ? NV * kV / 2 : NV * kV * kElemBytes;
  __m256 acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_loadu_ps(y + c0 + v * kV);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t row = row0 + k;
    if (k + 8 < n) {
      for (int64_t line = 0; line < kSpan; line += 64)
        PrefetchAt(data, (row + 8) * row_bytes + first_byte + line);
    }
    const uint8_t* src = data + row * row_bytes;
    const float* scale_row = grouped               ? w.scale + row * scale_cols
                             : D == DType::kF8E4M3 ? w.scale + (row / w.block_rows) * scale_cols
                                                   : nullptr;
    const __m256 alpha = _mm256_set1_ps(a[k]);
    for (int v = 0; v < NV; ++v) {
      const float s = scale_row != nullptr ? scale_row[scale_col[v]] : 1.0f;
      acc[v] = _mm256_fmadd_ps(alpha, Values8<D>(src, c0 + v * kV, s), acc[v]);
    }
  }
  for (int v = 0; v < NV; ++v) _mm256_storeu_ps(y + c0 + v * kV, acc[v]);
}

template <DType D>
void AccumulateTyped(const WeightView& w, int64_t row0, int64_t n, const float* a, int64_t c0,
                     int64_t full, float* y) {
  for (; c0 + 8 * kV <= full; c0 += 8 * kV) AccumulatePass<D, 8>(w, row0, n, a, c0, y);
  switch ((full - c0) / kV) {
    case 7:
      return AccumulatePass<D, 7>(w, row0, n, a, c0, y);
    case 6:
      return AccumulatePass<D, 6>(w, row0, n, a, c0, y);
    case 5:
      return AccumulatePass<D, 5>(w, row0, n, a, c0, y);
    case 4:
      return AccumulatePass<D, 4>(w, row0, n, a, c0, y);
    case 3:
      return AccumulatePass<D, 3>(w, row0, n, a, c0, y);
    case 2:
      return AccumulatePass<D, 2>(w, row0, n, a, c0, y);
    case 1:
      return AccumulatePass<D, 1>(w, row0, n, a, c0, y);
    default:
      return;
  }
}

// BF16 columns [0, end) (end a multiple of 16) of AccumulateRows with each row read whole, the
// rows in order, as the AVX-512 variant does it (avx512_dequant.cpp, AccumulateRowsBf16: one
// stream instead of a pass's lines a row apart): per 16-column chunk a row's 32 bytes decoded in
// one register each for the even and the odd columns, added to the chunk's sums in `split` (per
// chunk: even columns, then odd). Each column's sum takes the rows in order from y, one fma a
// row, as AccumulatePass's: the same bits. One core, 8 heads' W_UK [128, 512] a call from 100
// copies (DRAM), busy host: 107-109 us a call, this form 72-82 (from the L2 20-27 and 26-33).
void AccumulateRowsBf16(const WeightView& w, int64_t row0, int64_t n, const float* a, int64_t end,
                        float* y, float* split) {
  const int64_t chunks = end / 16;
  for (int64_t q = 0; q < chunks; ++q) {
    const __m256 lo = _mm256_loadu_ps(y + 16 * q), hi = _mm256_loadu_ps(y + 16 * q + 8);
    // shuffle_ps within 128-bit lanes: [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]; then the 64-bit
    // pieces reordered 0, 2, 1, 3.
    const __m256d even = _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88));
    const __m256d odd = _mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD));
    _mm256_storeu_ps(split + 16 * q, _mm256_castpd_ps(_mm256_permute4x64_pd(even, 0xD8)));
    _mm256_storeu_ps(split + 16 * q + 8, _mm256_castpd_ps(_mm256_permute4x64_pd(odd, 0xD8)));
  }
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  const uint16_t* row = static_cast<const uint16_t*>(w.data) + row0 * w.cols;
  for (int64_t k = 0; k < n; ++k, row += w.cols) {
    const __m256 alpha = _mm256_set1_ps(a[k]);
    for (int64_t q = 0; q < chunks; ++q) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * q));
      float* sums = split + 16 * q;
      _mm256_storeu_ps(sums, _mm256_fmadd_ps(alpha, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)),
                                             _mm256_loadu_ps(sums)));
      _mm256_storeu_ps(sums + 8,
                       _mm256_fmadd_ps(alpha, _mm256_castsi256_ps(_mm256_and_si256(v, high)),
                                       _mm256_loadu_ps(sums + 8)));
    }
  }
  for (int64_t q = 0; q < chunks; ++q) {
    const __m256 even = _mm256_loadu_ps(split + 16 * q), odd = _mm256_loadu_ps(split + 16 * q + 8);
    const __m256 low = _mm256_unpacklo_ps(even, odd);    // [e0 o0 e1 o1 | e4 o4 e5 o5]
    const __m256 upper = _mm256_unpackhi_ps(even, odd);  // [e2 o2 e3 o3 | e6 o6 e7 o7]
    _mm256_storeu_ps(y + 16 * q, _mm256_permute2f128_ps(low, upper, 0x20));
    _mm256_storeu_ps(y + 16 * q + 8, _mm256_permute2f128_ps(low, upper, 0x31));
  }
}

}  // namespace

// DequantizeRow + Axpy row after row, without writing the rows out: columns of whole vectors in
// passes of 64 with y in registers (the same fma per value as Axpy's vector loop), the last
// cols % 8 through the reference decoder and Axpy's scalar tail (a multiply, then an add).
void AccumulateRows(const WeightView& w, int64_t row0, int64_t n, const float* a, float* y,
                    float* row_buf) {
  const int64_t cols = w.cols, full = Vectorizes(w) ? cols / kV * kV : 0;
  switch (w.dtype) {
    case DType::kF32:
      AccumulateTyped<DType::kF32>(w, row0, n, a, 0, full, y);
      break;
    case DType::kF16:
      AccumulateTyped<DType::kF16>(w, row0, n, a, 0, full, y);
      break;
    case DType::kBF16:
      AccumulateRowsBf16(w, row0, n, a, full / 16 * 16, y, row_buf);
      AccumulateTyped<DType::kBF16>(w, row0, n, a, full / 16 * 16, full, y);
      break;
    case DType::kF8E4M3:
      AccumulateTyped<DType::kF8E4M3>(w, row0, n, a, 0, full, y);
      break;
    case DType::kI8:
      AccumulateTyped<DType::kI8>(w, row0, n, a, 0, full, y);
      break;
    case DType::kU8:
      AccumulateTyped<DType::kU8>(w, row0, n, a, 0, full, y);
      break;
    default:
      break;
  }
  if (full == cols) return;
  for (int64_t k = 0; k < n; ++k) {
    if (full == 0) {
      avx2::DequantizeRow(w, row0 + k, row_buf);  // all of it (the reference where it must)
      Axpy(a[k], row_buf, cols, y);
      continue;
    }
    scalar::DequantizeRowRange(w, row0 + k, full, cols, row_buf);
    for (int64_t c = full; c < cols; ++c) y[c] += a[k] * row_buf[c - full];
  }
}

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
