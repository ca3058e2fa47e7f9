#include "train/loss.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "ops/vector_ops.h"

namespace dsv3::train {

// max(x[0, n)) through 16 independent partial maxima, so the compiler can vectorise it (max is
// exact in any order). n >= 1.
template <typename Real>
Real RowMax(const Real* x, int64_t n) {
  constexpr int64_t kLanes = 16;
  Real part[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) part[l] = x[0];
  int64_t v = 0;
  for (; v + kLanes <= n; v += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] = std::max(part[l], x[v + l]);
  Real m = x[0];
  for (; v < n; ++v) m = std::max(m, x[v]);
  for (int64_t l = 0; l < kLanes; ++l) m = std::max(m, part[l]);
  return m;
}

// sum(x[0, n)) in double through 8 partial sums (a fixed order, vectorisable).
template <typename Real>
double RowSum(const Real* x, int64_t n) {
  constexpr int64_t kLanes = 8;
  double part[kLanes] = {};
  int64_t v = 0;
  for (; v + kLanes <= n; v += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) part[l] += static_cast<double>(x[v + l]);
  double sum = 0;
  for (int64_t l = 0; l < kLanes; ++l) sum += part[l];
  for (; v < n; ++v) sum += static_cast<double>(x[v]);
  return sum;
}

template <typename Real>
double CrossEntropy(const Context& ctx, const Real* logits, const int32_t* targets, int64_t N,
                    int64_t V, double weight, Real* dlogits) {
  std::vector<double> row_loss(static_cast<size_t>(N));
  ParallelRows(ctx, N, [&](int64_t t0, int64_t t1) {
    std::vector<Real> scratch;  // the exps of a row when no gradient is wanted
    for (int64_t t = t0; t < t1; ++t) {
      const Real* lt = logits + t * V;
      const Real mx = RowMax(lt, V);
      // e_v = exp(l_v - max) in Real, summed in double. Float: ops::Exp, the vectorised exp of
      // the ISA (<= 2^-23 relative error, the same bound as expf's few ulp).
      Real* dt = dlogits == nullptr ? nullptr : dlogits + t * V;
      Real* e = dt;
      if (e == nullptr) {
        scratch.resize(static_cast<size_t>(V));
        e = scratch.data();
      }
      for (int64_t v = 0; v < V; ++v) e[v] = lt[v] - mx;
      if constexpr (std::is_same_v<Real, float>) {
        ops::Exp(ctx.isa, e, V, e);
      } else {
        for (int64_t v = 0; v < V; ++v) e[v] = std::exp(e[v]);
      }
      const double sum = RowSum(e, V);
      const double log_z = std::log(sum) + static_cast<double>(mx);
      row_loss[t] = log_z - static_cast<double>(lt[targets[t]]);
      if (dt == nullptr) continue;
      const double scale = weight / static_cast<double>(N);
      const Real factor = static_cast<Real>(scale / sum);  // softmax · weight / N
      for (int64_t v = 0; v < V; ++v) dt[v] *= factor;
      dt[targets[t]] -= static_cast<Real>(scale);
    }
  });
  double total = 0;  // summed in row order: independent of the thread count
  for (double l : row_loss) total += l;
  return total / static_cast<double>(N);
}

template double CrossEntropy<float>(const Context&, const float*, const int32_t*, int64_t, int64_t,
                                    double, float*);
template double CrossEntropy<double>(const Context&, const double*, const int32_t*, int64_t,
                                     int64_t, double, double*);

}  // namespace dsv3::train
