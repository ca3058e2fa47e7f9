// The absorbed MLA attention core of one decoded token (all heads, one thread): the fused
// one-pass kernel (ops::MlaAttention) against the per-head three-pass loop the model used before
// it (a Dot per cached position for the scores, a scalar Softmax, an Axpy per position for the
// values), for the attention shapes of bench-small, bench-medium and DeepSeek-V3.
//
//   build-mla/bench/mla_attention_bench --benchmark_filter='/2/8/' --benchmark_min_time=0.3
//
// Arguments of every case: {isa (0 scalar, 1 avx2, 2 avx512), heads, kv_lora_rank,
// qk_rope_head_dim, cached positions n}. bytes_per_second counts the cache (n * (r + dr) f32)
// once per call, which the fused kernel reads once from memory and the three-pass loop once per
// head.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "ops/isa.h"
#include "ops/mla_attention.h"
#include "ops/vector_ops.h"
#include "util/aligned_vector.h"

namespace {

using dsv3::ops::Isa;

struct Case {
  Isa isa;
  int64_t heads, r, dr, n;
  std::vector<float> q_lat, q_rope, out, scores;
  dsv3::AlignedVector<float> latent,
      rope_key;  // cache-line aligned, as model/kv_cache.h stores them

  explicit Case(const benchmark::State& state)
      : isa(static_cast<Isa>(state.range(0))),
        heads(state.range(1)),
        r(state.range(2)),
        dr(state.range(3)),
        n(state.range(4)) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
    const auto fill = [&](auto& v, int64_t size) {
      v.resize(static_cast<size_t>(size));
      for (auto& f : v) f = unit(rng);
    };
    fill(q_lat, heads * r);
    fill(q_rope, heads * dr);
    fill(latent, n * r);
    fill(rope_key, n * dr);
    out.resize(static_cast<size_t>(heads * r));
    scores.resize(static_cast<size_t>(n));
  }

  bool Runnable() const { return dsv3::ops::CpuSupports(isa); }

  void Report(benchmark::State& state) const {
    state.SetBytesProcessed(state.iterations() * n * (r + dr) * 4);
    state.counters["positions*heads/s"] = benchmark::Counter(
        static_cast<double>(state.iterations() * n * heads), benchmark::Counter::kIsRate);
  }
};

void BM_Fused(benchmark::State& state) {
  Case c(state);
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
  Case c(state);
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
