// Pieces the AVX-512 VNNI int8 kernels share: avx512_int8_matmul.cpp (the GEMV and the entry
// points) and avx512_int8_prefill.cpp (the token tiles). Block constants, the activation block
// quantizer, weight blocks as unsigned bytes.
//
// Internal linkage on purpose, as ops/isa/transpose8x8.h explains: include it only from files
// built with the AVX-512 flags.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "ops/int8_dot.h"
#include "ops/isa/simd_intrinsics.h"
#include "ops/kernels_internal.h"
#include "ops/matmul.h"

namespace dsv3::ops::avx512 {

// The prefill tiles (avx512_int8_prefill.cpp), for the first PrefillTokens(T, w) tokens: x
// quantized into tiles of 16 tokens, and y[:, row_begin:row_end] from them.
void QuantizeTilesInt8(const ActSource& a, int64_t T, int64_t cols, DType wdtype, uint8_t* buf);
void PrefillRowsInt8(const uint8_t* buf, int64_t T, const WeightView& w, int64_t row_begin,
                     int64_t row_end, float* y);

namespace {  // NOLINT(build/namespaces): see above

constexpr int64_t kBlock = kInt8Block;
// Panel of 8 unpacked rows on the stack: 576 blocks = 18432 columns (DeepSeek-V3's widest rows,
// 144 KiB); wider weights take the GEMV kernel at every T.
constexpr int64_t kMaxPanelGroups = 576;

template <DType D>
constexpr int32_t kWeightOffset = D == DType::kI8 ? 128 : 8;

template <DType D>
constexpr int64_t RowBytes(int64_t cols) {
  return D == DType::kI8 ? cols : (cols + 1) / 2;
}

inline int32_t LoadDword(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// How many of T tokens the prefill tiles take; the GEMV takes the rest, after them. For tiled
// weights a tile filled by fewer than 12 tokens costs more than giving them to the GEMV (a MoE
// expert's token count is rarely a multiple of 16). Measured when this was chosen (one core,
// 512x2048, Gop/s of the tiles at T = 8 / 12 / 16 / 17 / 24 / 32 / 40 / 64: q4_0 254 / 359 / 477 /
// 320 / 434 / 561 / 483 / 575; the tiled GEMV's ~435 at any T). Since, the GEMV's 8-token runs
// have caught up (session 29, matmul_bench BM_MatMulTiled, one core: 512x2048 at T = 16 / 24 / 32 /
// 48 the tiles 226-278 / 266-296 / 257-304 / 293-324, the GEMV for every token 321-337), yet
// giving it every product under 64 tokens (the threads' layout then in runs of 64 or more) left
// bench-medium pp512 level (q8_0 level to 3 % slower, q4_0 level; forwards alternating, 3 runs
// each way). Row-major weights keep every token in tiles from T = 8 on. Wider rows than a panel
// holds take the GEMV at every T.
inline int64_t PrefillTokens(int64_t T, const WeightView& w) {
  if (QuantGroups(w.cols, kBlock) > kMaxPanelGroups) return 0;
  if (w.row_tiles == 0) return T >= 8 ? T : 0;
  if (T < 16) return 0;
  const int64_t rest = T % 16;
  return rest < 12 ? T - rest : T;
}

// Dwords of one row's block: q8_0 8 (32 codes), q4_0 4 (32 nibbles).
template <DType D>
constexpr int64_t kTileSteps = D == DType::kI8 ? 8 : 4;

// ---- Activation quantisation ----

struct QuantizedBlock {
  __m256i codes;  // 32 int8 codes, natural column order
  float d;
  int32_t sum;
};

// x [n], n <= 32, as scalar::QuantizeActBlocks quantizes one block. Inlined: as a call it
// returned through memory and cleared the upper registers on every block.
[[gnu::always_inline]] inline QuantizedBlock QuantizeBlock(const float* x, int64_t n) {
  __m512 lo, hi;
  if (n == kBlock) {
    lo = _mm512_loadu_ps(x);
    hi = _mm512_loadu_ps(x + 16);
  } else {
    const __mmask16 m0 = static_cast<__mmask16>(n >= 16 ? 0xffffu : (1u << n) - 1u);
    const __mmask16 m1 = static_cast<__mmask16>(n <= 16 ? 0u : (1u << (n - 16)) - 1u);
    lo = _mm512_maskz_loadu_ps(m0, x);
    hi = _mm512_maskz_loadu_ps(m1, x + 16);
  }
  // max |x| on the bit patterns, as the scalar twin does (NaN > inf > finite).
  const __m512i abs_bits = _mm512_set1_epi32(0x7fffffff);
  const __m512i a = _mm512_max_epu32(_mm512_and_si512(_mm512_castps_si512(lo), abs_bits),
                                     _mm512_and_si512(_mm512_castps_si512(hi), abs_bits));
  const uint32_t amax_bits = _mm512_reduce_max_epu32(a);
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  QuantizedBlock out{_mm256_setzero_si256(), Int8ActScale(amax), 0};
  if (!(out.d > 0.0f && out.d <= std::numeric_limits<float>::max())) return out;
  // vdivps is correctly rounded and vcvtps2dq rounds to nearest even (the default MXCSR mode),
  // as std::nearbyint(x / d) does in the scalar twin.
  const __m512 d = _mm512_set1_ps(out.d);
  const __m512i lim = _mm512_set1_epi32(127), neg_lim = _mm512_set1_epi32(-127);
  __m512i q0 = _mm512_cvtps_epi32(_mm512_div_ps(lo, d));
  __m512i q1 = _mm512_cvtps_epi32(_mm512_div_ps(hi, d));
  q0 = _mm512_min_epi32(_mm512_max_epi32(q0, neg_lim), lim);
  q1 = _mm512_min_epi32(_mm512_max_epi32(q1, neg_lim), lim);
  out.sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
  out.codes = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtepi32_epi8(q0)),
                                      _mm512_cvtepi32_epi8(q1), 1);
  return out;
}

// log2 of a block scale (Int8ActScale: a power of two, 0, inf or NaN): what vscalefps multiplies
// by 2 to the power of. 0 -> -inf (scaling 0 by it gives 0), inf -> inf and NaN -> NaN (scaling 0
// gives NaN, as 0 * d does).
inline float ScaleExponent(float d) {
  return _mm_cvtss_f32(_mm_getexp_ss(_mm_setzero_ps(), _mm_set_ss(d)));
}

// Block b of token t of a (cols columns): read from a.xq, or quantized from x here (the same bits).
[[gnu::always_inline]] inline QuantizedBlock ActBlock(const ActSource& a, int64_t t, int64_t b,
                                                      int64_t cols) {
  if (a.xq != nullptr) {
    const int64_t i = SourceRow(a, t) * QuantGroups(cols, kBlock) + b;  // its row, block b
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.xq->q + i * kBlock)), a.xq->d[i],
            a.xq->sum[i]};
  }
  return QuantizeBlock(ActRow(a, t, cols) + b * kBlock, std::min(kBlock, cols - b * kBlock));
}

