// AVX2+FMA MatMul (compiled with -mavx2 -mfma -mf16c; reached only through ops/matmul.cpp's
// dispatch). Dot-product form for every T: a tile of kMr rows x up to kNt tokens streams the
// weight rows once, converts 8 weights per load to f32 and keeps 8-lane partial dots in registers,
// reduced once per output. For large T, tokens are processed in blocks whose x rows fit in L2,
// so the weight tile is read from memory once per token block and x is read from cache.
#include <algorithm>
#include <cstring>

#include "ops/isa/simd_intrinsics.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int kMr = 4;  // rows per tile
constexpr int kNt = 2;  // tokens per tile: 4 x 2 accumulators + x, w and 4 scales fit 16 ymm
// Token block: as many x rows as fit in ~256 KB of L2.
constexpr int64_t kTokenBlockBytes = 256 * 1024;
// e4m3 bits shifted into an f16 read as e4m3 * 2^-8 (see Fp8ToF32); the 2^8 is folded into the
// block scale, which stays exact because it is a power of two.
constexpr float kFp8Rescale = 256.0f;

template <DType D>
constexpr int64_t kBytes = D == DType::kF32      ? 4
                           : D == DType::kF8E4M3 ? 1
                                                 : 2;

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// e4m3fn and f16 both store sign | exponent | mantissa, with exponent biases 7 and 15: moving the
// 7 exponent+mantissa bits up by 7 gives the f16 whose value is e4m3 * 2^-8, subnormals included
// (vcvtph2ps converts them exactly). Sign-extending the byte first puts the sign in bit 15 (bit
// 14 is then cleared). The NaN codes 0x7F/0xFF decode as ±480 instead of NaN; checkpoints never
// hold them (quantisers saturate at ±448).
__m256 Fp8ToF32(__m128i bytes) {
  const __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(bytes), 7);
  return _mm256_cvtph_ps(_mm_and_si128(h, _mm_set1_epi16(static_cast<short>(0xbfff))));
}

// 8 weights starting at `p` as f32 (FP8: times 2^-8, unscaled).
template <DType D>
__m256 LoadWeights(const uint8_t* p) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  } else if constexpr (D == DType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else if constexpr (D == DType::kBF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return Fp8ToF32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
}

// n < 8 weights (zero beyond n) without reading past the end: AVX2 has no byte-masked loads.
template <DType D>
__m256 LoadWeightsTail(const uint8_t* p, int64_t n) {
  alignas(32) uint8_t buf[32] = {};
  std::memcpy(buf, p, static_cast<size_t>(n * kBytes<D>));
  return LoadWeights<D>(buf);
}

__m256 LoadTail(const float* p, int64_t n) {
  alignas(32) float buf[8] = {};
  std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(float));
  return _mm256_load_ps(buf);
}

template <DType D>
const uint8_t* RowPtr(const WeightView& w, int64_t r) {
  return static_cast<const uint8_t*>(w.data) + r * w.cols * kBytes<D>;
}

