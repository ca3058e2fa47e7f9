// The fused MLA attention (ops/mla_attention.h): every ISA variant against the plain three-pass
// computation in double (scores, softmax, weighted sum) within a tolerance derived from the
// kernel's error model, and against the scalar twin; cache lengths that are not multiples of any
// block size (8, 16), n = 1, score ranges of hundreds, scores that rise at every position (a
// rescale per block), and heads split over calls.
//
// Error model (u = 2^-24, gamma(m) = 1.01*m*u; Higham §3.1). Every variant computes, per head,
// o = sum_j w_j c_j / sum_j w_j with w_j the exact weights exp(s_j - max s) up to a relative error
// eps_j, and rounds the two sums and the quotient. Perturbing the weights of a convex combination
// by relative errors <= eps moves each component k by at most eps/(1-eps) * sum_j p_j |c_jk - o_k|
// <= 2.02 * eps * max_j |c_jk|. The weight errors, in the exponent unless said otherwise:
//   - the f32 score: gamma(r + dr + 2) * scale * sum |q| |c, k_pe| (dot product and scale);
//     the maximum's own error is common to all weights and cancels in the normalisation;
//   - the f32 subtractions s_j - running max and old max - new max: u * (max s - min s) each;
//   - exp, relative, once for the weight and once per rescale after it (K rescales at most, K the
//     number of positions where the running maximum rises, near-ties counted), plus the rounding
//     of each rescaling multiply: (K + 1) * (kExpRelError + u).
// The sums of n weighted terms (and K rescales): gamma(n + K + 2) each, relative to
// sum_j p_j |c_jk| <= max_j |c_jk|; the quotient: u.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "float_test_util.h"
#include "ops/exp_kernels.h"
#include "ops/isa.h"
#include "ops/mla_attention.h"
#include "ops/mla_attention_kernels.h"

namespace dsv3::ops {
namespace {

using testing::GammaBound;
using testing::kUnitRoundoff;

struct Problem {
  int64_t heads = 0, r = 0, dr = 0, rope_stride = 0, n = 0;
  float scale = 0.1f;
  std::vector<float> q_lat, q_rope, latent, rope_key;

