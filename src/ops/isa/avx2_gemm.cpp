// AVX2 Gemm (ops/gemm.h): the packed outer-product form of the AVX2 MatMul, reading either operand
// in its stored layout. Per block of kTb rows of A and k block, A is packed once into [kc][6]
// groups and B, 64 of its rows at a time, into [kc][16] panels; the micro-kernel
// (ops/isa/avx2_gemm_tile.h) sums each k block from zero in order and adds it to C, the order the
// scalar twin follows.
#include <algorithm>

#include "ops/gemm.h"
#include "ops/isa/avx2_gemm_tile.h"
#include "ops/isa/transpose8x8.h"

namespace dsv3::ops::avx2 {

namespace {

constexpr int64_t kMc = 64;   // B rows (C columns) per packed panel block: four strips
constexpr int64_t kTb = 192;  // A rows (C rows) per packed block, a multiple of kPackNt
static_assert(kKc == kGemmKc);

// Lanes [0, n) of a mask for maskload / maskstore.
__m256i LaneMask8(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::clamp<int64_t>(n, 0, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// panel: [ceil(nn / 16)][kc][16] = B(n0 + i, k0 + c), rows of B past nn zero.
void PackPanel(const GemmOperand& b, int64_t n0, int64_t nn, int64_t k0, int64_t kc, float* panel) {
  const int64_t strips = (nn + kStrip - 1) / kStrip;
  if (b.transposed) {
    // B(n, k) = data[k * ld + n]: each k's nn contiguous floats.
    for (int64_t c = 0; c < kc; ++c) {
      const float* src = b.data + (k0 + c) * b.ld + n0;
      for (int64_t s = 0; s < strips; ++s) {
        float* dst = panel + (s * kc + c) * kStrip;
        for (int64_t h = 0; h < 2; ++h) {
          const int64_t first = s * kStrip + h * 8;  // no pointer past B for columns past nn
          _mm256_store_ps(dst + h * 8, first < nn
                                           ? _mm256_maskload_ps(src + first, LaneMask8(nn - first))
                                           : _mm256_setzero_ps());
        }
      }
    }
    return;
  }
  // B(n, k) = data[n * ld + k]: 8 rows x 8 k at a time, transposed in registers.
  for (int64_t first = 0; first < strips * kStrip; first += 8) {
    float* dst = panel + (first / kStrip) * kc * kStrip + first % kStrip;
    const int64_t rows = std::clamp<int64_t>(nn - first, 0, 8);
    const float* src = rows > 0 ? b.data + (n0 + first) * b.ld + k0 : nullptr;
    for (int64_t cb = 0; cb < kc; cb += 8) {
      const int64_t n = std::min<int64_t>(8, kc - cb);
      const __m256i mask = LaneMask8(n);
      __m256 v[8];
      for (int64_t i = 0; i < 8; ++i)
        v[i] = i < rows ? _mm256_maskload_ps(src + i * b.ld + cb, mask) : _mm256_setzero_ps();
      Transpose8x8(v);  // v[j]: column cb + j of the 8 rows
      for (int64_t j = 0; j < n; ++j) _mm256_store_ps(dst + (cb + j) * kStrip, v[j]);
    }
  }
}

// As PackTokens from A stored transposed: A(t, c) = at[c * ld + t]. Column by column, each of at's
// rows read once, front to back.
void PackTokensTransposed(const float* at, int64_t ld, int64_t t0, int64_t nt, int64_t c0,
                          int64_t kc, float* xpanel) {
  for (int64_t g = 0; g * kPackNt < nt; ++g) {
    const int64_t valid = std::min<int64_t>(kPackNt, nt - g * kPackNt);
    float* dst = xpanel + g * kc * kPackNt;
    for (int64_t c = 0; c < kc; ++c) {
      const float* src = at + (c0 + c) * ld + t0 + g * kPackNt;
      for (int64_t j = 0; j < kPackNt; ++j) dst[c * kPackNt + j] = j < valid ? src[j] : 0.0f;
    }
  }
}

}  // namespace

void GemmBlock(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const GemmOperand& a,
               const GemmOperand& b, float* c, int64_t ldc, bool accumulate) {
  // 64 KB + 192 KB of stack, as the AVX-512 Gemm: no allocation.
  alignas(32) float panel[kMc * kKc];
  alignas(32) float xpanel[kTb * kKc];
  for (int64_t tb0 = m0; tb0 < m1; tb0 += kTb) {
    const int64_t tbn = std::min(kTb, m1 - tb0);
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kc = std::min(kKc, K - k0);
      if (a.transposed)
        PackTokensTransposed(a.data, a.ld, tb0, tbn, k0, kc, xpanel);
      else
        PackTokens(a.data, a.ld, tb0, tbn, k0, kc, xpanel);
      const bool add = accumulate || k0 > 0;
      for (int64_t nc0 = n0; nc0 < n1; nc0 += kMc) {
        const int64_t nn = std::min(kMc, n1 - nc0);
        PackPanel(b, nc0, nn, k0, kc, panel);
        for (int64_t s = 0; s * kStrip < nn; ++s) {
          const int64_t valid = std::min(kStrip, nn - s * kStrip);
          for (int64_t t0 = 0; t0 < tbn; t0 += kPackNt) {
            const int64_t nt = std::min<int64_t>(kPackNt, tbn - t0);
            // C[tb0 + t0 .., nc0 + 16 s ..]
            kMicroKernels[nt - 1](panel + s * kc * kStrip, xpanel + (t0 / kPackNt) * kc * kPackNt,
                                  kc, c + (tb0 + t0) * ldc + nc0 + s * kStrip, ldc, valid, add);
          }
        }
      }
    }
  }
}

}  // namespace dsv3::ops::avx2
