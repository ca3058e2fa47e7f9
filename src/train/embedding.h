// Token embedding (spec §2): a row gather, and its backward, a scatter-add into the table.
#pragma once

#include <cstdint>

namespace dsv3::train {

// h[N, H] = table[ids[t]]
template <typename Real>
void EmbeddingForward(const Real* table, const int32_t* ids, int64_t N, int64_t H, Real* h);

// dtable[ids[t]] += dh[t], in token order (fixed, so deterministic).
template <typename Real>
void EmbeddingBackward(const int32_t* ids, int64_t N, int64_t H, const Real* dh, Real* dtable);

}  // namespace dsv3::train
