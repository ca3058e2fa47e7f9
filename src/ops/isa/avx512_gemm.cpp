// AVX-512 Gemm (ops/gemm.h): the packed outer-product form of MatMul, reading either operand in
// its stored layout. Per token block and k block, A is packed once into [12 tokens][kc] groups
// and B, 64 columns at a time, into [kc][32] panels; the micro-kernel then adds each k block's
// sum to C.
#include <algorithm>

#include "ops/gemm.h"
#include "ops/isa/avx512_gemm_tile.h"

namespace dsv3::ops::avx512 {

namespace {

constexpr int64_t kMc = 64;   // B columns (C columns) per packed panel block
constexpr int64_t kTb = 192;  // A rows (C rows) per packed block, a multiple of kTileTokens

// panel: [ceil(nn / 32)][kc][32] = B(n0 + i, k0 + c), columns past nn zero.
void PackPanel(const GemmOperand& b, int64_t n0, int64_t nn, int64_t k0, int64_t kc, float* panel) {
  if (b.transposed) {
    // B(n, k) = data[k * ld + n]: each k's nn contiguous floats, row by row of the stored matrix.
    const int64_t strips = (nn + kTileRows - 1) / kTileRows;
    for (int64_t c = 0; c < kc; ++c) {
      const float* src = b.data + (k0 + c) * b.ld + n0;
      for (int64_t s = 0; s < strips; ++s) {
        const int64_t valid = nn - s * kTileRows;
        float* dst = panel + (s * kc + c) * kTileRows;
        _mm512_store_ps(dst, _mm512_maskz_loadu_ps(LaneMask(valid), src + s * kTileRows));
        _mm512_store_ps(dst + 16, valid > 16 ? _mm512_maskz_loadu_ps(LaneMask(valid - 16),
                                                                     src + s * kTileRows + 16)
                                             : _mm512_setzero_ps());
      }
    }
    return;
  }
  for (int64_t s = 0; s * kTileRows < nn; ++s) {
    float* dst = panel + s * kc * kTileRows;
    const int64_t valid = std::min(kTileRows, nn - s * kTileRows);
    // B(n, k) = data[n * ld + k]: 16 rows x 16 k at a time, transposed in registers.
    for (int64_t half = 0; half < 2; ++half) {
      const int64_t rows = std::min<int64_t>(16, valid - half * 16);
      if (rows <= 0) {  // columns past nn: zeros (and no pointer past B)
        for (int64_t c = 0; c < kc; ++c)
          _mm512_store_ps(dst + c * kTileRows + half * 16, _mm512_setzero_ps());
        continue;
      }
      const float* src = b.data + (n0 + s * kTileRows + half * 16) * b.ld + k0;
      for (int64_t cb = 0; cb < kc; cb += 16) {
        const int64_t n = std::min<int64_t>(16, kc - cb);
        const __mmask16 m = LaneMask(n);
        __m512 v[16];
        for (int64_t i = 0; i < 16; ++i)
          v[i] = i < rows ? _mm512_maskz_loadu_ps(m, src + i * b.ld + cb) : _mm512_setzero_ps();
        Transpose16x16(v);
        for (int64_t j = 0; j < n; ++j)
          _mm512_store_ps(dst + (cb + j) * kTileRows + half * 16, v[j]);
      }
    }
  }
}

}  // namespace

void GemmBlock(int64_t m0, int64_t m1, int64_t n0, int64_t n1, int64_t K, const GemmOperand& a,
               const GemmOperand& b, float* c, int64_t ldc, bool accumulate) {
  alignas(64) float panel[kMc * kGemmKc];
  alignas(64) float xpanel[kTb * kGemmKc];
  for (int64_t tb0 = m0; tb0 < m1; tb0 += kTb) {
    const int64_t tbn = std::min(kTb, m1 - tb0);
    for (int64_t k0 = 0; k0 < K; k0 += kGemmKc) {
      const int64_t kc = std::min(kGemmKc, K - k0);
      if (a.transposed)
        PackTokensTransposed(a.data, a.ld, tb0, tbn, k0, kc, xpanel);
      else
        PackTokens(a.data, a.ld, tb0, tbn, k0, kc, xpanel);
      const bool add = accumulate || k0 > 0;
      for (int64_t nc0 = n0; nc0 < n1; nc0 += kMc) {
        const int64_t nn = std::min(kMc, n1 - nc0);
        PackPanel(b, nc0, nn, k0, kc, panel);
        for (int64_t s = 0; s * kTileRows < nn; ++s) {
          const int64_t valid = std::min(kTileRows, nn - s * kTileRows);
          const __mmask16 mask0 = LaneMask(valid), mask1 = LaneMask(valid - 16);
          for (int64_t t0 = 0; t0 < tbn; t0 += kTileTokens) {
            const int64_t nt = std::min<int64_t>(kTileTokens, tbn - t0);
            // C[tb0 + t0 .., nc0 + 32 s ..]
            kMicroKernelsF32[nt - 1](
                panel + s * kc * kTileRows, xpanel + (t0 / kTileTokens) * kc * kTileTokens, kc,
                c + (tb0 + t0) * ldc + nc0 + s * kTileRows, ldc, mask0, mask1, add);
          }
        }
      }
    }
  }
}

}  // namespace dsv3::ops::avx512
