#include "train/loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace dsv3::train {

template <typename Real>
double CrossEntropy(const Context& ctx, const Real* logits, const int32_t* targets, int64_t N,
                    int64_t V, double weight, Real* dlogits) {
  std::vector<double> row_loss(static_cast<size_t>(N));
  ParallelRows(ctx, N, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const Real* lt = logits + t * V;
      const Real mx = *std::max_element(lt, lt + V);
      double sum = 0;
      for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(lt[v] - mx));
      const double log_z = std::log(sum) + static_cast<double>(mx);
      row_loss[t] = log_z - static_cast<double>(lt[targets[t]]);
      if (dlogits == nullptr) continue;
      const double scale = weight / static_cast<double>(N);
      Real* dt = dlogits + t * V;
      for (int64_t v = 0; v < V; ++v)
        dt[v] = static_cast<Real>(std::exp(static_cast<double>(lt[v]) - log_z) * scale);
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
