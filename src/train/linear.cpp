#include "train/linear.h"

#include <type_traits>

#include "ops/matmul.h"

namespace dsv3::train {

template <typename Real>
void LinearForward(const Context& ctx, const Real* x, int64_t T, const Real* W, int64_t out,
                   int64_t in, Real* y) {
  if constexpr (std::is_same_v<Real, float>) {
    // The SIMD kernels of ops/ split over W's rows; each y element is one fixed-order dot product.
    ops::WeightView w;
    w.dtype = DType::kF32;
    w.rows = out;
    w.cols = in;
    w.data = W;
    ops::KernelContext kctx{ctx.pool, ctx.isa};
    ops::MatMul(kctx, x, T, w, y);
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

template <typename Real>
void LinearBackward(const Context& ctx, const Real* x, int64_t T, const Real* W, int64_t out,
                    int64_t in, const Real* dy, Real* dx, Real* dW) {
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
