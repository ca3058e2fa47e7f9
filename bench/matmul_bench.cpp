// MatMul throughput by weight dtype, ISA, shape and token count, on a 2-thread pool (the machine
// has 2 cores). GEMV (T = 1) reports weight bytes/s (decode is bandwidth-bound); T > 1 reports
// FLOP/s (2 * T * rows * cols per call). The scalar kernel runs in the same binary as a baseline.
//
//   build-ops/bench/matmul_bench --benchmark_filter='BF16/avx512' --benchmark_min_time=0.5
//
// Arguments of every case: {dtype, isa, rows, cols, T, threads, bf16_dot, int8_dot}; bf16_dot = 1
// is the opt-in KernelContext::bf16_dot fast path (x rounded to bf16, vdpbf16ps), int8_dot = 1 the
// int8-activation path for q8_0/q4_0 (x quantized per 32-column block, integer block dots).
//
//   build-perf/bench/matmul_bench --benchmark_filter='/4/2/.*/1$' (q8_0, AVX-512, int8 path)
//
// And whole MoE layers (BM_MoeDecode: one token; BM_MoePrefill: 512 tokens through MoeForward,
// with an even and an uneven spread of tokens over the experts):
//
//   build/bench/matmul_bench --benchmark_filter='BM_MoePrefill'
//
// And BF16 weights in the bf16-dot kernel's tiles against the same weights row-major
// (BM_Bf16Tiles), and decode's GEMV against the read-bandwidth probe in the same process
// (BM_GemvVsRead):
//
//   build/bench/matmul_bench --benchmark_filter='BM_Bf16Tiles'
//   build/bench/matmul_bench --benchmark_filter='BM_GemvVsRead'
//
// And decode's MoE gate/up products from DRAM, as decoding reads them (16 matrices of 8 experts
// scattered over 128), against one matrix of the same bytes and the read probe (BM_ExpertsVsRead):
//
//   build/bench/matmul_bench --benchmark_filter='BM_ExpertsVsRead'
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <vector>

#include "backend/thread_pool.h"
#include "model/moe.h"
#include "model/phase_profile.h"
#include "model/presets.h"
#include "ops/bf16_tiles.h"
#include "ops/isa.h"
#include "ops/matmul.h"
#include "ops/quant.h"
#include "ops/roofline.h"
#include "ops/row_tiles.h"
#include "util/dtype.h"
#include "util/huge_pages.h"

namespace {

using dsv3::DType;
using dsv3::ops::Isa;

// Indices 4 and 5: q8_0 (kI8) and q4_0 (kU8), quantised with ops/quant.h from the same values.
constexpr DType kDTypes[] = {DType::kF32,    DType::kF16, DType::kBF16,
                             DType::kF8E4M3, DType::kI8,  DType::kU8};

// Weights in 2 MiB pages where the kernel allows, as the model's weights are when it reads them
// (util/huge_pages.h): the large GEMV shapes stream from DRAM the way decoding does, not through
// a page walk every 4 KiB.
template <typename T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) {}
  T* allocate(size_t n) {
    dsv3::LargeBuffer buffer = dsv3::AllocateLargeBuffer(n * sizeof(T));
    if (buffer == nullptr) throw std::bad_alloc();
    return reinterpret_cast<T*>(buffer.release());
  }
  void deallocate(T* p, size_t n) {
    dsv3::LargeBufferDeleter{dsv3::LargeBufferBytes(n * sizeof(T))}(reinterpret_cast<uint8_t*>(p));
  }
  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const {
    return true;
  }
};

// Random weights of the given dtype; FP8 avoids the NaN codes and gets a 128x128 scale grid.
struct BenchWeight {
  std::vector<uint8_t, HugePageAllocator<uint8_t>> bytes;
  std::vector<float, HugePageAllocator<float>> scale;
  dsv3::ops::WeightView view;

