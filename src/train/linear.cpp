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

void AddInto(const Context& ctx, const std::vector<float>& src, float* dst) {
  const int64_t n = static_cast<int64_t>(src.size());
  ParallelRows(ctx, (n + 4095) / 4096, [&](int64_t b0, int64_t b1) {
    for (int64_t i = b0 * 4096; i < std::min(n, b1 * 4096); ++i) dst[i] += src[i];
  });
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

template <typename Real>
void LinearForward(const Context& ctx, const Real* x, int64_t T, const Real* W, int64_t out,
                   int64_t in, Real* y) {
  if constexpr (std::is_same_v<Real, float>) {
    ProductF32(ctx, x, T, W, out, in, y);  // y: [T, out]
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
  if (T == 0 || out == 0 || in == 0) return;
  if (dx != nullptr) {
    std::vector<float> wt(static_cast<size_t>(in * out));  // W^T: [in, out]
    Transpose(ctx, W, out, in, wt.data());
    std::vector<float> tmp(static_cast<size_t>(T * in));  // dy · W: [T, in]
    ProductF32(ctx, dy, T, wt.data(), in, out, tmp.data());
    AddInto(ctx, tmp, dx);
  }
  if (dW != nullptr) {
    std::vector<float> dyt(static_cast<size_t>(out * T));  // dy^T: [out, T]
    std::vector<float> xt(static_cast<size_t>(in * T));    // x^T: [in, T]
    Transpose(ctx, dy, T, out, dyt.data());
    Transpose(ctx, x, T, in, xt.data());
    std::vector<float> tmp(static_cast<size_t>(out * in));  // dy^T · x: [out, in]
    ProductF32(ctx, dyt.data(), out, xt.data(), in, T, tmp.data());
    AddInto(ctx, tmp, dW);
  }
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