  MlaQuery Query() const { return {q_lat.data(), q_rope.data(), rope_stride, heads, scale}; }
  LatentCacheView Cache() const { return {latent.data(), rope_key.data(), n, r, dr}; }
};

enum class Scores {
  kTypical,  // |s| of a few units
  kWide,     // scores spread over hundreds: most weights underflow
  kRising,   // the score rises at every position: a rescale in every block
};

Problem MakeProblem(std::mt19937& rng, int64_t heads, int64_t r, int64_t dr, int64_t n,
                    Scores kind) {
  Problem p;
  p.heads = heads;
  p.r = r;
  p.dr = dr;
  p.rope_stride = dr + 3;  // q_pe rows inside a wider q, as in the model
  p.n = n;
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  const auto fill = [&](std::vector<float>& v, int64_t size, float mult) {
    v.resize(static_cast<size_t>(size));
    for (auto& f : v) f = mult * unit(rng);
  };
  fill(p.latent, n * r, 1.0f);
  fill(p.rope_key, n * dr, 1.0f);
  fill(p.q_lat, heads * r, kind == Scores::kWide ? 40.0f : 1.0f);
  fill(p.q_rope, heads * p.rope_stride, kind == Scores::kWide ? 40.0f : 1.0f);
  if (kind == Scores::kRising) {
    // Feature 0 of the latent grows with the position and every query weighs it heavily.
    for (int64_t j = 0; j < n; ++j) p.latent[j * r] = 0.05f * static_cast<float>(j);
    for (int64_t h = 0; h < heads; ++h) p.q_lat[h * r] = 30.0f;
  }
  return p;
}

// The three-pass computation in double, and the tolerance of each output from the error model.
struct Reference {
  std::vector<double> o;    // [heads, r]
  std::vector<double> tol;  // [heads, r]
};

// extra_rescales: rescales of the running maximum beyond those of one pass over the positions
// (each part of a split cache starts its own maximum, and the merge rescales each part once).
Reference ThreePassInDouble(const Problem& p, int64_t extra_rescales = 0) {
  Reference ref;
  ref.o.assign(static_cast<size_t>(p.heads * p.r), 0.0);
  ref.tol.assign(ref.o.size(), 0.0);
  std::vector<double> s(static_cast<size_t>(p.n)), s_abs(s.size());
  for (int64_t h = 0; h < p.heads; ++h) {
    const float* q_lat = p.q_lat.data() + h * p.r;
    const float* q_pe = p.q_rope.data() + h * p.rope_stride;
    for (int64_t j = 0; j < p.n; ++j) {
      double dot = 0.0, abs_dot = 0.0;
      for (int64_t k = 0; k < p.r; ++k) {
        dot += static_cast<double>(q_lat[k]) * p.latent[j * p.r + k];
        abs_dot += std::fabs(static_cast<double>(q_lat[k]) * p.latent[j * p.r + k]);
      }
      for (int64_t k = 0; k < p.dr; ++k) {
        dot += static_cast<double>(q_pe[k]) * p.rope_key[j * p.dr + k];
        abs_dot += std::fabs(static_cast<double>(q_pe[k]) * p.rope_key[j * p.dr + k]);
      }
      s[j] = p.scale * dot;
      s_abs[j] = std::fabs(p.scale) * abs_dot;
    }
    if (p.n == 0) continue;
    const double max_s = *std::max_element(s.begin(), s.end());
    const double min_s = *std::min_element(s.begin(), s.end());
    double score_err = 0.0;
    for (double a : s_abs) score_err = std::max(score_err, GammaBound(p.r + p.dr + 2) * a);
    // Rescales: positions where the running maximum rises, counting near-ties (the f32 scores
    // may order them either way).
    int64_t rescales = 0;
    double running = -INFINITY;
    for (double v : s) {
      if (v > running - 2.0 * score_err) ++rescales;
      running = std::max(running, v);
    }
    const double k = static_cast<double>(rescales + extra_rescales);
    const double eps = 2.0 * score_err + 2.0 * kUnitRoundoff * (max_s - min_s) +
                       (k + 1.0) * (kExpRelError + kUnitRoundoff);
    const double sums = 2.0 * GammaBound(static_cast<double>(p.n) + k + 2.0) + kUnitRoundoff;
    double denom = 0.0;
    for (int64_t j = 0; j < p.n; ++j) denom += std::exp(s[j] - max_s);
    for (int64_t c = 0; c < p.r; ++c) {
      double num = 0.0, max_abs_c = 0.0;
      for (int64_t j = 0; j < p.n; ++j) {
        num += std::exp(s[j] - max_s) * p.latent[j * p.r + c];
        max_abs_c = std::max(max_abs_c, std::fabs(static_cast<double>(p.latent[j * p.r + c])));
      }
      ref.o[h * p.r + c] = num / denom;
      // Weights that underflow to subnormals or 0 add an absolute error below n * 2^-126.
      ref.tol[h * p.r + c] = (2.02 * eps + sums) * max_abs_c + static_cast<double>(p.n) * 0x1p-126;
    }
  }
  return ref;
}

std::vector<float> RunKernel(Isa isa, const Problem& p) {
  std::vector<float> o(static_cast<size_t>(p.heads * p.r), -1.0f);
  MlaAttention(isa, p.Query(), p.Cache(), o.data());
  return o;
}

std::string Name(Isa isa, const Problem& p, Scores kind) {
  return std::string(IsaName(isa)) + " heads=" + std::to_string(p.heads) +
         " r=" + std::to_string(p.r) + " dr=" + std::to_string(p.dr) + " n=" + std::to_string(p.n) +
         " kind=" + std::to_string(static_cast<int>(kind));
}

struct Shape {
  int64_t heads, r, dr;
};

// bench-small's attention (8 heads, kv_lora 256, rope 32), ragged widths, and a rope-less one.
const Shape kShapes[] = {{8, 256, 32}, {3, 37, 5}, {2, 16, 8}, {1, 100, 0}, {5, 24, 19}};
const int64_t kLengths[] = {1, 2, 7, 8, 9, 15, 16, 17, 33, 100, 257};

TEST(MlaAttention, EveryIsaMatchesThreePassDoubleAndScalarTwin) {
  std::mt19937 rng(30);
  for (const Shape& shape : kShapes) {
    for (int64_t n : kLengths) {
      for (Scores kind : {Scores::kTypical, Scores::kWide, Scores::kRising}) {
        const Problem p = MakeProblem(rng, shape.heads, shape.r, shape.dr, n, kind);
        const Reference ref = ThreePassInDouble(p);
        const std::vector<float> twin = RunKernel(Isa::kScalar, p);
        for (Isa isa : RunnableIsas()) {
          const std::vector<float> o = isa == Isa::kScalar ? twin : RunKernel(isa, p);
          for (size_t i = 0; i < o.size(); ++i) {
            ASSERT_LE(std::fabs(o[i] - ref.o[i]), ref.tol[i]) << Name(isa, p, kind) << " i=" << i;
            ASSERT_LE(std::fabs(o[i] - twin[i]), 2.0 * ref.tol[i])
                << Name(isa, p, kind) << " i=" << i;
          }
        }
      }
    }
  }
}

TEST(MlaAttention, HeadsDoNotDependOnTheirNeighbours) {
  // The model splits heads over threads: a head's bits must not depend on the call it is in.
  std::mt19937 rng(31);
  for (int64_t n : {1, 17, 100}) {
    const Problem all = MakeProblem(rng, 6, 40, 7, n, Scores::kTypical);
    for (Isa isa : RunnableIsas()) {
      const std::vector<float> together = RunKernel(isa, all);
      for (int64_t h = 0; h < all.heads; ++h) {
        MlaQuery one = all.Query();
        one.lat += h * all.r;
        one.rope += h * all.rope_stride;
        one.num_heads = 1;
        std::vector<float> alone(static_cast<size_t>(all.r));
        MlaAttention(isa, one, all.Cache(), alone.data());
        EXPECT_EQ(std::memcmp(alone.data(), together.data() + h * all.r, alone.size() * 4), 0)
            << IsaName(isa) << " n=" << n << " head " << h;
      }
    }
  }
}

TEST(MlaAttention, OnePositionReturnsItsLatentAndEmptyCacheGivesZeros) {
  std::mt19937 rng(32);
  const Problem p = MakeProblem(rng, 3, 21, 6, 1, Scores::kWide);
  for (Isa isa : RunnableIsas()) {
    // A single weight is exp(0) / exp(0) = 1 exactly.
    const std::vector<float> o = RunKernel(isa, p);
    for (int64_t h = 0; h < p.heads; ++h)
      for (int64_t k = 0; k < p.r; ++k) EXPECT_EQ(o[h * p.r + k], p.latent[k]) << IsaName(isa);
    Problem empty = p;
    empty.n = 0;
    for (float v : RunKernel(isa, empty)) EXPECT_EQ(v, 0.0f) << IsaName(isa);
  }
}

// A long cache is decoded in parts (model/mla.cpp): MlaAttentionPartial over consecutive ranges
// and MergeMlaPartials give the softmax over all positions within the error model, with one
// more rescale per part and the merge's (each part restarts its running maximum, the merge
// rescales each part once and adds the parts' sums). One part is MlaAttention bit for bit; an
// empty part adds nothing.
TEST(MlaAttention, PartsMergeToTheWholeCache) {
  std::mt19937 rng(34);
  for (const Shape& shape : {Shape{8, 256, 32}, Shape{3, 37, 5}, Shape{5, 24, 19}}) {
    for (int64_t n : {33, 100, 257}) {
      for (Scores kind : {Scores::kTypical, Scores::kWide, Scores::kRising}) {
        const Problem p = MakeProblem(rng, shape.heads, shape.r, shape.dr, n, kind);
        for (int64_t part : {int64_t{16}, int64_t{48}, int64_t{7}, n}) {
          // Ranges [0, part), [part, 2 part), ..., and an empty one at the end.
          std::vector<int64_t> begins;
          for (int64_t b = 0; b < n; b += part) begins.push_back(b);
          begins.push_back(n);
          const int64_t parts = static_cast<int64_t>(begins.size());
          const Reference ref = ThreePassInDouble(p, parts + 1);
          for (Isa isa : RunnableIsas()) {
            const int64_t hr = p.heads * p.r;
            // NaN where every output will be: a result the kernels leave unwritten shows.
            const float nan = std::numeric_limits<float>::quiet_NaN();
            std::vector<float> o_parts(static_cast<size_t>(parts * hr), nan), o(hr, nan);
            std::vector<float> max(static_cast<size_t>(parts * p.heads), nan), sum(max.size(), nan);
            for (int64_t i = 0; i < parts; ++i) {
              LatentCacheView view = p.Cache();
              view.latent += begins[i] * p.r;
              view.rope_key += begins[i] * p.dr;
              view.n = std::min(part, n - begins[i]);
              MlaAttentionPartial(isa, p.Query(), view, o_parts.data() + i * hr,
                                  max.data() + i * p.heads, sum.data() + i * p.heads);
            }
            MergeMlaPartials(parts, p.heads, p.r, 0, p.heads, o_parts.data(), max.data(),
                             sum.data(), o.data());
            for (int64_t i = 0; i < hr; ++i) {
              ASSERT_LE(std::fabs(o[i] - ref.o[i]), ref.tol[i])
                  << Name(isa, p, kind) << " part=" << part << " i=" << i;
            }
            if (part == n) {  // one part (and the empty one)
              EXPECT_EQ(std::memcmp(o.data(), RunKernel(isa, p).data(), o.size() * 4), 0)
                  << Name(isa, p, kind);
            }
          }
        }
      }
    }
  }
}

TEST(MlaAttention, LongCacheWithManyHeads) {
  // More heads than one pass holds (128) and a cache longer than L2 blocks: still one answer.
  std::mt19937 rng(33);
  const Problem p = MakeProblem(rng, 130, 24, 8, 1029, Scores::kTypical);
  const Reference ref = ThreePassInDouble(p);
  for (Isa isa : RunnableIsas()) {
    const std::vector<float> o = RunKernel(isa, p);
    for (size_t i = 0; i < o.size(); ++i)
      ASSERT_LE(std::fabs(o[i] - ref.o[i]), ref.tol[i]) << IsaName(isa) << " i=" << i;
  }
}

}  // namespace
}  // namespace dsv3::ops