  BenchWeight(DType dtype, int64_t rows, int64_t cols) {
    std::mt19937 rng(42);
    if (dtype == DType::kI8 || dtype == DType::kU8) {
      MakeGroupQuantized(dtype, rows, cols, rng);
      return;
    }
    bytes.resize(static_cast<size_t>(rows * cols) * dsv3::DTypeSize(dtype));
    // Values in [-1, 1] converted to the dtype (FP8: scaled to the full e4m3 range, as a
    // quantiser would, with the matching dequantisation scale).
    std::uniform_real_distribution<float> value(-1.0f, 1.0f);
    const int64_t n = rows * cols;
    for (int64_t i = 0; i < n; ++i) {
      const float f = value(rng);
      switch (dtype) {
        case DType::kF32:
          std::memcpy(bytes.data() + 4 * i, &f, 4);
          break;
        case DType::kF16: {
          const uint16_t h = dsv3::F32ToF16(f);
          std::memcpy(bytes.data() + 2 * i, &h, 2);
          break;
        }
        case DType::kBF16: {
          const uint16_t h = dsv3::F32ToBf16(f);
          std::memcpy(bytes.data() + 2 * i, &h, 2);
          break;
        }
        default:
          bytes[i] = dsv3::F32ToFp8E4M3(f * 448.0f);
          break;
      }
    }
    if (dtype == DType::kF8E4M3)
      scale.assign(static_cast<size_t>(((rows + 127) / 128) * ((cols + 127) / 128)), 1.0f / 448);
    view.dtype = dtype;
    view.rows = rows;
    view.cols = cols;
    view.data = bytes.data();
    view.scale = scale.empty() ? nullptr : scale.data();
  }

  void MakeGroupQuantized(DType dtype, int64_t rows, int64_t cols, std::mt19937& rng) {
    std::uniform_real_distribution<float> value(-1.0f, 1.0f);
    std::vector<float> row(static_cast<size_t>(cols));
    const int64_t groups = dsv3::ops::QuantGroups(cols);
    const int64_t row_bytes = dtype == DType::kI8 ? cols : dsv3::ops::Q4RowBytes(cols);
    bytes.resize(static_cast<size_t>(rows * row_bytes));
    scale.resize(static_cast<size_t>(rows * groups));
    for (int64_t r = 0; r < rows; ++r) {
      for (auto& v : row) v = value(rng);
      if (dtype == DType::kI8)
        dsv3::ops::QuantizeRowQ8_0(row.data(), cols, 32,
                                   reinterpret_cast<int8_t*>(bytes.data()) + r * row_bytes,
                                   scale.data() + r * groups);
      else
        dsv3::ops::QuantizeRowQ4_0(row.data(), cols, 32, bytes.data() + r * row_bytes,
                                   scale.data() + r * groups);
    }
    view.dtype = dtype;
    view.rows = rows;
    view.cols = cols;
    view.data = bytes.data();
    view.scale = scale.data();
    view.group_size = 32;
  }
};

