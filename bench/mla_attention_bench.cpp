// The absorbed MLA attention core of one decoded token (all heads, one thread): the fused
// one-pass kernel (ops::MlaAttention) against the per-head three-pass loop the model used before
// it (a Dot per cached position for the scores, a scalar Softmax, an Axpy per position for the
// values), for the attention shapes of bench-small, bench-medium and DeepSeek-V3.
//
//   build/bench/mla_attention_bench --benchmark_filter='/2/8/' --benchmark_min_time=0.3
//
// Arguments of these cases: {isa (0 scalar, 1 avx2, 2 avx512), heads, kv_lora_rank,
// qk_rope_head_dim, cached positions n}. bytes_per_second counts the cache (n * (r + dr) f32)
// once per call, which the fused kernel reads once from memory and the three-pass loop once per
// head.
//
// And a chunk of T tokens after n cached positions (prefill after a long context, one thread):
// one call per token over its n + t + 1 positions (the model's absorbed form before session 14)
// against the prefix all tokens share attended once for all their heads, each token's own
// positions apart and the two parts merged (model/mla.cpp, AbsorbedBatchedBlock):
//
//   build/bench/mla_attention_bench --benchmark_filter='Chunk'
//
// Arguments: {isa, heads, kv_lora_rank, qk_rope_head_dim, n, T}.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "ops/isa.h"
#include "ops/mla_attention.h"
#include "ops/vector_ops.h"
#include "util/aligned_vector.h"

namespace {

using dsv3::ops::Isa;

// v resized to `size` values uniform in [-1, 1) from rng.
template <typename V>
void FillUniform(std::mt19937& rng, V& v, int64_t size) {
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  v.resize(static_cast<size_t>(size));
  for (auto& f : v) f = unit(rng);
}

// The inputs of one benchmark case: T tokens' queries (T = 1 for the decode cases, else the
// sixth argument) against a cache of n positions, plus the chunk's own T after them.
struct Case {
  Isa isa;
  int64_t heads, r, dr, n, T;
  std::vector<float> q_lat, q_rope, out, scores, parts, max, sum;
  dsv3::AlignedVector<float> latent,
      rope_key;  // cache-line aligned, as model/kv_cache.h stores them

  Case(const benchmark::State& state, bool chunk)
      : isa(static_cast<Isa>(state.range(0))),
        heads(state.range(1)),
        r(state.range(2)),
        dr(state.range(3)),
        n(state.range(4)),
        T(chunk ? state.range(5) : 1) {
    std::mt19937 rng(7);
    const auto fill = [&](auto& v, int64_t size) { FillUniform(rng, v, size); };
    const int64_t positions = chunk ? n + T : n;
    fill(q_lat, T * heads * r);
    fill(q_rope, T * heads * dr);
    fill(latent, positions * r);
    fill(rope_key, positions * dr);
    out.resize(static_cast<size_t>(T * heads * r));
    scores.resize(static_cast<size_t>(n));
    if (chunk) {
      constexpr int64_t kPass = dsv3::ops::kMlaHeadsPerPass;
      parts.resize(static_cast<size_t>(2 * kPass * r));  // two parts of a pass's queries
      max.resize(2 * kPass);
      sum.resize(2 * kPass);
    }
  }

  bool Runnable() const { return dsv3::ops::CpuSupports(isa); }

  // One token: the cache's bytes and (position, head) pairs per second.
  void Report(benchmark::State& state) const {
    state.SetBytesProcessed(state.iterations() * n * (r + dr) * 4);
    state.counters["positions*heads/s"] = benchmark::Counter(
        static_cast<double>(state.iterations() * n * heads), benchmark::Counter::kIsRate);
  }