// y[t0 + j, r + i] for i < MR, j < NT. FP8: weights are multiplied by their block scale (one
// rounding) before the FMA, which needs fewer registers than per-block partial sums.
template <DType D, int MR, int NT>
void DotTile(const float* x, int64_t t0, const WeightView& w, int64_t r, float* y) {
  constexpr bool kFp8 = D == DType::kF8E4M3;
  const int64_t cols = w.cols;
  const int64_t block_cols = kFp8 ? w.block_cols : cols;
  const int64_t scale_cols = kFp8 ? (cols + block_cols - 1) / block_cols : 0;
  const uint8_t* wrow[MR];
  const float* srow[MR];
  for (int i = 0; i < MR; ++i) {
    wrow[i] = RowPtr<D>(w, r + i);
    srow[i] = kFp8 ? w.scale + ((r + i) / w.block_rows) * scale_cols : nullptr;
  }
  const float* xrow[NT];
  for (int j = 0; j < NT; ++j) xrow[j] = x + (t0 + j) * cols;  // x[t0 + j, :]
  const int64_t ahead = MR * cols * kBytes<D>;

  __m256 acc[MR][NT];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  for (int64_t b0 = 0; b0 < cols; b0 += block_cols) {
    const int64_t b1 = std::min(cols, b0 + block_cols);
    __m256 s[MR];
    if constexpr (kFp8) {
      for (int i = 0; i < MR; ++i) s[i] = _mm256_set1_ps(srow[i][b0 / block_cols] * kFp8Rescale);
    }
    int64_t c = b0;
    for (; c + 8 <= b1; c += 8) {
      __m256 xv[NT];
      for (int j = 0; j < NT; ++j) xv[j] = _mm256_loadu_ps(xrow[j] + c);
      for (int i = 0; i < MR; ++i) {
        // The same columns of the next tile's rows (rows lie back to back) are requested from
        // DRAM while this tile is summed.
        PrefetchAt(wrow[i], c * kBytes<D> + ahead);
        __m256 wv = LoadWeights<D>(wrow[i] + c * kBytes<D>);
        if constexpr (kFp8) wv = _mm256_mul_ps(wv, s[i]);
        for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
      }
    }
    if (c < b1) {
      __m256 xv[NT];
      for (int j = 0; j < NT; ++j) xv[j] = LoadTail(xrow[j] + c, b1 - c);
      for (int i = 0; i < MR; ++i) {
        __m256 wv = LoadWeightsTail<D>(wrow[i] + c * kBytes<D>, b1 - c);
        if constexpr (kFp8) wv = _mm256_mul_ps(wv, s[i]);
        for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NT; ++j) y[(t0 + j) * w.rows + r + i] = HorizontalSum(acc[i][j]);
}

template <DType D, int MR>
void DotTileTokens(const float* x, int64_t t0, int64_t nt, const WeightView& w, int64_t r,
                   float* y) {
  static_assert(kNt == 2);
  if (nt == 1)
    DotTile<D, MR, 1>(x, t0, w, r, y);
  else
    DotTile<D, MR, 2>(x, t0, w, r, y);
}

template <DType D>
void MatMulTyped(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                 float* y) {
  const int64_t token_block =
      std::max<int64_t>(kNt, kTokenBlockBytes / (w.cols * static_cast<int64_t>(sizeof(float))));
  for (int64_t tb0 = 0; tb0 < T; tb0 += token_block) {
    const int64_t tb1 = std::min(T, tb0 + token_block);
    int64_t r = row_begin;
    // Token tiles innermost: the rows of a tile stay in cache while the block's tokens pass.
    for (; r + kMr <= row_end; r += kMr)
      for (int64_t t0 = tb0; t0 < tb1; t0 += kNt)
        DotTileTokens<D, kMr>(x, t0, std::min<int64_t>(kNt, tb1 - t0), w, r, y);
    for (; r < row_end; ++r)
      for (int64_t t0 = tb0; t0 < tb1; t0 += kNt)
        DotTileTokens<D, 1>(x, t0, std::min<int64_t>(kNt, tb1 - t0), w, r, y);
  }
}

}  // namespace

void MatMulRows(const float* x, int64_t T, const WeightView& w, int64_t row_begin, int64_t row_end,
                float* y) {
  if (w.cols == 0) {
    for (int64_t t = 0; t < T; ++t)
      std::fill(y + t * w.rows + row_begin, y + t * w.rows + row_end, 0.0f);
    return;
  }
  switch (w.dtype) {
    case DType::kF32:
      return MatMulTyped<DType::kF32>(x, T, w, row_begin, row_end, y);
    case DType::kF16:
      return MatMulTyped<DType::kF16>(x, T, w, row_begin, row_end, y);
    case DType::kBF16:
      return MatMulTyped<DType::kBF16>(x, T, w, row_begin, row_end, y);
    case DType::kF8E4M3:
      return MatMulTyped<DType::kF8E4M3>(x, T, w, row_begin, row_end, y);
    default:
      return scalar::MatMulRows(x, T, w, row_begin, row_end, y);  // fills NaN
  }
}

}  // namespace dsv3::ops::avx2
