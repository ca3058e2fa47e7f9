// The machine-limit probes (ops/roofline.h): timing, threads and checks around the per-ISA loops,
// and the scalar twins of those loops.
#include "ops/roofline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <new>

#include <fmt/format.h>

#include "ops/roofline_kernels.h"
#include "util/huge_pages.h"

namespace dsv3::ops {

namespace scalar {

double SumFloats(const float* x, int64_t n) {
  constexpr int kAccumulators = 8;
  float acc[kAccumulators] = {};
  int64_t i = 0;
  for (; i + kAccumulators <= n; i += kAccumulators)
    for (int a = 0; a < kAccumulators; ++a) acc[a] += x[i + a];
  for (; i < n; ++i) acc[i % kAccumulators] += x[i];
  double total = 0;
  for (float v : acc) total += v;
  return total;
}

double FmaChains(int64_t iterations, float a, float b0, float b1, int lanes) {
  float acc[kPeakChains];
  for (int c = 0; c < kPeakChains; ++c) acc[c] = static_cast<float>(c + 1);
  for (int64_t i = 0; i < iterations; ++i) {
    for (float& v : acc) v = std::fma(a, b0, v);
    for (float& v : acc) v = std::fma(a, b1, v);
  }
  double total = 0;
  for (float v : acc)
    for (int l = 0; l < lanes; ++l) total += v;
  return total;
}

double MulAddChains(int64_t iterations, float a, float b0, float b1) {
  // Read through a volatile so no caller's constant a (1 in the probe) reaches the loop, where
  // x * 1 would be folded away.
  volatile float opaque_a = a;
  const float multiplier = opaque_a;
  float acc[kPeakChains];
  for (int c = 0; c < kPeakChains; ++c) acc[c] = static_cast<float>(c + 1);
  for (int64_t i = 0; i < iterations; ++i) {
    for (float& v : acc) v = v * multiplier + b0;
    for (float& v : acc) v = v * multiplier + b1;
  }
  double total = 0;
  for (float v : acc) total += v;
  return total;
}

int64_t Int8DotChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1, int lanes) {
  // Four equal byte products per lane; unsigned arithmetic wraps like the instruction does.
  const uint32_t step0 = static_cast<uint32_t>(4 * int32_t{a} * int32_t{b0});
  const uint32_t step1 = static_cast<uint32_t>(4 * int32_t{a} * int32_t{b1});
  uint32_t acc[kPeakChains];
  for (int c = 0; c < kPeakChains; ++c) acc[c] = static_cast<uint32_t>(c + 1);
  for (int64_t i = 0; i < iterations; ++i) {
    for (uint32_t& v : acc) v += step0;
    for (uint32_t& v : acc) v += step1;
  }
  int64_t total = 0;
  for (uint32_t v : acc)
    for (int l = 0; l < lanes; ++l) total += static_cast<int32_t>(v);
  return total;
}

int64_t MaddubsChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1, int lanes) {
  const auto step = [&](int8_t b) {  // two equal products, their sum saturated to int16
    return static_cast<uint16_t>(
        static_cast<int16_t>(std::clamp(2 * int32_t{a} * int32_t{b}, -32768, 32767)));
  };
  const uint16_t step0 = step(b0), step1 = step(b1);
  uint16_t acc[kPeakChains];
  for (int c = 0; c < kPeakChains; ++c) acc[c] = static_cast<uint16_t>(c + 1);
  for (int64_t i = 0; i < iterations; ++i) {
    for (uint16_t& v : acc) v = static_cast<uint16_t>(v + step0);
    for (uint16_t& v : acc) v = static_cast<uint16_t>(v + step1);
  }
  int64_t total = 0;
  for (uint16_t v : acc)
    for (int l = 0; l < lanes; ++l) total += static_cast<int16_t>(v);
  return total;
}

double Bf16DotChains(int64_t iterations, float a, float b0, float b1, int lanes) {
  const float p0 = a * b0, p1 = a * b1;  // exact: bf16 x bf16 fits in f32
  float acc[kPeakChains];
  for (int c = 0; c < kPeakChains; ++c) acc[c] = static_cast<float>(c + 1);
  for (int64_t i = 0; i < iterations; ++i) {
    for (float& v : acc) v = (v + p0) + p0;
    for (float& v : acc) v = (v + p1) + p1;
  }
  double total = 0;
  for (float v : acc)
    for (int l = 0; l < lanes; ++l) total += v;
  return total;
}

}  // namespace scalar