void RunMatMul(benchmark::State& state, bool tiles) {
  const DType dtype = kDTypes[state.range(0)];
  const Isa isa = static_cast<Isa>(state.range(1));
  const int64_t rows = state.range(2), cols = state.range(3), T = state.range(4);
  const int threads = static_cast<int>(state.range(5));
  const bool bf16_dot = state.range(6) != 0;
  const bool int8_dot = state.range(7) != 0;
  state.SetLabel(std::string(dsv3::DTypeName(dtype)) + "/" + std::string(dsv3::ops::IsaName(isa)) +
                 "/" + std::to_string(rows) + "x" + std::to_string(cols) +
                 "/T=" + std::to_string(T) + "/threads=" + std::to_string(threads) +
                 (bf16_dot ? "/bf16_dot" : "") + (int8_dot ? "/int8_dot" : "") +
                 (tiles ? "/tiles" : ""));
  if (!dsv3::ops::CpuSupports(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  BenchWeight w(dtype, rows, cols);
  if (tiles) dsv3::ops::TileRows(&w.view, w.bytes.data(), w.scale.data());
  std::vector<float> x(static_cast<size_t>(T * cols));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (auto& v : x) v = value(rng);
  std::vector<float> y(static_cast<size_t>(T * rows));
  dsv3::ThreadPool pool(threads);
  dsv3::ops::KernelContext ctx{&pool, isa};
  ctx.bf16_dot = bf16_dot;
  ctx.int8_dot = int8_dot;
  for (auto _ : state) {
    dsv3::ops::MatMul(ctx, x.data(), T, w.view, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  if (T == 1) {
    // Weights plus their scales: everything a GEMV must read.
    const double read = static_cast<double>(w.bytes.size() + w.scale.size() * sizeof(float));
    state.counters["bytes/s"] = benchmark::Counter(
        read, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * static_cast<double>(T * rows * cols),
                                                benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

void MatMulArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"dtype", "isa", "rows", "cols", "T", "threads", "bf16_dot", "int8_dot"});
  const int64_t kAvx2 = static_cast<int64_t>(Isa::kAvx2);
  const int64_t kAvx512 = static_cast<int64_t>(Isa::kAvx512);
  const int64_t kScalar = static_cast<int64_t>(Isa::kScalar);
  for (int64_t d = 0; d < 6; ++d) {
    for (int64_t isa : {kAvx2, kAvx512}) {
      // Attention/dense-sized and expert-sized weights (L3-resident: up to 16 MB).
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{2048, 2048}, {512, 2048}}) {
        for (int64_t T : {1, 4, 16, 64, 512}) b->Args({d, isa, rows, cols, T, 2, 0, 0});
      }
      // GEMV over weights larger than the L3 (50-352 MB by dtype; this host's caches still keep
      // part of the smaller ones: BM_GemvVsRead has the DRAM number).
      b->Args({d, isa, 12288, 7168, 1, 2, 0, 0});
    }
  }
  // Scalar baseline.
  for (int64_t d : {2, 3, 4, 5}) {
    b->Args({d, kScalar, 2048, 2048, 1, 2, 0, 0});
    b->Args({d, kScalar, 2048, 2048, 64, 2, 0, 0});
  }
  // The opt-in BF16 dot-product fast path, prefill sizes.
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{2048, 2048}, {512, 2048}})
    for (int64_t T : {4, 8, 16, 32, 64, 512}) b->Args({2, kAvx512, rows, cols, T, 2, 1, 0});
  // The int8-activation path for q8_0 / q4_0 (compare with the int8_dot = 0 rows above), plus one
  // thread for the per-core VNNI peak.
  for (int64_t d : {4, 5}) {
    for (int64_t isa : {kAvx2, kAvx512}) {
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{2048, 2048}, {512, 2048}}) {
        for (int64_t T : {1, 4, 8, 16, 64, 512}) b->Args({d, isa, rows, cols, T, 2, 0, 1});
      }
      b->Args({d, isa, 12288, 7168, 1, 2, 0, 1});
    }
    // Decode on one core, weights from DRAM: against the 1-thread read-bandwidth probe; and rows
    // as short as an expert's down_proj (512 columns: 16 blocks per row tile).
    b->Args({d, kAvx512, 12288, 7168, 1, 1, 0, 1});
    b->Args({d, kAvx512, 131072, 512, 1, 1, 0, 1});
    b->Args({d, kAvx512, 131072, 512, 1, 2, 0, 1});
    // Prefill over weights far larger than the L3: packing must hide the DRAM latency.
    for (int64_t threads : {1, 2}) {
      b->Args({d, kAvx512, 12288, 7168, 64, threads, 0, 1});
      b->Args({d, kAvx512, 12288, 7168, 64, threads, 0, 0});
    }
    for (int64_t T : {1, 4, 8, 64}) {
      b->Args({d, kAvx512, 2048, 2048, T, 1, 0, 1});
      b->Args({d, kAvx512, 512, 2048, T, 1, 0, 1});
      b->Args({d, kAvx512, 2048, 2048, T, 1, 0, 0});
    }
  }
}

void BM_MatMul(benchmark::State& state) {
  RunMatMul(state, false);
}

BENCHMARK(BM_MatMul)->Apply(MatMulArgs)->Unit(benchmark::kMicrosecond)->UseRealTime();

// q8_0 / q4_0 in the int8 kernels' 16-row tiles (ops/row_tiles.h), AVX-512, int8 activations:
// compare with BM_MatMul's int8_dot rows of the same shape.
void BM_MatMulTiled(benchmark::State& state) {
  RunMatMul(state, true);
}

void MatMulTiledArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"dtype", "isa", "rows", "cols", "T", "threads", "bf16_dot", "int8_dot"});
  const int64_t kAvx512 = static_cast<int64_t>(Isa::kAvx512);
  for (int64_t d : {4, 5}) {
    for (int64_t threads : {1, 2}) {
      for (auto [rows, cols] :
           {std::pair<int64_t, int64_t>{2048, 2048}, {512, 2048}, {12288, 7168}})
        b->Args({d, kAvx512, rows, cols, 1, threads, 0, 1});
      b->Args({d, kAvx512, 131072, 512, 1, threads, 0, 1});
      b->Args({d, kAvx512, 2048, 2048, 4, threads, 0, 1});
      b->Args({d, kAvx512, 2048, 2048, 64, threads, 0, 1});
      // An expert's down projection (512 columns: 16 blocks a row) at an expert's prefill share.
      b->Args({d, kAvx512, 2048, 512, 64, threads, 0, 1});
      // A prefill's dense product (pp512: three token chunks of the activation buffer).
      b->Args({d, kAvx512, 2048, 2048, 512, threads, 0, 1});
    }
  }
}

BENCHMARK(BM_MatMulTiled)->Apply(MatMulTiledArgs)->Unit(benchmark::kMicrosecond)->UseRealTime();

