// AVX2+FMA variants of the vector kernels (compiled with -mavx2 -mfma -mf16c; reached only through
// the run-time dispatch in ops/vector_ops.cpp). Tails of fewer than 8 values run in scalar code,
// except in the exp-based kernels, which use masked loads so that every value gets the same exp.
#include "ops/isa/simd_intrinsics.h"

#include <cmath>

#include "ops/exp_kernels.h"
#include "ops/isa/avx2_exp.h"
#include "ops/kernels_internal.h"

namespace dsv3::ops::avx2 {

namespace {

float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

double HorizontalSum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

// All-ones in the first n (< 8) lanes, for vmaskmovps.
__m256i TailMask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// silu(g) * up = g / (1 + exp(-g)) * up, rounded as the scalar twin rounds it.
__m256 SiluMulVec(__m256 g, __m256 up) {
  const __m256 e = Exp(_mm256_xor_ps(g, _mm256_set1_ps(-0.0f)));
  return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), up);
}

}  // namespace

void RmsNorm(const float* x, const float* w, int64_t n, double eps, float* out) {
  if (n <= 0) return;
  // Squares of f32 values are exact in double, so only the summation order differs from scalar.
  __m256d acc0 = _mm256_setzero_pd();
  __m256d acc1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    acc0 = _mm256_fmadd_pd(lo, lo, acc0);
    acc1 = _mm256_fmadd_pd(hi, hi, acc1);
  }
  double sum_sq = HorizontalSum(_mm256_add_pd(acc0, acc1));
  for (int64_t j = i; j < n; ++j) sum_sq += static_cast<double>(x[j]) * x[j];
  const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(n) + eps));
  // Same two roundings per element as the scalar twin: w * (x * inv_rms).
  const __m256 scale = _mm256_set1_ps(inv_rms);
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), scale);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), v));
  }
  for (; i < n; ++i) out[i] = w[i] * (x[i] * inv_rms);
}

float Dot(const float* a, const float* b, int64_t n) {
  // Four independent chains hide the FMA latency.
  __m256 acc0 = _mm256_setzero_ps();
  __m256 acc1 = _mm256_setzero_ps();
  __m256 acc2 = _mm256_setzero_ps();
  __m256 acc3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
    acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
  }
  for (; i + 8 <= n; i += 8)
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float sum = HorizontalSum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

void Axpy(float alpha, const float* x, int64_t n, float* y) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}

void Exp(const float* x, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, Exp(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i m = TailMask(n - i);
    _mm256_maskstore_ps(out + i, m, Exp(_mm256_maskload_ps(x + i, m)));
  }
}

void SiluMul(float* gate, const float* up, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(gate + i, SiluMulVec(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  if (i < n) {
    const __m256i m = TailMask(n - i);
    const __m256 r = SiluMulVec(_mm256_maskload_ps(gate + i, m), _mm256_maskload_ps(up + i, m));
    _mm256_maskstore_ps(gate + i, m, r);
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
  __m256 max_acc = neg_inf;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) max_acc = _mm256_max_ps(max_acc, _mm256_loadu_ps(x + i));
  const __m256i tail = TailMask(n - i);
  // Lanes past the end read as -inf: neutral for the max, and their exp is 0.
  const auto load_tail = [&](const float* p) {
    return _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(p, tail), _mm256_castsi256_ps(tail));
  };
  if (i < n) max_acc = _mm256_max_ps(max_acc, load_tail(x + i));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(max_acc), _mm256_extractf128_ps(max_acc, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const __m256 max_value = _mm256_set1_ps(_mm_cvtss_f32(m4));
  __m256 sum = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), max_value));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    const __m256 e = Exp(_mm256_sub_ps(load_tail(x + i), max_value));
    _mm256_maskstore_ps(x + i, tail, e);
    sum = _mm256_add_ps(sum, e);
  }
  // Dividing, as the scalar twin does: each output is within one rounding of exp/sum.
  const __m256 total = _mm256_set1_ps(HorizontalSum(sum));
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), total));
  if (i < n)
    _mm256_maskstore_ps(x + i, tail, _mm256_div_ps(_mm256_maskload_ps(x + i, tail), total));
}

}  // namespace dsv3::ops::avx2
