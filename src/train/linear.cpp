#include "train/linear.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "ops/matmul.h"
#include "ops/transpose.h"
#include "util/dtype.h"

namespace dsv3::train {

namespace {

void Transpose(const Context& ctx, const float* src, int64_t rows, int64_t cols, float* dst) {
  ops::Transpose(ops::KernelContext{ctx.pool, ctx.isa}, src, rows, cols, dst);
}

// dst[rows, cols] = op(i, k) for i < rows, k < cols: a dense row-major copy of a Gemm operand.
void Densify(const Context& ctx, const ops::GemmOperand& op, int64_t rows, int64_t cols,
             std::vector<float>* dst) {
  dst->resize(static_cast<size_t>(rows * cols));
  if (op.transposed && op.ld == rows) {
    Transpose(ctx, op.data, cols, rows, dst->data());
    return;
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < cols; ++k)
      (*dst)[i * cols + k] = op.transposed ? op.data[k * op.ld + i] : op.data[i * op.ld + k];
}

}  // namespace

// y[T, n] = x[T, k] · w[n, k]^T on the packed SIMD kernels of ops/ (fixed summation order per
// element, independent of the thread count). With ctx.bf16_compute both operands are rounded to
// bf16 first (their products are then exact in f32 and summed in f32): vdpbf16ps where the CPU
// has it, the same numbers up to summation order elsewhere.
void ProductF32(const Context& ctx, const float* x, int64_t T, const float* w, int64_t n, int64_t k,
                float* y) {
  ops::WeightView view;
  view.rows = n;
  view.cols = k;
  ops::KernelContext kctx{ctx.pool, ctx.isa};
  if (!ctx.bf16_compute) {
    view.dtype = DType::kF32;
    view.data = w;
    ops::MatMul(kctx, x, T, view, y);
    return;
  }
  std::vector<uint16_t> wb(static_cast<size_t>(n * k));  // w in bf16: [n, k]
  std::vector<float> xb(static_cast<size_t>(T * k));     // x rounded to bf16: [T, k]
  ParallelRows(ctx, n, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0 * k; i < r1 * k; ++i) wb[i] = F32ToBf16(w[i]);
  });
  ParallelRows(ctx, T, [&](int64_t t0, int64_t t1) {
    for (int64_t i = t0 * k; i < t1 * k; ++i) xb[i] = Bf16ToF32(F32ToBf16(x[i]));
  });
  view.dtype = DType::kBF16;
  view.data = wb.data();
  kctx.bf16_dot = true;
  ops::MatMul(kctx, xb.data(), T, view, y);
}

void GemmF32(const Context& ctx, int64_t M, int64_t N, int64_t K, const ops::GemmOperand& a,
             const ops::GemmOperand& b, float* c, int64_t ldc, bool accumulate) {
  if (!ctx.bf16_compute && ops::GemmIsPacked(ctx.isa)) {
    ops::Gemm(ops::KernelContext{ctx.pool, ctx.isa}, M, N, K, a, b, c, ldc, accumulate);
    return;
  }
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t m = 0; m < M; ++m) std::fill(c + m * ldc, c + m * ldc + N, 0.0f);
    return;
  }
  std::vector<float> ad, bd;
  const float* ap = a.data;
  const float* bp = b.data;
  if (a.transposed || a.ld != K) {
    Densify(ctx, a, M, K, &ad);  // A: [M, K]
    ap = ad.data();
  }
  if (b.transposed || b.ld != K) {
    Densify(ctx, b, N, K, &bd);  // B: [N, K]
    bp = bd.data();
  }
  if (!accumulate && ldc == N) {
    ProductF32(ctx, ap, M, bp, N, K, c);
    return;
  }
  std::vector<float> tmp(static_cast<size_t>(M * N));  // A · B^T: [M, N]
  ProductF32(ctx, ap, M, bp, N, K, tmp.data());
  ParallelRows(ctx, M, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m)
      for (int64_t n = 0; n < N; ++n)
        c[m * ldc + n] = accumulate ? c[m * ldc + n] + tmp[m * N + n] : tmp[m * N + n];
  });
}

template <typename Real>
void LinearForward(const Context& ctx, const Real* x, int64_t T, const Real* W, int64_t out,
                   int64_t in, Real* y) {
  if constexpr (std::is_same_v<Real, float>) {
    GemmF32(ctx, T, out, in, {x, in, false}, {W, in, false}, y, out, false);  // y: [T, out]
  } else {
    ParallelRows(ctx, T, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const Real* xr = x + t * in;
        for (int64_t o = 0; o < out; ++o) {
          const Real* wr = W + o * in;
          Real acc = 0;
          for (int64_t i = 0; i < in; ++i) acc += xr[i] * wr[i];
          y[t * out + o] = acc;
        }
      }
    });
  }
}

namespace {

void LinearBackwardF32(const Context& ctx, const float* x, int64_t T, const float* W, int64_t out,
                       int64_t in, const float* dy, float* dx, float* dW) {
  // dx[T, in] += dy[T, out] · W[out, in]:  A(t, o) = dy[t, o], B(i, o) = W[o, i]
  if (dx != nullptr) GemmF32(ctx, T, in, out, {dy, out, false}, {W, in, true}, dx, in, true);
  // dW[out, in] += dy^T · x:  A(o, t) = dy[t, o], B(i, t) = x[t, i]
  if (dW != nullptr) GemmF32(ctx, out, in, T, {dy, out, true}, {x, in, true}, dW, in, true);
}

}  // namespace

template <typename Real>
void LinearBackward(const Context& ctx, const Real* x, int64_t T, const Real* W, int64_t out,
                    int64_t in, const Real* dy, Real* dx, Real* dW) {
  if constexpr (std::is_same_v<Real, float>) {
    LinearBackwardF32(ctx, x, T, W, out, in, dy, dx, dW);
    return;
  }
  if (dx != nullptr) {
    // dx: [T, in], one row per task; axpy over W's rows vectorises.
    ParallelRows(ctx, T, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        Real* dxr = dx + t * in;
        const Real* dyr = dy + t * out;
        for (int64_t o = 0; o < out; ++o) {
          const Real a = dyr[o];
          if (a == Real(0)) continue;
          const Real* wr = W + o * in;
          for (int64_t i = 0; i < in; ++i) dxr[i] += a * wr[i];
        }
      }
    });
  }
  if (dW != nullptr) {
    // dW: [out, in], one row per task, summed over t in order.
    ParallelRows(ctx, out, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        Real* dwr = dW + o * in;
        for (int64_t t = 0; t < T; ++t) {
          const Real a = dy[t * out + o];
          if (a == Real(0)) continue;
          const Real* xr = x + t * in;
          for (int64_t i = 0; i < in; ++i) dwr[i] += a * xr[i];
        }
      }
    });
  }
}

template void LinearForward<float>(const Context&, const float*, int64_t, const float*, int64_t,
                                   int64_t, float*);
template void LinearForward<double>(const Context&, const double*, int64_t, const double*, int64_t,
                                    int64_t, double*);
template void LinearBackward<float>(const Context&, const float*, int64_t, const float*, int64_t,
                                    int64_t, const float*, float*, float*);
template void LinearBackward<double>(const Context&, const double*, int64_t, const double*, int64_t,
                                     int64_t, const double*, double*, double*);

}  // namespace dsv3::train
