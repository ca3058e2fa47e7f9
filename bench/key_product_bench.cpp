// Decoding's absorbed query, q_lat = W_UK[h]^T q_nope for one thread's 8 heads of bench-medium /
// DeepSeek-V3's W_UK ([dn = 128, r = 512] a head), q8_0, q4_0 and FP8 (128 x 128 blocks): the
// column layouts (ops::VecMatInt8, what decoding on int8 activations runs since session 25;
// ops::VecMatFp8, what FP8 decoding runs since session 26) against W_UK's rows decoded into
// registers and summed in f32 (ops::AccumulateRows, what they ran before and what the exact
// q8_0 / q4_0 path runs).
//
//   build/bench/key_product_bench --benchmark_min_time=0.3
//
// Arguments: {isa (0 scalar, 1 avx2, 2 avx512), dtype (4 q8_0, 5 q4_0, 3 fp8), heads stored}. Each
// call takes the next 8 of the stored heads: with 8 they stay in the L2 (the kernels' arithmetic),
// with 2048 (80-150 MB) they come from DRAM, as in a decode step. bytes_per_second counts the
// codes and scales one call reads (the same for both forms).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "ops/fp8_columns.h"
#include "ops/int8_columns.h"
#include "ops/isa.h"
#include "ops/matmul.h"
#include "ops/quant.h"
#include "util/aligned_vector.h"
#include "util/dtype.h"

namespace {

using dsv3::DType;
using dsv3::ops::Isa;

constexpr int64_t kDn = 128, kR = 512, kHeadsPerCall = 8;

struct Case {
  Isa isa;
  DType dtype;
  int64_t heads, row_bytes, groups;
  std::vector<uint8_t> rows;  // W_UK of every head, row-major [heads * dn, r]
  std::vector<float> row_scales;
  dsv3::AlignedVector<uint8_t> codes;  // the same in the column layout, head after head
  std::vector<float> column_scales;
  std::vector<float> x, y, row_buf;

