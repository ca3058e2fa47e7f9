// AVX-512 DequantizeRow: 16 columns per vector, bitwise equal to scalar::DequantizeRowRange (each
// code's exact f32 value times its scale, one rounding). The last cols % 16 columns, and whole
// rows whose scale grid does not hold whole vectors (a q8_0/q4_0 group or FP8 block width that is
// not a multiple of 16), take the scalar reference.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "ops/isa/avx512_fp8_f16.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int64_t kV = 16;
constexpr int64_t kAheadRows = 8;

// The exact values of 16 e4m3 codes: Fp8ToF32's e4m3 * 2^-8 (ops/isa/avx512_fp8_f16.h) times
// 2^8, exact. The NaN codes 0x7F and 0xFF become the scalar table's quiet NaN.
__m512 Fp8Values(__m128i bytes) {
  const __m512 v = _mm512_mul_ps(Fp8ToF32(bytes), _mm512_set1_ps(256.0f));
  const __m128i low7 = _mm_set1_epi8(0x7f);
  const __mmask16 nan = _mm_cmpeq_epi8_mask(_mm_and_si128(bytes, low7), low7);
  return _mm512_mask_mov_ps(v, nan, _mm512_castsi512_ps(_mm512_set1_epi32(0x7fc00000)));
}

// q4_0 codes of columns c .. c + 16 (c even) as floats: 8 bytes, the low nibble the even column,
// each nibble the code + 8.
__m512 Q4Values(const uint8_t* row, int64_t c) {
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + c / 2));
  const __m512i lanes = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(b, b));  // lane k: byte k / 2
  const __m512i shift = _mm512_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4);
  const __m512i code = _mm512_and_si512(_mm512_srlv_epi32(lanes, shift), _mm512_set1_epi32(0xf));
  return _mm512_cvtepi32_ps(_mm512_sub_epi32(code, _mm512_set1_epi32(8)));
}

__m512 I8Values(const int8_t* row, int64_t c) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + c));
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}

// 16 values of row `row` from column c as DequantizeRow gives them (c a multiple of 16; for the
// scaled formats `s` is the scale of the block or group holding them).
template <DType D>
__m512 Values16(const WeightView& w, int64_t row, int64_t c, float s) {
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  if constexpr (D == DType::kF32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(base) + row * w.cols + c);
  } else if constexpr (D == DType::kF16 || D == DType::kBF16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
        reinterpret_cast<const uint16_t*>(base) + row * w.cols + c));
    if constexpr (D == DType::kF16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else if constexpr (D == DType::kF8E4M3) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + row * w.cols + c));
    return _mm512_mul_ps(Fp8Values(b), _mm512_set1_ps(s));
  } else if constexpr (D == DType::kI8) {
    return _mm512_mul_ps(I8Values(reinterpret_cast<const int8_t*>(base) + row * w.cols, c),
                         _mm512_set1_ps(s));
  } else {
    return _mm512_mul_ps(Q4Values(base + row * ((w.cols + 1) / 2), c), _mm512_set1_ps(s));
  }
}

// Byte offset of column c of row `row` in w's data (c even for q4_0).
template <DType D>
int64_t ByteOffset(const WeightView& w, int64_t row, int64_t c) {
  if constexpr (D == DType::kU8) return row * ((w.cols + 1) / 2) + c / 2;
  constexpr int64_t kBytes = D == DType::kF32 ? 4 : D == DType::kF16 || D == DType::kBF16 ? 2 : 1;
  return (row * w.cols + c) * kBytes;
}

// Vectors of y a pass keeps in registers: 16 (256 columns) for one-byte weights, 8 for wider ones.
// One thread, AccumulateRows over 16 heads' 128-row W_UK blocks of a 4096x512 kv_b_proj (200
// copies, from DRAM), 10 interleaved rounds: q8_0 10.3 -> 14.4 GB/s, FP8 8.7 -> 11.4 with 16
// (fewer passes, each row's lines a row length apart); BF16 14.8 -> 13.9, so it keeps 8.
template <DType D>
constexpr int kPassVectors = D == DType::kI8 || D == DType::kF8E4M3 ? 16 : 8;