// BF16 or FP8 in the bf16-dot kernel's 32-row pair tiles (ops/bf16_tiles.h, as Model::Load tiles
// every product matrix) against the same weight row-major, alternating in each iteration (first
// one, then the other, the order swapped every iteration) on 2 threads, AVX-512, bf16-dot on (T >=
// 8 runs it; below, the exact kernels). Counters: each form's time per call and tiled / row_major.
//   Arguments: {dtype (2 BF16, 3 FP8), rows, cols, T}
void BM_Bf16Tiles(benchmark::State& state) {
  const DType dtype = kDTypes[state.range(0)];
  const int64_t rows = state.range(1), cols = state.range(2), T = state.range(3);
  state.SetLabel(std::string(dsv3::DTypeName(dtype)) + "/avx512/" + std::to_string(rows) + "x" +
                 std::to_string(cols) + "/T=" + std::to_string(T) + "/threads=2/bf16_dot");
  if (!dsv3::ops::CpuSupports(Isa::kAvx512)) {
    state.SkipWithError("needs AVX-512");
    return;
  }
  BenchWeight plain(dtype, rows, cols), tiled(dtype, rows, cols);
  dsv3::ops::TilePairRows(&tiled.view, tiled.bytes.data());
  std::vector<float> x(static_cast<size_t>(T * cols)), y(static_cast<size_t>(T * rows));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (auto& v : x) v = value(rng);
  dsv3::ThreadPool pool(2);
  dsv3::ops::KernelContext ctx{&pool, Isa::kAvx512};
  ctx.bf16_dot = true;
  using Clock = std::chrono::steady_clock;
  double seconds[2] = {0, 0};  // row-major, tiled
  int64_t n = 0;
  for (auto _ : state) {
    for (int k = 0; k < 2; ++k) {
      const int form = (n + k) % 2;
      const Clock::time_point t0 = Clock::now();
      dsv3::ops::MatMul(ctx, x.data(), T, form == 0 ? plain.view : tiled.view, y.data());
      benchmark::DoNotOptimize(y.data());
      benchmark::ClobberMemory();
      seconds[form] += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    ++n;
  }
  state.counters["row_major_us"] = seconds[0] / static_cast<double>(n) * 1e6;
  state.counters["tiled_us"] = seconds[1] / static_cast<double>(n) * 1e6;
  state.counters["tiled/row_major"] = seconds[1] / seconds[0];
}

void Bf16TilesArgs(benchmark::internal::Benchmark* b) {
  b->ArgNames({"dtype", "rows", "cols", "T"});
  // decode: an expert's gate and down (L3), a dense matrix, a vocabulary head (DRAM); an expert's
  // prefill share (gate, down); a dense prefill product.
  for (int64_t d : {2, 3}) {
    b->Args({d, 512, 2048, 1});
    b->Args({d, 2048, 512, 1});
    b->Args({d, 2048, 2048, 1});
    b->Args({d, 32000, 2048, 1});
    b->Args({d, 512, 2048, 4});
    b->Args({d, 512, 2048, 64});
    b->Args({d, 2048, 512, 64});
    b->Args({d, 2048, 2048, 512});
  }
}

BENCHMARK(BM_Bf16Tiles)->Apply(Bf16TilesArgs)->Unit(benchmark::kMicrosecond);

// Rows [r0, r0 + rows) of a q8_0 / q4_0 matrix as a matrix of its own.
dsv3::ops::WeightView RowSlice(const dsv3::ops::WeightView& w, int64_t r0, int64_t rows) {
  dsv3::ops::WeightView v = w;
  const int64_t row_bytes = w.dtype == DType::kI8 ? w.cols : dsv3::ops::Q4RowBytes(w.cols);
  v.rows = rows;
  v.data = static_cast<const uint8_t*>(w.data) + r0 * row_bytes;
  v.scale = w.scale + r0 * dsv3::ops::QuantGroups(w.cols);
  return v;
}

// Decode through a MoE layer the size of bench-medium's (64 experts: gate and up [512, 2048],
// down [2048, 512]; 8 chosen per token, 340 MB of q8_0 in all, far beyond the L3): each token
// reads 24 small matrices, batched as the model does (gate+up of the 8 experts, then their
// down). Against BM_MatMul's one large matrix this shows what the matrices' size costs.
//   Arguments: {dtype (4 q8_0, 5 q4_0), threads}
void BM_MoeDecode(benchmark::State& state) {
  constexpr int64_t kExperts = 64, kTopK = 8, kHidden = 2048, kInter = 512;
  const DType dtype = kDTypes[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  const bool tiles = state.range(2) != 0;
  state.SetLabel(std::string(dsv3::DTypeName(dtype)) +
                 "/moe64x8/threads=" + std::to_string(threads) + (tiles ? "/tiles" : ""));
  if (!dsv3::ops::CpuSupports(Isa::kAvx512)) {
    state.SkipWithError("needs AVX-512");
    return;
  }
  BenchWeight gate_up(dtype, 2 * kExperts * kInter, kHidden);
  BenchWeight down(dtype, kExperts * kHidden, kInter);
  std::vector<dsv3::ops::WeightView> views;  // per expert: gate, up, down
  for (int64_t e = 0; e < kExperts; ++e) {
    views.push_back(RowSlice(gate_up.view, 2 * e * kInter, kInter));
    views.push_back(RowSlice(gate_up.view, (2 * e + 1) * kInter, kInter));
    views.push_back(RowSlice(down.view, e * kHidden, kHidden));
  }
  if (tiles) {
    for (auto& v : views)
      dsv3::ops::TileRows(&v, const_cast<void*>(v.data), const_cast<float*>(v.scale));
  }
  std::vector<float> x(kHidden, 0.5f), h(static_cast<size_t>(2 * kTopK * kInter));
  std::vector<float> y(static_cast<size_t>(kTopK * kHidden));
  dsv3::ThreadPool pool(threads);
  dsv3::ops::KernelContext ctx{&pool, Isa::kAvx512};
  ctx.int8_dot = true;
  std::mt19937 rng(11);
  std::vector<dsv3::ops::MatMulJob> first(2 * kTopK), second(kTopK);
  for (auto _ : state) {
    std::vector<int64_t> chosen;  // 8 distinct experts, as a router picks them
    while (static_cast<int64_t>(chosen.size()) < kTopK) {
      const int64_t e = static_cast<int64_t>(rng() % kExperts);
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    for (int64_t k = 0; k < kTopK; ++k) {
      for (int m = 0; m < 2; ++m)
        first[2 * k + m] = {x.data(), 1, &views[3 * chosen[k] + m],
                            h.data() + (2 * k + m) * kInter};
      second[k] = {h.data() + 2 * k * kInter, 1, &views[3 * chosen[k] + 2], y.data() + k * kHidden};
    }
    dsv3::ops::MatMulBatch(ctx, first.data(), 2 * kTopK);
    dsv3::ops::MatMulBatch(ctx, second.data(), kTopK);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  int64_t read = 0;
  for (int m = 0; m < 3; ++m) {
    const dsv3::ops::WeightView& v = views[m];
    const int64_t row_bytes = dtype == DType::kI8 ? v.cols : dsv3::ops::Q4RowBytes(v.cols);
    read += v.rows * (row_bytes + 4 * dsv3::ops::QuantGroups(v.cols));
  }
  state.counters["bytes/s"] = benchmark::Counter(static_cast<double>(kTopK * read),
                                                 benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

BENCHMARK(BM_MoeDecode)
    ->ArgNames({"dtype", "threads", "tiles"})
    ->ArgsProduct({{4, 5}, {1, 2}, {0, 1}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Prefill through a MoE layer the size of bench-medium's (model/moe.cpp, MoeForward: router, 64
// experts top-8 plus the shared expert, tiled q8_0 / q4_0 weights, int8 activations) for 512
// tokens. skew = 0: the router's scores alike, 40-84 tokens an expert; skew = 1: a bias that
// favours the later experts, 2-193 tokens an expert, like the random bench model's 0-237 at
// pp512 (counters tokens_min / tokens_max), and the milliseconds of each of MoeForward's phases.
// FLOP/s counts the experts' products (2 * T * (k + 1) * 3 * H * I), against BM_MatMulTiled's one
// matrix.
//   Arguments: {dtype (4 q8_0, 5 q4_0), threads, skew}
void BM_MoePrefill(benchmark::State& state) {
  const DType dtype = kDTypes[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  const bool skew = state.range(2) != 0;
  state.SetLabel(std::string(dsv3::DTypeName(dtype)) + "/moe64x8/T=512/threads=" +
                 std::to_string(threads) + (skew ? "/skewed" : "/uniform"));
  if (!dsv3::ops::CpuSupports(Isa::kAvx512)) return state.SkipWithError("needs AVX-512");
  auto config = dsv3::PresetConfig("bench-medium");
  if (!config.ok()) return state.SkipWithError("no bench-medium preset");
  const int64_t E = config->n_routed_experts, k = config->num_experts_per_tok, T = 512;
  const int64_t H = config->hidden_size, I = config->moe_intermediate_size;
  BenchWeight gate_up(dtype, 2 * (E + 1) * I, H);  // the last pair: the shared expert
  BenchWeight down(dtype, (E + 1) * H, I);
  dsv3::MoeWeights w;
  const auto tiled = [](dsv3::ops::WeightView v) {
    dsv3::ops::TileRows(&v, const_cast<void*>(v.data), const_cast<float*>(v.scale));
    return v;
  };
  for (int64_t e = 0; e <= E; ++e) {
    dsv3::MlpWeights m{tiled(RowSlice(gate_up.view, 2 * e * I, I)),
                       tiled(RowSlice(gate_up.view, (2 * e + 1) * I, I)),
                       tiled(RowSlice(down.view, e * H, H)), I};
    if (e < E)
      w.experts.push_back(m);
    else
      w.shared_experts = m;
  }
  w.has_shared = true;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> small(-0.02f, 0.02f);
  std::vector<float> gate(static_cast<size_t>(E * H));
  for (float& v : gate) v = small(rng);
  w.gate.dtype = DType::kF32;
  w.gate.rows = E;
  w.gate.cols = H;
  w.gate.data = gate.data();
  w.e_score_correction_bias.resize(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e)
    w.e_score_correction_bias[e] = skew ? 0.2f * static_cast<float>(e) / E : 0.0f;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * H)), out(x.size());
  for (float& v : x) v = normal(rng);
  dsv3::ThreadPool pool(threads);
  dsv3::ops::KernelContext ctx{&pool, Isa::kAvx512};
  ctx.int8_dot = true;
  dsv3::MoeScratch scratch;
  dsv3::PhaseProfile profile;
  for (auto _ : state) {
    dsv3::MoeForward(*config, w, ctx, x.data(), T, k, scratch, out.data(), &profile);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  // The spread of the experts' token counts (the routing is the same every iteration).
  int64_t fewest = T, most = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = scratch.expert_offsets[e + 1] - scratch.expert_offsets[e];
    fewest = std::min(fewest, n);
    most = std::max(most, n);
  }
  // Milliseconds an iteration in each phase MoeForward times (experts_out: the down projections
  // and their sum, and on this int8 path, summed per row range, SiLU(gate) * up as well).
  for (dsv3::Phase phase :
       {dsv3::Phase::kRouter, dsv3::Phase::kExpertsIn, dsv3::Phase::kExpertsOut})
    state.counters[std::string(dsv3::PhaseName(phase)) + "_ms"] =
        1e3 * profile.seconds[static_cast<int>(phase)] / static_cast<double>(state.iterations());
  state.counters["tokens_min"] = static_cast<double>(fewest);
  state.counters["tokens_max"] = static_cast<double>(most);
  state.counters["FLOP/s"] = benchmark::Counter(static_cast<double>(2 * T * (k + 1) * 3 * H * I),
                                                benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

BENCHMARK(BM_MoePrefill)
    ->ArgNames({"dtype", "threads", "skew"})
    ->ArgsProduct({{4, 5}, {1, 2}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// A decode GEMV (T = 1, AVX-512, 2048 columns) over 512 MiB of weights, which no cache holds
// (the 12288x7168 shapes above are 50-176 MB, and this host's caches keep part of a working set
// that size: q8_0 12288x7168 read 92-97 GB/s there against 48-52 over 512 MiB, with the probe at
// 50-65), interleaved with the read-bandwidth probe of `dsv3 bench` (ops/roofline.h: a sum of
// 512 MiB of floats with 8 accumulators a thread) on the same threads, each iteration one of
// each. Counters: the GEMV's weight bytes/s, the probe's, and their ratio: the part of the
// machine's read bandwidth the kernel reaches, which a decode step can reach at best. The int8
// weights are tiled as Model::Load tiles them and run on the int8 path; BF16 on the exact one.
//   Arguments: {dtype (2 BF16, 4 q8_0, 5 q4_0), threads}
void BM_GemvVsRead(benchmark::State& state) {
  constexpr int64_t kCols = 2048, kBytes = int64_t{512} << 20, kPatternRows = 256;
  const DType dtype = kDTypes[state.range(0)];
  const int threads = static_cast<int>(state.range(1));
  state.SetLabel(std::string(dsv3::DTypeName(dtype)) +
                 "/avx512/512MiB/threads=" + std::to_string(threads));
  if (!dsv3::ops::CpuSupports(Isa::kAvx512)) {
    state.SkipWithError("needs AVX-512");
    return;
  }
  const bool int8 = dtype == DType::kI8 || dtype == DType::kU8;
  const int64_t row_bytes = dtype == DType::kU8   ? dsv3::ops::Q4RowBytes(kCols)
                            : dtype == DType::kI8 ? kCols
                                                  : kCols * dsv3::DTypeSize(dtype);
  const int64_t groups = int8 ? dsv3::ops::QuantGroups(kCols) : 0;
  const int64_t rows = kBytes / (row_bytes + 4 * groups) / kPatternRows * kPatternRows;
  // kPatternRows random rows repeated: the values do not matter to the speed, only the bytes.
  BenchWeight pattern(dtype, kPatternRows, kCols);
  std::vector<uint8_t, HugePageAllocator<uint8_t>> bytes(static_cast<size_t>(rows * row_bytes));
  std::vector<float, HugePageAllocator<float>> scale(static_cast<size_t>(rows * groups));
  for (int64_t r = 0; r < rows; r += kPatternRows) {
    std::memcpy(bytes.data() + r * row_bytes, pattern.bytes.data(),
                static_cast<size_t>(kPatternRows * row_bytes));
    if (int8)
      std::memcpy(scale.data() + r * groups, pattern.scale.data(),
                  static_cast<size_t>(kPatternRows * groups) * sizeof(float));
  }
  dsv3::ops::WeightView w = pattern.view;
  w.rows = rows;
  w.data = bytes.data();
  w.scale = int8 ? scale.data() : nullptr;
  if (int8) dsv3::ops::TileRows(&w, bytes.data(), scale.data());
  const int64_t weight_bytes =
      rows * row_bytes + rows * groups * static_cast<int64_t>(w.f16_tile_scales ? 2 : 4);
  const int64_t n = kBytes / static_cast<int64_t>(sizeof(float));
  std::vector<float, HugePageAllocator<float>> probe(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) probe[i] = dsv3::ops::ReadBandwidthValue(i);
  std::vector<float> x(kCols), y(static_cast<size_t>(rows));
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (auto& v : x) v = value(rng);
  dsv3::ThreadPool pool(threads);
  dsv3::ops::KernelContext ctx{&pool, Isa::kAvx512};
  ctx.int8_dot = int8;
  using Clock = std::chrono::steady_clock;
  double gemv_seconds = 0, probe_seconds = 0;
  for (auto _ : state) {
    const Clock::time_point t0 = Clock::now();
    benchmark::DoNotOptimize(dsv3::ops::ParallelSumFloats(&pool, Isa::kAvx512, probe.data(), n));
    const Clock::time_point t1 = Clock::now();
    dsv3::ops::MatMul(ctx, x.data(), 1, w, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    const Clock::time_point t2 = Clock::now();
    probe_seconds += std::chrono::duration<double>(t1 - t0).count();
    gemv_seconds += std::chrono::duration<double>(t2 - t1).count();
    state.SetIterationTime(std::chrono::duration<double>(t2 - t1).count());
  }
  const double iterations = static_cast<double>(state.iterations());
  const double gemv_rate = static_cast<double>(weight_bytes) * iterations / gemv_seconds;
  const double probe_rate = static_cast<double>(kBytes) * iterations / probe_seconds;
  state.counters["bytes/s"] =
      benchmark::Counter(gemv_rate, benchmark::Counter::kDefaults, benchmark::Counter::kIs1000);
  state.counters["read_bw"] =
      benchmark::Counter(probe_rate, benchmark::Counter::kDefaults, benchmark::Counter::kIs1000);
  state.counters["of_read_bw"] = gemv_rate / probe_rate;
}

BENCHMARK(BM_GemvVsRead)
    ->ArgNames({"dtype", "threads"})
    ->ArgsProduct({{2, 4, 5}, {1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseManualTime()
    ->MinTime(2.0);

// q8_0 / q4_0 GEMV on 2 threads from DRAM, each iteration three ways over the same bytes: the read
// probe (256 MiB of f32); the gate and up products of 8 experts (16 matrices of 512 x 2048, tiled
// each, as MoeForward batches them) chosen from 128 without repeats until all were used, so none
// is in the L3; and one 8192-row window of a matrix as large (one stream). Counters: the probe's
// GB/s, and each way's bytes/s as a fraction of it (experts, one_matrix).
//   Arguments: {dtype (4 q8_0, 5 q4_0)}
void BM_ExpertsVsRead(benchmark::State& state) {
  constexpr int64_t kExperts = 128, kTopK = 8, kHidden = 2048, kInter = 512, kPatternRows = 1024;
  constexpr int64_t kRows = 2 * kExperts * kInter, kJobs = 2 * kTopK;
  const DType dtype = kDTypes[state.range(0)];
  state.SetLabel(std::string(dsv3::DTypeName(dtype)) + "/gate_up 16 of 512x2048/threads=2");
  if (!dsv3::ops::CpuSupports(Isa::kAvx512)) return state.SkipWithError("needs AVX-512");
  const int64_t row_bytes = dtype == DType::kI8 ? kHidden : dsv3::ops::Q4RowBytes(kHidden);
  const int64_t groups = dsv3::ops::QuantGroups(kHidden);
  // Two copies of kRows rows (kPatternRows random rows repeated): experts, then one matrix.
  BenchWeight pattern(dtype, kPatternRows, kHidden);
  std::vector<uint8_t, HugePageAllocator<uint8_t>> bytes(
      static_cast<size_t>(2 * kRows * row_bytes));
  std::vector<float, HugePageAllocator<float>> scale(static_cast<size_t>(2 * kRows * groups));
  for (int64_t r = 0; r < 2 * kRows; r += kPatternRows) {
    std::memcpy(bytes.data() + r * row_bytes, pattern.bytes.data(),
                static_cast<size_t>(kPatternRows * row_bytes));
    std::memcpy(scale.data() + r * groups, pattern.scale.data(),
                static_cast<size_t>(kPatternRows * groups) * sizeof(float));
  }
  dsv3::ops::WeightView all = pattern.view;
  all.rows = 2 * kRows;
  all.data = bytes.data();
  all.scale = scale.data();
  std::vector<dsv3::ops::WeightView> experts;  // expert e's gate and up: 2 e, 2 e + 1
  for (int64_t m = 0; m < 2 * kExperts; ++m) {
    experts.push_back(RowSlice(all, m * kInter, kInter));
    dsv3::ops::TileRows(&experts.back(), const_cast<void*>(experts.back().data),
                        const_cast<float*>(experts.back().scale));
  }
  dsv3::ops::WeightView one = RowSlice(all, kRows, kRows);
  dsv3::ops::TileRows(&one, const_cast<void*>(one.data), const_cast<float*>(one.scale));
  const int64_t read = kJobs * kInter * (row_bytes + groups * (experts[0].f16_tile_scales ? 2 : 4));
  const int64_t n = (int64_t{256} << 20) / static_cast<int64_t>(sizeof(float));
  std::vector<float, HugePageAllocator<float>> probe(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) probe[i] = dsv3::ops::ReadBandwidthValue(i);
  std::vector<float> x(kHidden, 0.5f), h(static_cast<size_t>(kJobs * kInter));
  dsv3::ThreadPool pool(2);
  dsv3::ops::KernelContext ctx{&pool, Isa::kAvx512};
  ctx.int8_dot = true;
  std::mt19937 rng(11);
  std::vector<int64_t> order(kExperts);
  for (int64_t e = 0; e < kExperts; ++e) order[e] = e;
  std::vector<dsv3::ops::MatMulJob> jobs(kJobs);
  using Clock = std::chrono::steady_clock;
  double seconds[3] = {};  // probe, experts, one matrix
  int64_t iteration = 0;
  for (auto _ : state) {
    const int64_t round = iteration % (kExperts / kTopK);
    if (round == 0) std::shuffle(order.begin(), order.end(), rng);
    for (int64_t j = 0; j < kJobs; ++j)
      jobs[j] = {x.data(), 1, &experts[2 * order[round * kTopK + j / 2] + j % 2],
                 h.data() + j * kInter};
    // 13 windows on, of 16: 16 windows (150 MB or more) between reuses.
    const int64_t windows = kRows / (kJobs * kInter);
    const dsv3::ops::WeightView window =
        dsv3::ops::Int8RowRange(one, iteration * 13 % windows * kJobs * kInter, kJobs * kInter);
    ++iteration;
    const Clock::time_point t0 = Clock::now();
    benchmark::DoNotOptimize(dsv3::ops::ParallelSumFloats(&pool, Isa::kAvx512, probe.data(), n));
    const Clock::time_point t1 = Clock::now();
    dsv3::ops::MatMulBatch(ctx, jobs.data(), kJobs);
    benchmark::DoNotOptimize(h.data());
    const Clock::time_point t2 = Clock::now();
    dsv3::ops::MatMul(ctx, x.data(), 1, window, h.data());
    benchmark::DoNotOptimize(h.data());
    benchmark::ClobberMemory();
    const Clock::time_point t3 = Clock::now();
    seconds[0] += std::chrono::duration<double>(t1 - t0).count();
    seconds[1] += std::chrono::duration<double>(t2 - t1).count();
    seconds[2] += std::chrono::duration<double>(t3 - t2).count();
  }
  const double iterations = static_cast<double>(state.iterations());
  const double probe_rate = static_cast<double>(n * sizeof(float)) * iterations / seconds[0];
  state.counters["read_bw_GBs"] = probe_rate * 1e-9;
  state.counters["experts"] = static_cast<double>(read) * iterations / seconds[1] / probe_rate;
  state.counters["one_matrix"] = static_cast<double>(read) * iterations / seconds[2] / probe_rate;
}

BENCHMARK(BM_ExpertsVsRead)
    ->ArgNames({"dtype"})
    ->DenseRange(4, 5)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(2.0);

}  // namespace