// Natural order -> the order q4_0 bytes unpack to: even columns 0, 2, .., 30, then odd 1, .., 31.
inline __m256i ToNibbleOrder(__m256i v) {
  const __m256i evens_then_odds =
      _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12,
                       14, 1, 3, 5, 7, 9, 11, 13, 15);
  v = _mm256_shuffle_epi8(v, evens_then_odds);                  // per 128-bit lane: evens, odds
  return _mm256_permute4x64_epi64(v, _MM_SHUFFLE(3, 1, 2, 0));  // evens of both lanes first
}

// ---- Weights as unsigned bytes ----

// A q4_0 block's 32 unsigned codes in nibble order from its 16 stored bytes: both halves hold
// the bytes, the high half shifted right by 4 brings the high nibbles down (bits crossing into a
// neighbour byte are masked off).
inline __m256i NibbleBlock(__m128i v) {
  const __m256i both =
      _mm256_srlv_epi32(_mm256_broadcastsi128_si256(v), _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

// Block b of a row: 32 unsigned bytes (q8_0: code + 128, natural order; q4_0: nibbles in nibble
// order). kTail: the row's partial last block of n columns; bytes past the row are not read and
// give weight code 0 (x is 0 there too).
template <DType D, bool kTail>
__m256i LoadWeightBlock(const uint8_t* row, int64_t b, int64_t n) {
  if constexpr (D == DType::kI8) {
    const uint8_t* p = row + b * kBlock;
    const __m256i v = kTail ? _mm256_maskz_loadu_epi8((__mmask32{1} << n) - 1, p)
                            : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm256_xor_si256(v, _mm256_set1_epi8(static_cast<char>(0x80)));
  } else {
    const uint8_t* p = row + b * (kBlock / 2);
    const __m128i v =
        kTail ? _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << ((n + 1) / 2)) - 1u), p)
              : _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return NibbleBlock(v);
  }
}

}  // namespace

}  // namespace dsv3::ops::avx512