// Columns [begin, full) of AccumulateRows: blocks of up to kPassVectors vectors (accumulators in
// registers) over all n rows, so y is loaded and stored once per block instead of once per row
// (each pass reads each row's few cache lines a row length apart: the lines of the row kAheadRows
// on are prefetched, or every row would wait on memory).
template <DType D>
void AccumulateRowsTyped(const WeightView& w, int64_t row0, int64_t n, const float* a,
                         int64_t begin, int64_t full, float* y) {
  constexpr int kNv = kPassVectors<D>;
  constexpr bool kGroups = D == DType::kI8 || D == DType::kU8;
  const int64_t scale_cols = kGroups               ? (w.cols + w.group_size - 1) / w.group_size
                             : D == DType::kF8E4M3 ? (w.cols + w.block_cols - 1) / w.block_cols
                                                   : 0;
  for (int64_t c0 = begin; c0 < full; c0 += kNv * kV) {
    const int nv = static_cast<int>(std::min<int64_t>(kNv, (full - c0) / kV));
    int64_t scale_col[kNv] = {};  // the scale column of each vector
    for (int v = 0; v < nv; ++v)
      scale_col[v] = kGroups               ? (c0 + v * kV) / w.group_size
                     : D == DType::kF8E4M3 ? (c0 + v * kV) / w.block_cols
                                           : 0;
    __m512 acc[kNv];
    for (int v = 0; v < nv; ++v) acc[v] = _mm512_loadu_ps(y + c0 + v * kV);
    // FP8: the block row of `row`, stepped instead of divided per row.
    int64_t block_row = D == DType::kF8E4M3 ? row0 / w.block_rows : 0;
    int64_t next_block_row = (block_row + 1) * w.block_rows;
    const int64_t span = ByteOffset<D>(w, 0, c0 + nv * kV) - ByteOffset<D>(w, 0, c0);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t row = row0 + k;
      if (k + kAheadRows < n) {
        const int64_t at = ByteOffset<D>(w, row + kAheadRows, c0);
        for (int64_t line = 0; line < span; line += 64) PrefetchAt(w.data, at + line);
      }
      if (D == DType::kF8E4M3 && row == next_block_row) ++block_row, next_block_row += w.block_rows;
      const float* scale_row = kGroups               ? w.scale + row * scale_cols
                               : D == DType::kF8E4M3 ? w.scale + block_row * scale_cols
                                                     : nullptr;
      const __m512 alpha = _mm512_set1_ps(a[k]);
      for (int v = 0; v < nv; ++v) {
        const float s = scale_row != nullptr ? scale_row[scale_col[v]] : 1.0f;
        acc[v] = _mm512_fmadd_ps(alpha, Values16<D>(w, row, c0 + v * kV, s), acc[v]);
      }
    }
    for (int v = 0; v < nv; ++v) _mm512_storeu_ps(y + c0 + v * kV, acc[v]);
  }
}

// q4_0 with groups of 32, columns [0, end) (end a multiple of 32) of AccumulateRows, in passes of
// up to 8 groups as AccumulateRowsTyped. A group's 16 bytes widen to 16 lanes whose low nibbles
// are the even columns and high nibbles the odd ones; vpermps looks each nibble up in a table of
// the group's 16 values (code - 8) * s, each the one rounding DequantizeRow makes, so the sums are
// bitwise those of DequantizeRow + Axpy. The accumulators keep even and odd columns apart until
// they are stored. Per 32 weights: 1 widening, 1 shift, 1 table, 2 lookups, 2 FMAs (the generic
// path spends 9 operations per 16).
constexpr int64_t kQ4Group = 32;

// The first pass (c0 == 0) requests every line of row k + kQ4AheadRows, its bytes and its scales,
// so the later passes find their rows in cache. Requesting only each pass's own lines
// kAheadRows on instead: bench-medium q4_0 decode, W_UK of 8 heads 43 -> 37 us a layer, forwards
// 0.8-1.0 % faster in 3 of 3 alternating runs (32 rows ahead was no better than 16).
constexpr int64_t kQ4AheadRows = 16;

void PrefetchLines(const void* p, int64_t bytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t line = begin & ~uintptr_t{63}; line < begin + static_cast<uintptr_t>(bytes);
       line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T0);
}

