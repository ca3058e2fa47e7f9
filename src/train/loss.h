// Cross-entropy over the vocabulary, mean over the rows, with its gradient.
#pragma once

#include <cstdint>

#include "train/linear.h"

namespace dsv3::train {

// logits: [N, V]; targets: [N]. Returns mean_t −log softmax(logits_t)[target_t]. When dlogits is
// not null it receives weight · dLoss/dlogits ([N, V], overwritten).
template <typename Real>
double CrossEntropy(const Context& ctx, const Real* logits, const int32_t* targets, int64_t N,
                    int64_t V, double weight, Real* dlogits);

}  // namespace dsv3::train