  explicit Case(const benchmark::State& state)
      : isa(static_cast<Isa>(state.range(0))),
        dtype(static_cast<DType>(state.range(1))),
        heads(state.range(2)),
        row_bytes(dtype == DType::kU8 ? kR / 2 : kR),
        groups(kR / 32) {
    std::mt19937 rng(1);
    if (dtype == DType::kF8E4M3)
      MakeFp8Rows(rng);
    else
      MakeQuantRows(rng);
    const dsv3::ops::WeightView w = View();
    codes.resize(static_cast<size_t>(heads * HeadBytes()));
    column_scales.resize(static_cast<size_t>(heads * HeadScales()));
    for (int64_t h = 0; h < heads; ++h) {
      uint8_t* head_codes = codes.data() + h * HeadBytes();
      float* head_scales = column_scales.data() + h * HeadScales();
      if (dtype == DType::kF8E4M3)
        dsv3::ops::LayOutFp8Columns(w, h * kDn, kDn, head_codes, head_scales);
      else
        dsv3::ops::LayOutInt8Columns(w, h * kDn, kDn, head_codes, head_scales);
    }
    std::normal_distribution<float> normal(0.0f, 1.0f);
    x.resize(static_cast<size_t>(kHeadsPerCall * kDn));
    for (float& v : x) v = normal(rng);
    y.resize(static_cast<size_t>(kHeadsPerCall * kR));
    row_buf.resize(kR);
  }
  // q8_0 / q4_0: rows of normal values quantized.
  void MakeQuantRows(std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    rows.resize(static_cast<size_t>(heads * kDn * row_bytes));
    row_scales.resize(static_cast<size_t>(heads * kDn * groups));
    std::vector<float> row(kR);
    for (int64_t i = 0; i < heads * kDn; ++i) {
      for (float& v : row) v = normal(rng);
      if (dtype == DType::kI8)
        dsv3::ops::QuantizeRowQ8_0(row.data(), kR, 32,
                                   reinterpret_cast<int8_t*>(rows.data()) + i * row_bytes,
                                   row_scales.data() + i * groups);
      else
        dsv3::ops::QuantizeRowQ4_0(row.data(), kR, 32, rows.data() + i * row_bytes,
                                   row_scales.data() + i * groups);
    }
  }
  // FP8: random codes (no NaN) and 128 x 128 block scales.
  void MakeFp8Rows(std::mt19937& rng) {
    rows.resize(static_cast<size_t>(heads * kDn * kR));
    for (uint8_t& b : rows) b = static_cast<uint8_t>(rng() % 0x7f | (rng() & 0x80));
    row_scales.resize(static_cast<size_t>(heads * kDn / 128 * kR / 128));
    for (float& v : row_scales) v = std::exp2(-8.0f * static_cast<float>(rng() % 1000) / 1000.0f);
  }
  dsv3::ops::WeightView View() const {
    dsv3::ops::WeightView w;
    w.dtype = dtype;
    w.rows = heads * kDn;
    w.cols = kR;
    w.data = rows.data();
    w.scale = row_scales.data();
    w.group_size = 32;
    if (dtype == DType::kF8E4M3) w.group_size = 0, w.block_rows = 128, w.block_cols = 128;
    return w;
  }
  int64_t HeadBytes() const {
    return dtype == DType::kF8E4M3 ? dsv3::ops::Fp8ColumnsBytes(kDn, kR)
                                   : dsv3::ops::Int8ColumnsBytes(dtype, kDn, kR);
  }
  int64_t HeadScales() const {
    return dtype == DType::kF8E4M3 ? dsv3::ops::Fp8ColumnsScales(kDn, kR, 128)
                                   : dsv3::ops::Int8ColumnsScales(kDn, kR);
  }
  int64_t BytesPerCall() const { return kHeadsPerCall * (HeadBytes() + HeadScales() * 4); }
};

bool Skip(benchmark::State& state, Isa isa) {
  if (dsv3::ops::CpuSupports(isa)) return false;
  state.SkipWithError("ISA not supported on this CPU");
  return true;
}

void BM_Columns(benchmark::State& state) {
  Case c(state);
  if (Skip(state, c.isa)) return;
  int64_t next = 0;
  for (auto _ : state) {
    for (int64_t i = 0; i < kHeadsPerCall; ++i, next = (next + 1) % c.heads) {
      const uint8_t* codes = c.codes.data() + next * c.HeadBytes();
      const float* scales = c.column_scales.data() + next * c.HeadScales();
      if (c.dtype == DType::kF8E4M3) {
        const dsv3::ops::Fp8Columns head{kDn, kR, 128, codes, scales};
        dsv3::ops::VecMatFp8(c.isa, head, c.x.data() + i * kDn, c.y.data() + i * kR);
        continue;
      }
      const dsv3::ops::Int8Columns head{c.dtype, kDn, kR, codes, scales};
      dsv3::ops::VecMatInt8(c.isa, head, c.x.data() + i * kDn, c.y.data() + i * kR);
    }
    benchmark::DoNotOptimize(c.y.data());
  }
  state.SetBytesProcessed(state.iterations() * c.BytesPerCall());
}

void BM_Rows(benchmark::State& state) {
  Case c(state);
  if (Skip(state, c.isa)) return;
  const dsv3::ops::WeightView w = c.View();
  int64_t next = 0;
  for (auto _ : state) {
    for (int64_t i = 0; i < kHeadsPerCall; ++i, next = (next + 1) % c.heads) {
      float* y = c.y.data() + i * kR;
      std::fill(y, y + kR, 0.0f);
      dsv3::ops::AccumulateRows(c.isa, w, next * kDn, kDn, c.x.data() + i * kDn, y,
                                c.row_buf.data());
    }
    benchmark::DoNotOptimize(c.y.data());
  }
  state.SetBytesProcessed(state.iterations() * c.BytesPerCall());
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int64_t isa : {1, 2})
    for (DType d : {DType::kI8, DType::kU8, DType::kF8E4M3})
      for (int64_t heads : {8, 2048}) b->Args({isa, static_cast<int64_t>(d), heads});
}

}  // namespace

BENCHMARK(BM_Columns)->Apply(Shapes)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Rows)->Apply(Shapes)->Unit(benchmark::kMicrosecond);