// One pass over NG groups from column c0 (NG a constant, so the accumulators stay in registers;
// with a run-time count GCC kept them on the stack, a store-to-load chain per FMA).
template <int NG>
void AccumulateQ4Pass(const WeightView& w, int64_t row0, int64_t n, const float* a, int64_t c0,
                      float* y) {
  const int64_t groups = (w.cols + kQ4Group - 1) / kQ4Group, row_bytes = (w.cols + 1) / 2;
  const uint8_t* data = static_cast<const uint8_t*>(w.data);
  const __m512 codes = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512 even[NG], odd[NG];  // y[c0 + 32 g + 2 k] and y[c0 + 32 g + 2 k + 1]
  for (int g = 0; g < NG; ++g) {
    const __m512 y0 = _mm512_loadu_ps(y + c0 + g * kQ4Group);
    const __m512 y1 = _mm512_loadu_ps(y + c0 + g * kQ4Group + 16);
    even[g] = _mm512_permutex2var_ps(y0, evens, y1);
    odd[g] = _mm512_permutex2var_ps(y0, odds, y1);
  }
  for (int64_t k = 0; k < n; ++k) {
    const int64_t row = row0 + k;
    if (c0 == 0 && k + kQ4AheadRows < n) {
      PrefetchLines(data + (row + kQ4AheadRows) * row_bytes, row_bytes);
      PrefetchLines(w.scale + (row + kQ4AheadRows) * groups, groups * sizeof(float));
    }
    const uint8_t* bytes = data + row * row_bytes + c0 / 2;
    const float* scale = w.scale + row * groups + c0 / kQ4Group;
    const __m512 alpha = _mm512_set1_ps(a[k]);
    for (int g = 0; g < NG; ++g) {
      const __m512i v = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes + g * kQ4Group / 2)));
      const __m512 table = _mm512_mul_ps(codes, _mm512_set1_ps(scale[g]));
      // vpermps reads the low 4 bits of each index: the low nibble as it stands.
      even[g] = _mm512_fmadd_ps(alpha, _mm512_permutexvar_ps(v, table), even[g]);
      odd[g] =
          _mm512_fmadd_ps(alpha, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table), odd[g]);
    }
  }
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second =
      _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int g = 0; g < NG; ++g) {
    _mm512_storeu_ps(y + c0 + g * kQ4Group, _mm512_permutex2var_ps(even[g], first, odd[g]));
    _mm512_storeu_ps(y + c0 + g * kQ4Group + 16, _mm512_permutex2var_ps(even[g], second, odd[g]));
  }
}

void AccumulateRowsQ4(const WeightView& w, int64_t row0, int64_t n, const float* a, int64_t end,
                      float* y) {
  // Passes of 8 groups (16 accumulators): the same probe as kPassVectors, q4_0 6.2 -> 7.9 GB/s
  // (10 of 10 rounds) against passes of 4.
  int64_t c0 = 0;
  for (; c0 + 8 * kQ4Group <= end; c0 += 8 * kQ4Group) AccumulateQ4Pass<8>(w, row0, n, a, c0, y);
  if (c0 + 4 * kQ4Group <= end) {
    AccumulateQ4Pass<4>(w, row0, n, a, c0, y);
    c0 += 4 * kQ4Group;
  }
  switch ((end - c0) / kQ4Group) {
    case 3:
      return AccumulateQ4Pass<3>(w, row0, n, a, c0, y);
    case 2:
      return AccumulateQ4Pass<2>(w, row0, n, a, c0, y);
    case 1:
      return AccumulateQ4Pass<1>(w, row0, n, a, c0, y);
    default:
      return;
  }
}

// BF16 columns [0, end) (end a multiple of 32) of AccumulateRows with each row read whole, the
// rows in order: one stream from the first byte to the last. Per 32-column chunk a row's 64-byte
// line is decoded in one register each for the even columns (the words shifted up) and the odd
// ones (the words masked) and added to the chunk's sums, which wait in `split` (per chunk: even
// columns, then odd) from row to row. Each column's sum takes the rows in order from y, one fma
// a row, as AccumulateRowsTyped's: the same bits. Its passes of 8 vectors read each of W_UK's
// 1 KB rows in 4 pieces, 4 streams a row apart, which the hardware prefetchers follow poorly:
// one core, 8 heads' W_UK [128, 512] a call from 100 copies (DRAM), busy host: 85-95 us a call,
// this form 43-78 (from the L2 20 and 27-32: a load and a store per fma here). No software
// requests: with lines 4 KB ahead it took 55-65 us, and reading 2 or 4 rows at a time (fewer
// loads and stores of the sums, but 2-4 streams) 90-115. bench-medium BF16 tg64, tokens
// alternating with the passes in one process, either role: 1.7-2.9 % less time a token (4 runs).
void AccumulateRowsBf16(const WeightView& w, int64_t row0, int64_t n, const float* a, int64_t end,
                        float* y, float* split) {
  const int64_t chunks = end / 32;
  const __m512i evens =
      _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int64_t q = 0; q < chunks; ++q) {
    const __m512 lo = _mm512_loadu_ps(y + 32 * q), hi = _mm512_loadu_ps(y + 32 * q + 16);
    _mm512_storeu_ps(split + 32 * q, _mm512_permutex2var_ps(lo, evens, hi));
    _mm512_storeu_ps(split + 32 * q + 16, _mm512_permutex2var_ps(lo, odds, hi));
  }
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  const uint16_t* row = static_cast<const uint16_t*>(w.data) + row0 * w.cols;
  for (int64_t k = 0; k < n; ++k, row += w.cols) {
    const __m512 alpha = _mm512_set1_ps(a[k]);
    for (int64_t q = 0; q < chunks; ++q) {
      const __m512i v = _mm512_loadu_si512(row + 32 * q);  // columns 32 q .. 32 q + 31
      float* sums = split + 32 * q;
      _mm512_storeu_ps(sums, _mm512_fmadd_ps(alpha, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)),
                                             _mm512_loadu_ps(sums)));
      _mm512_storeu_ps(sums + 16,
                       _mm512_fmadd_ps(alpha, _mm512_castsi512_ps(_mm512_and_si512(v, high)),
                                       _mm512_loadu_ps(sums + 16)));
    }
  }
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second =
      _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int64_t q = 0; q < chunks; ++q) {
    const __m512 even = _mm512_loadu_ps(split + 32 * q), odd = _mm512_loadu_ps(split + 32 * q + 16);
    _mm512_storeu_ps(y + 32 * q, _mm512_permutex2var_ps(even, first, odd));
    _mm512_storeu_ps(y + 32 * q + 16, _mm512_permutex2var_ps(even, second, odd));
  }
}