  // A chunk: (token, head, position) triples, token t of the chunk attending n + t + 1 positions.
  void ReportChunk(benchmark::State& state) const {
    const double triples = static_cast<double>(heads) * (T * n + T * (T + 1) / 2);
    state.counters["positions*heads/s"] = benchmark::Counter(
        static_cast<double>(state.iterations()) * triples, benchmark::Counter::kIsRate);
  }
};

void BM_Fused(benchmark::State& state) {
  Case c(state, false);
  if (!c.Runnable()) return state.SkipWithError("ISA not supported by this CPU");
  const dsv3::ops::MlaQuery q{c.q_lat.data(), c.q_rope.data(), c.dr, c.heads, 0.1f};
  const dsv3::ops::LatentCacheView cache{c.latent.data(), c.rope_key.data(), c.n, c.r, c.dr};
  for (auto _ : state) {
    dsv3::ops::MlaAttention(c.isa, q, cache, c.out.data());
    benchmark::DoNotOptimize(c.out.data());
  }
  c.Report(state);
}

// The model's absorbed path before the fused kernel (src/model/mla.cpp, AbsorbedHead).
void BM_ThreePassPerHead(benchmark::State& state) {
  Case c(state, false);
  if (!c.Runnable()) return state.SkipWithError("ISA not supported by this CPU");
  for (auto _ : state) {
    for (int64_t h = 0; h < c.heads; ++h) {
      const float* q_lat = c.q_lat.data() + h * c.r;
      const float* q_pe = c.q_rope.data() + h * c.dr;
      for (int64_t j = 0; j < c.n; ++j)
        c.scores[j] = 0.1f * (dsv3::ops::Dot(c.isa, q_lat, c.latent.data() + j * c.r, c.r) +
                              dsv3::ops::Dot(c.isa, q_pe, c.rope_key.data() + j * c.dr, c.dr));
      dsv3::ops::Softmax(Isa::kScalar, c.scores.data(), c.n);
      float* o = c.out.data() + h * c.r;
      std::fill(o, o + c.r, 0.0f);
      for (int64_t j = 0; j < c.n; ++j)
        dsv3::ops::Axpy(c.isa, c.scores[j], c.latent.data() + j * c.r, c.r, o);
    }
    benchmark::DoNotOptimize(c.out.data());
  }
  c.Report(state);
}

void BM_ChunkPerToken(benchmark::State& state) {
  Case c(state, true);
  if (!c.Runnable()) return state.SkipWithError("ISA not supported by this CPU");
  for (auto _ : state) {
    for (int64_t t = 0; t < c.T; ++t) {
      const dsv3::ops::MlaQuery q{c.q_lat.data() + t * c.heads * c.r,
                                  c.q_rope.data() + t * c.heads * c.dr, c.dr, c.heads, 0.1f};
      const dsv3::ops::LatentCacheView cache{c.latent.data(), c.rope_key.data(), c.n + t + 1, c.r,
                                             c.dr};
      dsv3::ops::MlaAttention(c.isa, q, cache, c.out.data() + t * c.heads * c.r);
    }
    benchmark::DoNotOptimize(c.out.data());
  }
  c.ReportChunk(state);
}

void BM_ChunkSharedPrefix(benchmark::State& state) {
  Case c(state, true);
  if (!c.Runnable()) return state.SkipWithError("ISA not supported by this CPU");
  constexpr int64_t kPass = dsv3::ops::kMlaHeadsPerPass;  // queries at a time, as model/mla.cpp
  const int64_t queries = c.T * c.heads, prefix = c.n + 1;
  const dsv3::ops::LatentCacheView common{c.latent.data(), c.rope_key.data(), prefix, c.r, c.dr};
  float* max = c.max.data();
  float* sum = c.sum.data();
  for (auto _ : state) {
    for (int64_t q0 = 0; q0 < queries; q0 += kPass) {
      const int64_t q1 = std::min(queries, q0 + kPass);
      const dsv3::ops::MlaQuery all{c.q_lat.data() + q0 * c.r, c.q_rope.data() + q0 * c.dr, c.dr,
                                    q1 - q0, 0.1f};
      dsv3::ops::MlaAttentionPartial(c.isa, all, common, c.parts.data(), max, sum);
      for (int64_t i = q0; i < q1;) {
        const int64_t t = i / c.heads, heads = std::min(c.heads - i % c.heads, q1 - i);
        const int64_t k = i - q0;
        const dsv3::ops::MlaQuery q{c.q_lat.data() + i * c.r, c.q_rope.data() + i * c.dr, c.dr,
                                    heads, 0.1f};
        const dsv3::ops::LatentCacheView own{c.latent.data() + prefix * c.r,
                                             c.rope_key.data() + prefix * c.dr, t, c.r, c.dr};
        dsv3::ops::MlaAttentionPartial(c.isa, q, own, c.parts.data() + (kPass + k) * c.r,
                                       max + kPass + k, sum + kPass + k);
        i += heads;
      }
      dsv3::ops::MergeMlaPartials(2, kPass, c.r, 0, q1 - q0, c.parts.data(), max, sum,
                                  c.out.data() + q0 * c.r);
    }
    benchmark::DoNotOptimize(c.out.data());
  }
  c.ReportChunk(state);
}

void ChunkShapes(benchmark::internal::Benchmark* b) {
  // One thread's share of a 64-token chunk after 4096 positions on two threads (32 tokens, all
  // heads): {heads, kv_lora_rank, qk_rope_head_dim} of bench-medium and DeepSeek-V3.
  const int64_t shapes[][3] = {{16, 512, 64}, {128, 512, 64}};
  for (int64_t isa : {1, 2})
    for (const auto& s : shapes) b->Args({isa, s[0], s[1], s[2], 4096, 32});
}

BENCHMARK(BM_ChunkPerToken)->Apply(ChunkShapes)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ChunkSharedPrefix)->Apply(ChunkShapes)->Unit(benchmark::kMillisecond);

void Shapes(benchmark::internal::Benchmark* b) {
  // {heads, kv_lora_rank, qk_rope_head_dim}: bench-small, bench-medium, DeepSeek-V3.
  const int64_t shapes[][3] = {{8, 256, 32}, {16, 512, 64}, {128, 512, 64}};
  for (int64_t isa : {0, 1, 2})
    for (const auto& s : shapes)
      for (int64_t n : {64, 256, 1024, 4096}) {
        if (s[0] == 128 && n > 1024) continue;  // seconds per call in the scalar loop
        b->Args({isa, s[0], s[1], s[2], n});
      }
}

BENCHMARK(BM_Fused)->Apply(Shapes)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ThreePassPerHead)->Apply(Shapes)->Unit(benchmark::kMicrosecond);

}  // namespace
