#include "train/embedding.h"

#include <algorithm>

namespace dsv3::train {

template <typename Real>
void EmbeddingForward(const Real* table, const int32_t* ids, int64_t N, int64_t H, Real* h) {
  for (int64_t t = 0; t < N; ++t) std::copy_n(table + int64_t{ids[t]} * H, H, h + t * H);
}

template <typename Real>
void EmbeddingBackward(const int32_t* ids, int64_t N, int64_t H, const Real* dh, Real* dtable) {
  for (int64_t t = 0; t < N; ++t) {
    Real* row = dtable + int64_t{ids[t]} * H;
    for (int64_t j = 0; j < H; ++j) row[j] += dh[t * H + j];
  }
}

template void EmbeddingForward<float>(const float*, const int32_t*, int64_t, int64_t, float*);
template void EmbeddingForward<double>(const double*, const int32_t*, int64_t, int64_t, double*);
template void EmbeddingBackward<float>(const int32_t*, int64_t, int64_t, const float*, float*);
template void EmbeddingBackward<double>(const int32_t*, int64_t, int64_t, const double*, double*);

}  // namespace dsv3::train
