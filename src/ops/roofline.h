// Machine-limit micro-benchmarks (the roofline `dsv3 bench` compares its results with): read
// bandwidth and the peak rate of each dot-product instruction the kernels can use, measured on the
// thread pool the model runs on, the way ../shared/perf/limits.md describes. Every probe consumes
// and checks what it computes, so the compiler cannot drop its loop; an instruction the ISA lacks
// is reported as unavailable ("n/a"), never as a number of another instruction.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/thread_pool.h"
#include "ops/isa.h"
#include "util/status.h"

namespace dsv3::ops {

// One probe's result: a rate in `unit` (GB/s, GFLOP/s or G op/s; 1 G = 1e9) per repetition.
struct LimitMeasurement {
  std::string name;    // "read_bandwidth", "fp32_fma", "int8_dot", "bf16_dot"
  std::string method;  // how it was measured, e.g. "vfmadd231ps zmm, 12 chains"
  std::string unit;
  bool available = false;  // false: the ISA lacks the instruction; no figures
  double best = 0;         // the highest repetition
  double median = 0;
  std::vector<double> samples;
  // What the probe computed in its last repetition, already checked against the exact value.
  double checksum = 0;
};

struct BandwidthOptions {
  int64_t buffer_bytes = int64_t{1024} << 20;  // >= 512 MiB to read from DRAM, not the caches
  int repetitions = 8;
};

struct PeakOptions {
  int repetitions = 5;
  double seconds_per_repetition = 0.05;  // the loop length is calibrated to about this
};

// The buffer the bandwidth probe reads: x[i] = ReadBandwidthValue(i). Small integers, so every
// partial sum is exact and the checksum (the sum over the buffer) can be checked exactly.
inline float ReadBandwidthValue(int64_t i) {
  return static_cast<float>(i % 7);
}

// Sum of x[0, n) split over the pool's threads (each sums its own contiguous slice with `isa`'s
// loop; the per-thread sums are added in thread order in double). pool may be nullptr.
double ParallelSumFloats(ThreadPool* pool, Isa isa, const float* x, int64_t n);

// Read bandwidth: every thread sums its own slice of a buffer of options.buffer_bytes floats with
// 8 independent accumulators (page faults and first touch happen before the timing). Errors:
// buffer smaller than one float per thread, repetitions < 1, allocation failure, wrong checksum.
Result<LimitMeasurement> MeasureReadBandwidth(ThreadPool* pool, Isa isa,
                                              const BandwidthOptions& options);

// Peak rates with kPeakChains independent chains per thread (2 flops per multiply-add):
//   fp32_fma: vfmadd231ps (zmm for avx512, ymm for avx2; scalar: std::fma), GFLOP/s
//   int8_dot: vpdpbusd zmm (AVX-512 VNNI); on AVX2 vpdpbusd ymm where AvxVnniEnabled(), else
//             vpmaddubsw + vpaddw ymm, G op/s
//   bf16_dot: vdpbf16ps zmm (AVX-512 BF16), GFLOP/s
// bf16_dot is unavailable below Isa::kAvx512, int8_dot below Isa::kAvx2.
Result<LimitMeasurement> MeasureFp32FmaPeak(ThreadPool* pool, Isa isa, const PeakOptions& options);
Result<LimitMeasurement> MeasureInt8DotPeak(ThreadPool* pool, Isa isa, const PeakOptions& options);
Result<LimitMeasurement> MeasureBf16DotPeak(ThreadPool* pool, Isa isa, const PeakOptions& options);

struct MachineLimits {
  Isa isa = Isa::kScalar;
  int threads = 1;
  LimitMeasurement read_bandwidth;
  LimitMeasurement fp32_fma;
  LimitMeasurement int8_dot;
  LimitMeasurement bf16_dot;
};

// All four probes, bandwidth first.
Result<MachineLimits> MeasureMachineLimits(ThreadPool* pool, Isa isa,
                                           const BandwidthOptions& bandwidth,
                                           const PeakOptions& peak);

}  // namespace dsv3::ops