namespace {

using Clock = std::chrono::steady_clock;

double SumSlice(Isa isa, const float* x, int64_t n) {
  switch (isa) {
    case Isa::kScalar:
      return scalar::SumFloats(x, n);
    case Isa::kAvx2:
      return avx2::SumFloats(x, n);
    case Isa::kAvx512:
      return avx512::SumFloats(x, n);
  }
  return scalar::SumFloats(x, n);
}

// Runs fn(thread_index) on every thread of the pool (or once on the caller without one).
void OnAllThreads(ThreadPool* pool, const std::function<void(int)>& fn) {
  if (pool == nullptr || pool->num_threads() <= 1) {
    fn(0);
    return;
  }
  pool->RunOnAll(fn);
}

int NumThreads(ThreadPool* pool) {
  return pool == nullptr ? 1 : pool->num_threads();
}

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Fills best and median from samples.
void Summarise(LimitMeasurement* m) {
  std::vector<double> sorted = m->samples;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  m->best = sorted.back();
  m->median = n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
}

// Σ_{i < n} ReadBandwidthValue(i), exactly.
int64_t ExpectedBufferSum(int64_t n) {
  int64_t sum = (n / 7) * 21;
  for (int64_t r = 0; r < n % 7; ++r) sum += r;
  return sum;
}

// A peak loop: runs `iterations` iterations on one thread and returns its checksum.
struct PeakLoop {
  std::string name, method, unit;
  double ops_per_iteration = 0;  // per thread
  double expected_checksum = 0;  // per thread
  std::function<double(int64_t iterations)> run;
};

Result<LimitMeasurement> MeasurePeak(ThreadPool* pool, const PeakLoop& loop,
                                     const PeakOptions& options) {
  if (options.repetitions < 1) return Status::Error("peak probe: repetitions must be >= 1");
  if (!(options.seconds_per_repetition > 0))
    return Status::Error("peak probe: seconds_per_repetition must be > 0");
  const int threads = NumThreads(pool);
  std::vector<double> checksums(static_cast<size_t>(threads));
  auto run = [&](int64_t iterations) {
    const auto start = Clock::now();
    OnAllThreads(pool, [&](int t) { checksums[static_cast<size_t>(t)] = loop.run(iterations); });
    return Seconds(start);
  };
  // Calibrate: grow the loop until it takes a measurable time, then scale it to the target.
  int64_t iterations = 256;
  double seconds = run(iterations);
  while (seconds < 0.005 && iterations < (int64_t{1} << 40)) {
    iterations *= 4;
    seconds = run(iterations);
  }
  const double scaled =
      static_cast<double>(iterations) * options.seconds_per_repetition / std::max(seconds, 1e-9);
  iterations = std::max<int64_t>(1, static_cast<int64_t>(scaled));

  LimitMeasurement m{loop.name, loop.method, loop.unit, true, 0, 0, {}, 0};
  for (int r = 0; r < options.repetitions; ++r) {
    seconds = run(iterations);
    double checksum = 0;
    for (double c : checksums) checksum += c;
    // The chains return to their start values (b1 = -b0), so this is exact.
    if (checksum != loop.expected_checksum * threads)
      return Err("{} probe: checksum {} != expected {}", loop.name, checksum,
                 loop.expected_checksum * threads);
    m.checksum = checksum;
    m.samples.push_back(loop.ops_per_iteration * static_cast<double>(iterations) * threads /
                        std::max(seconds, 1e-12) / 1e9);
  }
  Summarise(&m);
  return m;
}

LimitMeasurement Unavailable(std::string name, std::string unit, std::string why) {
  LimitMeasurement m;
  m.name = std::move(name);
  m.unit = std::move(unit);
  m.method = std::move(why);
  return m;
}

// Σ over chains of (c + 1), times the lanes: what the loops return when b1 = -b0.
double ChainStartSum(int lanes) {
  return static_cast<double>(kPeakChains * (kPeakChains + 1) / 2) * lanes;
}

}  // namespace

