// AVX-512 variants of the vector kernels (compiled with AVX-512 flags; reached only through the
// run-time dispatch in ops/vector_ops.cpp). Tails use masked loads, which never touch the bytes
// past the end.
#include "ops/isa/simd_intrinsics.h"

#include <cmath>

#include "ops/exp_kernels.h"
#include "ops/isa/avx512_exp.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx512 {

namespace {

__mmask16 TailMask(int64_t n) {
  return static_cast<__mmask16>((1u << n) - 1u);
}

__m512d WidenLow(__m512 v) {
  return _mm512_cvtps_pd(_mm512_castps512_ps256(v));
}
__m512d WidenHigh(__m512 v) {
  return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
}

float ReduceAdd(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

double ReduceAdd(__m512d v) {
  const __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

// silu(g) * up = g / (1 + exp(-g)) * up, rounded as the scalar twin rounds it.
__m512 SiluMulVec(__m512 g, __m512 up) {
  const __m512 e = Exp(_mm512_xor_ps(g, _mm512_set1_ps(-0.0f)));
  return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), up);
}

}  // namespace

void RmsNorm(const float* x, const float* w, int64_t n, double eps, float* out) {
  if (n <= 0) return;
  // Squares of f32 values are exact in double, so only the summation order differs from scalar.
  __m512d acc0 = _mm512_setzero_pd();
  __m512d acc1 = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512d lo = WidenLow(v);
    const __m512d hi = WidenHigh(v);
    acc0 = _mm512_fmadd_pd(lo, lo, acc0);
    acc1 = _mm512_fmadd_pd(hi, hi, acc1);
  }
  if (i < n) {
    const __m512 v = _mm512_maskz_loadu_ps(TailMask(n - i), x + i);
    const __m512d lo = WidenLow(v);
    const __m512d hi = WidenHigh(v);
    acc0 = _mm512_fmadd_pd(lo, lo, acc0);
    acc1 = _mm512_fmadd_pd(hi, hi, acc1);
  }
  const double sum_sq = ReduceAdd(_mm512_add_pd(acc0, acc1));
  const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps));
  // Same two roundings per element as the scalar twin: w * (x * inv_rms).
  const __m512 scale = _mm512_set1_ps(inv_rms);
  for (i = 0; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), scale);
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_loadu_ps(w + i), v));
  }
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), scale);
    _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, w + i), v));
  }
}

float Dot(const float* a, const float* b, int64_t n) {
  // Four independent chains hide the FMA latency (attention dots are a few hundred long).
  __m512 acc0 = _mm512_setzero_ps();
  __m512 acc1 = _mm512_setzero_ps();
  __m512 acc2 = _mm512_setzero_ps();
  __m512 acc3 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), acc2);
    acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), acc3);
  }
  for (; i + 16 <= n; i += 16)
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
  }
  return ReduceAdd(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

void Axpy(float alpha, const float* x, int64_t n, float* y) {
  const __m512 a = _mm512_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    const __m512 r =
        _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
    _mm512_mask_storeu_ps(y + i, m, r);
  }
}

void Exp(const float* x, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, Exp(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    _mm512_mask_storeu_ps(out + i, m, Exp(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

void SiluMul(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(gate + i, SiluMulVec(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
  if (i < n) {
    const __mmask16 m = TailMask(n - i);
    const __m512 r =
        SiluMulVec(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, up + i));
    _mm512_mask_storeu_ps(gate + i, m, r);
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  __m512 max_acc = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) max_acc = _mm512_max_ps(max_acc, _mm512_loadu_ps(x + i));
  const __mmask16 tail = TailMask(n - i);
  if (i < n)
    max_acc = _mm512_mask_max_ps(max_acc, tail, max_acc, _mm512_maskz_loadu_ps(tail, x + i));
  const __m512 max_value = _mm512_set1_ps(_mm512_reduce_max_ps(max_acc));
  __m512 sum = _mm512_setzero_ps();
  for (i = 0; i + 16 <= n; i += 16) {
    const __m512 e = Exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), max_value));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < n) {
    const __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + i), max_value));
    _mm512_mask_storeu_ps(x + i, tail, e);
    sum = _mm512_mask_add_ps(sum, tail, sum, e);
  }
  // Dividing, as the scalar twin does: each output is within one rounding of exp/sum.
  const __m512 total = _mm512_set1_ps(ReduceAdd(sum));
  for (i = 0; i + 16 <= n; i += 16)
    _mm512_storeu_ps(x + i, _mm512_div_ps(_mm512_loadu_ps(x + i), total));
  if (i < n)
    _mm512_mask_storeu_ps(x + i, tail, _mm512_div_ps(_mm512_maskz_loadu_ps(tail, x + i), total));
}

}  // namespace dsv3::ops::avx512