// Columns of a row the vectors convert: all whole vectors, or none where the scale grid does not
// hold whole vectors (a q8_0/q4_0 group or FP8 block width that is not a multiple of 16) or the
// dtype is not a weight format; the reference converts the rest.
int64_t VectorColumns(const WeightView& w) {
  switch (w.dtype) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return w.cols / kV * kV;
    case DType::kF8E4M3:
      return w.block_cols % kV == 0 ? w.cols / kV * kV : 0;
    case DType::kI8:
    case DType::kU8:
      return w.group_size % kV == 0 ? w.cols / kV * kV : 0;
    default:
      return 0;
  }
}

// fn(std::integral_constant<DType, D>) for the weight dtype D (nothing for other dtypes).
template <typename Fn>
void ForDType(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      return fn(std::integral_constant<DType, DType::kF32>{});
    case DType::kF16:
      return fn(std::integral_constant<DType, DType::kF16>{});
    case DType::kBF16:
      return fn(std::integral_constant<DType, DType::kBF16>{});
    case DType::kF8E4M3:
      return fn(std::integral_constant<DType, DType::kF8E4M3>{});
    case DType::kI8:
      return fn(std::integral_constant<DType, DType::kI8>{});
    case DType::kU8:
      return fn(std::integral_constant<DType, DType::kU8>{});
    default:
      return;
  }
}

// Columns [0, full) of DequantizeRow. The scale index steps when c reaches the next group or
// block (no division per vector).
template <DType D>
void DequantizeRowTyped(const WeightView& w, int64_t row, int64_t full, float* out) {
  const float* scale_row = nullptr;
  int64_t width = 0;  // columns per scale
  if constexpr (D == DType::kI8 || D == DType::kU8) {
    width = w.group_size;
    scale_row = w.scale + row * ((w.cols + width - 1) / width);
  } else if constexpr (D == DType::kF8E4M3) {
    width = w.block_cols;
    scale_row = w.scale + (row / w.block_rows) * ((w.cols + width - 1) / width);
  }
  for (int64_t c = 0, index = 0, end = width; c < full; c += kV) {
    if (c == end) ++index, end += width;
    _mm512_storeu_ps(out + c, Values16<D>(w, row, c, scale_row ? scale_row[index] : 1.0f));
  }
}

}  // namespace

void AccumulateRows(const WeightView& w, int64_t row0, int64_t n, const float* a, float* y,
                    float* row_buf) {
  const int64_t cols = w.cols, full = VectorColumns(w);
  int64_t begin = 0;  // columns before it are done
  if (w.dtype == DType::kU8 && w.group_size == 32) {
    begin = full / 32 * 32;
    AccumulateRowsQ4(w, row0, n, a, begin, y);
  }
  if (w.dtype == DType::kBF16) {
    begin = full / 32 * 32;
    AccumulateRowsBf16(w, row0, n, a, begin, y, row_buf);
  }
  ForDType(w.dtype,
           [&](auto d) { AccumulateRowsTyped<decltype(d)::value>(w, row0, n, a, begin, full, y); });
  if (full == cols) return;
  // The rest of each row through the reference decoder, added as Axpy adds it (one fma).
  for (int64_t k = 0; k < n; ++k) {
    scalar::DequantizeRowRange(w, row0 + k, full, cols, row_buf);
    Axpy(a[k], row_buf, cols - full, y + full);
  }
}

void DequantizeRow(const WeightView& w, int64_t row, float* out) {
  const int64_t full = VectorColumns(w);
  ForDType(w.dtype, [&](auto d) { DequantizeRowTyped<decltype(d)::value>(w, row, full, out); });
  if (full < w.cols) scalar::DequantizeRowRange(w, row, full, w.cols, out + full);
}

}  // namespace dsv3::ops::avx512