double ParallelSumFloats(ThreadPool* pool, Isa isa, const float* x, int64_t n) {
  const int threads = NumThreads(pool);
  // One padded slot per thread so the threads never write the same cache line.
  constexpr size_t kSlot = 8;
  std::vector<double> partial(static_cast<size_t>(threads) * kSlot, 0.0);
  // Slice boundaries on 64-byte multiples (16 floats), so aligned buffers give aligned slices.
  auto boundary = [&](int t) {
    if (t >= threads) return n;
    return (n * t / threads) / 16 * 16;
  };
  OnAllThreads(pool, [&](int t) {
    const int64_t begin = boundary(t), end = boundary(t + 1);
    partial[static_cast<size_t>(t) * kSlot] = SumSlice(isa, x + begin, end - begin);
  });
  double total = 0;
  for (int t = 0; t < threads; ++t) total += partial[static_cast<size_t>(t) * kSlot];
  return total;
}

Result<LimitMeasurement> MeasureReadBandwidth(ThreadPool* pool, Isa isa,
                                              const BandwidthOptions& options) {
  const int threads = NumThreads(pool);
  const int64_t n = options.buffer_bytes / static_cast<int64_t>(sizeof(float));
  if (n < threads)
    return Err("read bandwidth: buffer of {} bytes holds fewer floats than the {} threads",
               options.buffer_bytes, threads);
  if (options.repetitions < 1) return Status::Error("read bandwidth: repetitions must be >= 1");
  // Huge pages where the kernel allows, as loaded weights get (util/huge_pages.h): the probe
  // measures what streaming weights can reach, not the cost of 4 KiB page walks.
  const LargeBuffer buffer = AllocateLargeBuffer(static_cast<size_t>(n) * sizeof(float));
  if (buffer == nullptr)
    return Err("read bandwidth: cannot allocate {} MiB", options.buffer_bytes >> 20);
  float* x = reinterpret_cast<float*>(buffer.get());
  // Each thread writes (first-touches) the slice it will read.
  OnAllThreads(pool, [&](int t) {
    const int64_t begin = n * t / threads, end = n * (t + 1) / threads;
    for (int64_t i = begin; i < end; ++i) x[i] = ReadBandwidthValue(i);
  });
  const double expected = static_cast<double>(ExpectedBufferSum(n));

  LimitMeasurement m;
  m.name = "read_bandwidth";
  m.unit = "GB/s";
  m.available = true;
  m.method =
      fmt::format("sum of {} MiB of f32, 8 {} accumulators per thread", options.buffer_bytes >> 20,
                  isa == Isa::kAvx512 ? "zmm"
                  : isa == Isa::kAvx2 ? "ymm"
                                      : "scalar");
  const double bytes = static_cast<double>(n) * sizeof(float);
  for (int r = 0; r <= options.repetitions; ++r) {  // r == 0 warms the TLB and caches up
    const auto start = Clock::now();
    const double sum = ParallelSumFloats(pool, isa, x, n);
    const double seconds = Seconds(start);
    // Exact unless a lane's partial sum passes 2^24 (> 2.8 GiB per thread).
    if (std::fabs(sum - expected) > 1e-6 * expected)
      return Err("read bandwidth: checksum {} != expected {}", sum, expected);
    m.checksum = sum;
    if (r > 0) m.samples.push_back(bytes / std::max(seconds, 1e-12) / 1e9);
  }
  Summarise(&m);
  return m;
}

Result<LimitMeasurement> MeasureFp32FmaPeak(ThreadPool* pool, Isa isa, const PeakOptions& options) {
  // acc += 1.5 * 0.25, then acc += 1.5 * -0.25: exact, so each chain returns to its start.
  constexpr float kA = 1.5f, kB = 0.25f;
  PeakLoop loop;
  loop.name = "fp32_fma";
  loop.unit = "GFLOP/s";
  int lanes = 1;
  switch (isa) {
    case Isa::kAvx512:
      lanes = avx512::kLanes;
      loop.method = "vfmadd231ps zmm, 12 chains";
      loop.run = [](int64_t it) { return avx512::FmaChains(it, kA, kB, -kB); };
      break;
    case Isa::kAvx2:
      lanes = avx2::kLanes;
      loop.method = "vfmadd231ps ymm, 12 chains";
      loop.run = [](int64_t it) { return avx2::FmaChains(it, kA, kB, -kB); };
      break;
    case Isa::kScalar:
      // acc * 1 + 0.25, then acc * 1 - 0.25: exact as well.
      loop.method = "f32 multiply + add (baseline x86-64 code), 12 chains";
      loop.run = [](int64_t it) { return scalar::MulAddChains(it, 1.0f, kB, -kB); };
      break;
  }
  loop.ops_per_iteration = 2.0 * kPeakChains * lanes * 2;
  loop.expected_checksum = ChainStartSum(lanes);
  return MeasurePeak(pool, loop, options);
}

Result<LimitMeasurement> MeasureInt8DotPeak(ThreadPool* pool, Isa isa, const PeakOptions& options) {
  PeakLoop loop;
  loop.name = "int8_dot";
  loop.unit = "G op/s";
  switch (isa) {
    case Isa::kAvx512:
      loop.method = "vpdpbusd zmm, 12 chains";
      loop.run = [](int64_t it) {
        return static_cast<double>(avx512::Int8DotChains(it, 1, 1, -1));
      };
      // 64 byte products per instruction, a multiply and an add each.
      loop.ops_per_iteration = 2.0 * kPeakChains * 64 * 2;
      loop.expected_checksum = ChainStartSum(avx512::kLanes);
      break;
    case Isa::kAvx2:
      if (AvxVnniEnabled()) {  // the int8 kernels' prefill runs on it (ops/isa.h)
        loop.method = "vpdpbusd ymm (AVX-VNNI), 12 chains";
        loop.run = [](int64_t it) {
          return static_cast<double>(avxvnni::Int8DotChains(it, 1, 1, -1));
        };
        // 32 byte products per instruction.
        loop.ops_per_iteration = 2.0 * kPeakChains * 32 * 2;
        loop.expected_checksum = ChainStartSum(avxvnni::kLanes);
        break;
      }
      loop.method =
          "vpmaddubsw + vpaddw ymm (AVX2 without AVX-VNNI: no int8 dot-accumulate), 12 chains";
      loop.run = [](int64_t it) { return static_cast<double>(avx2::Int8DotChains(it, 1, 1, -1)); };
      // 32 byte products per vpmaddubsw.
      loop.ops_per_iteration = 2.0 * kPeakChains * 32 * 2;
      loop.expected_checksum = ChainStartSum(avx2::kInt16Lanes);
      break;
    case Isa::kScalar:
      return Unavailable("int8_dot", "G op/s",
                         "no int8 SIMD products in baseline x86-64 code (isa scalar)");
  }
  return MeasurePeak(pool, loop, options);
}

Result<LimitMeasurement> MeasureBf16DotPeak(ThreadPool* pool, Isa isa, const PeakOptions& options) {
  if (isa != Isa::kAvx512)
    return Unavailable("bf16_dot", "GFLOP/s",
                       fmt::format("vdpbf16ps needs AVX-512 BF16 (isa {})", IsaName(isa)));
  PeakLoop loop;
  loop.name = "bf16_dot";
  loop.unit = "GFLOP/s";
  loop.method = "vdpbf16ps zmm, 12 chains";
  loop.run = [](int64_t it) { return avx512::Bf16DotChains(it, 1.0f, 0.5f, -0.5f); };
  // 32 bf16 products per instruction, a multiply and an add each.
  loop.ops_per_iteration = 2.0 * kPeakChains * 32 * 2;
  loop.expected_checksum = ChainStartSum(avx512::kLanes);
  return MeasurePeak(pool, loop, options);
}

Result<MachineLimits> MeasureMachineLimits(ThreadPool* pool, Isa isa,
                                           const BandwidthOptions& bandwidth,
                                           const PeakOptions& peak) {
  MachineLimits limits;
  limits.isa = isa;
  limits.threads = NumThreads(pool);
  DSV3_ASSIGN_OR_RETURN(limits.read_bandwidth, MeasureReadBandwidth(pool, isa, bandwidth));
  DSV3_ASSIGN_OR_RETURN(limits.fp32_fma, MeasureFp32FmaPeak(pool, isa, peak));
  DSV3_ASSIGN_OR_RETURN(limits.int8_dot, MeasureInt8DotPeak(pool, isa, peak));
  DSV3_ASSIGN_OR_RETURN(limits.bf16_dot, MeasureBf16DotPeak(pool, isa, peak));
  return limits;
}

}  // namespace dsv3::ops
