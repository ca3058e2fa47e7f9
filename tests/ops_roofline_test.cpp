// The machine-limit probes (ops/roofline.h): every ISA's loop against its scalar twin, checksums
// of small runs, and well-formed results. Speed is never asserted (the host is shared).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/thread_pool.h"
#include "ops/isa.h"
#include "ops/roofline.h"
#include "ops/roofline_kernels.h"

namespace dsv3::ops {
namespace {

double SumLoop(Isa isa, const std::vector<float>& x, int64_t n) {
  switch (isa) {
    case Isa::kScalar:
      return scalar::SumFloats(x.data(), n);
    case Isa::kAvx2:
      return avx2::SumFloats(x.data(), n);
    case Isa::kAvx512:
      return avx512::SumFloats(x.data(), n);
  }
  return NAN;
}

// Sizes around the 8/16-lane vectors and the 8-accumulator steps (64, 128 floats).
const std::vector<int64_t> kSizes = {0, 1, 7, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 4099};

TEST(Roofline, SumLoopsEqualScalarTwinExactlyOnIntegers) {
  std::vector<float> x(4099);
  for (size_t i = 0; i < x.size(); ++i) x[i] = ReadBandwidthValue(static_cast<int64_t>(i));
  for (Isa isa : RunnableIsas()) {
    for (int64_t n : kSizes) {
      double exact = 0;
      for (int64_t i = 0; i < n; ++i) exact += x[static_cast<size_t>(i)];
      EXPECT_EQ(SumLoop(isa, x, n), exact) << IsaName(isa) << " n=" << n;
    }
  }
}

TEST(Roofline, SumLoopsMatchScalarTwinOnRandomData) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(4099);
  for (float& v : x) v = dist(rng);
  for (Isa isa : RunnableIsas()) {
    for (int64_t n : kSizes) {
      double abs_sum = 0;
      for (int64_t i = 0; i < n; ++i) abs_sum += std::fabs(x[static_cast<size_t>(i)]);
      // Both sum each element through at most n roundings (f32 accumulators, then double).
      const double bound = 2.02 * static_cast<double>(n + 8) * 0x1p-24 * abs_sum;
      EXPECT_NEAR(SumLoop(isa, x, n), scalar::SumFloats(x.data(), n), bound)
          << IsaName(isa) << " n=" << n;
    }
  }
}

TEST(Roofline, ParallelSumSplitsOverThreads) {
  std::vector<float> x(100003);
  double exact = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = ReadBandwidthValue(static_cast<int64_t>(i));
    exact += x[i];
  }
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (Isa isa : RunnableIsas()) {
      EXPECT_EQ(ParallelSumFloats(&pool, isa, x.data(), static_cast<int64_t>(x.size())), exact)
          << IsaName(isa) << " threads=" << threads;
      EXPECT_EQ(ParallelSumFloats(&pool, isa, x.data(), 5), 10.0) << "fewer floats than 16";
    }
  }
  EXPECT_EQ(ParallelSumFloats(nullptr, Isa::kScalar, x.data(), 7), 21.0);
}

TEST(Roofline, PeakLoopsEqualScalarTwin) {
  // Values whose products and sums round (fma rounds once, exactly like the instruction).
  for (int64_t iterations : {0, 1, 2, 37}) {
    const double twin1 = scalar::FmaChains(iterations, 0.1f, 0.3f, -0.7f, 1);
    EXPECT_TRUE(std::isfinite(twin1));
    if (CpuSupports(Isa::kAvx2)) {
      EXPECT_EQ(avx2::FmaChains(iterations, 0.1f, 0.3f, -0.7f),
                scalar::FmaChains(iterations, 0.1f, 0.3f, -0.7f, avx2::kLanes))
          << iterations;
      if (__builtin_cpu_supports("avxvnni")) {
        for (int64_t it : {iterations, int64_t{1} << 20})
          EXPECT_EQ(avxvnni::Int8DotChains(it, 200, 127, 3),
                    scalar::Int8DotChains(it, 200, 127, 3, avxvnni::kLanes))
              << it;
      }
      // 2 * 200 * 127 saturates to 32767; the int16 sums wrap within the iterations.
      for (int64_t it : {iterations, int64_t{1} << 16}) {
        EXPECT_EQ(avx2::Int8DotChains(it, 200, 127, 3),
                  scalar::MaddubsChains(it, 200, 127, 3, avx2::kInt16Lanes))
            << it;
        EXPECT_EQ(avx2::Int8DotChains(it, 255, -128, 5),
                  scalar::MaddubsChains(it, 255, -128, 5, avx2::kInt16Lanes))
            << it;
      }
    }
    if (!CpuSupports(Isa::kAvx512)) continue;
    EXPECT_EQ(avx512::FmaChains(iterations, 0.1f, 0.3f, -0.7f),
              scalar::FmaChains(iterations, 0.1f, 0.3f, -0.7f, avx512::kLanes))
        << iterations;
    // Products of up to 200 * 127 * 4 per step: wraps past 2^31 within the iterations.
    for (int64_t it : {iterations, int64_t{1} << 20})
      EXPECT_EQ(avx512::Int8DotChains(it, 200, 127, 3),
                scalar::Int8DotChains(it, 200, 127, 3, avx512::kLanes))
          << it;
    // bf16 values whose sums stay exact, so the pair order inside an instruction cannot matter.
    EXPECT_EQ(avx512::Bf16DotChains(iterations, 1.5f, 2.0f, -1.0f),
              scalar::Bf16DotChains(iterations, 1.5f, 2.0f, -1.0f, avx512::kLanes))
        << iterations;
  }
  EXPECT_EQ(scalar::Int8DotChains(1, 1, 1, 1, 2), 2 * (78 + 12 * 8));
  // (c + 1) + 4 + 4; and saturation: 2 * 255 * 127 -> 32767 (c + 1 + 32767 wraps past int16), then
  // 2 * 255 * -128 -> -32768 wraps back: c + 1 - 1 per chain.
  EXPECT_EQ(scalar::MaddubsChains(1, 1, 2, 2, 2), 2 * (78 + 12 * 8));
  EXPECT_EQ(scalar::MaddubsChains(1, 255, 127, -128, 1), 78 + 12 * (32767 - 32768));
  // (c + 1) * 2 + 1, then * 2 - 3: 4c + 3 per chain.
  EXPECT_EQ(scalar::MulAddChains(1, 2.0f, 1.0f, -3.0f), 4 * 66 + 12 * 3);
  EXPECT_EQ(scalar::MulAddChains(1000, 1.0f, 0.25f, -0.25f), 78);
  EXPECT_EQ(scalar::Bf16DotChains(1, 1.0f, 0.5f, 0.25f, 1), 78 + 12 * 1.5);
}

void ExpectWellFormed(const LimitMeasurement& m, size_t repetitions) {
  ASSERT_TRUE(m.available) << m.name << ": " << m.method;
  EXPECT_EQ(m.samples.size(), repetitions) << m.name;
  for (double s : m.samples) {
    EXPECT_TRUE(std::isfinite(s) && s > 0) << m.name << " sample " << s;
    EXPECT_LE(s, m.best) << m.name;
  }
  EXPECT_TRUE(std::isfinite(m.median) && m.median > 0 && m.median <= m.best) << m.name;
  EXPECT_FALSE(m.method.empty());
  EXPECT_FALSE(m.unit.empty());
}

TEST(Roofline, SmallBandwidthRunHasTheRightChecksum) {
  ThreadPool pool(2);
  BandwidthOptions options;
  options.buffer_bytes = (int64_t{1} << 20) + 12;  // 262147 floats: not a multiple of anything
  options.repetitions = 3;
  const int64_t n = options.buffer_bytes / 4;
  double exact = 0;
  for (int64_t i = 0; i < n; ++i) exact += ReadBandwidthValue(i);
  for (Isa isa : RunnableIsas()) {
    auto m = MeasureReadBandwidth(&pool, isa, options);
    ASSERT_TRUE(m.ok()) << m.status().message();
    EXPECT_EQ(m->checksum, exact) << IsaName(isa);
    EXPECT_EQ(m->unit, "GB/s");
    ExpectWellFormed(*m, 3);
  }
  auto single = MeasureReadBandwidth(nullptr, Isa::kScalar, options);
  ASSERT_TRUE(single.ok()) << single.status().message();
  EXPECT_EQ(single->checksum, exact);
}

TEST(Roofline, PeakProbesGiveFiniteRatesOrNa) {
  ThreadPool pool(2);
  PeakOptions options;
  options.repetitions = 2;
  options.seconds_per_repetition = 0.002;
  for (Isa isa : RunnableIsas()) {
    auto fma = MeasureFp32FmaPeak(&pool, isa, options);
    ASSERT_TRUE(fma.ok()) << fma.status().message();
    ExpectWellFormed(*fma, 2);
    EXPECT_EQ(fma->checksum, 2.0 * 78 * (isa == Isa::kAvx512 ? 16 : isa == Isa::kAvx2 ? 8 : 1));
    auto int8 = MeasureInt8DotPeak(&pool, isa, options);
    auto bf16 = MeasureBf16DotPeak(&pool, isa, options);
    ASSERT_TRUE(int8.ok() && bf16.ok());
    if (isa == Isa::kAvx512) {
      ExpectWellFormed(*int8, 2);
      ExpectWellFormed(*bf16, 2);
      EXPECT_NE(int8->method.find("vpdpbusd"), std::string::npos) << int8->method;
    } else {
      // No such instruction below AVX-512: no number at all, and a reason.
      EXPECT_FALSE(bf16->available);
      EXPECT_TRUE(bf16->samples.empty());
      EXPECT_NE(bf16->method.find("BF16"), std::string::npos) << bf16->method;
      if (isa == Isa::kAvx2) {  // AVX-VNNI's dot, or the products without the dot-accumulate
        ExpectWellFormed(*int8, 2);
        const bool vnni = AvxVnniEnabled();
        EXPECT_EQ(int8->checksum, 2.0 * 78 * (vnni ? 8 : 16));  // two threads
        EXPECT_NE(int8->method.find(vnni ? "vpdpbusd ymm" : "vpmaddubsw"), std::string::npos)
            << int8->method;
      } else {
        EXPECT_FALSE(int8->available);
        EXPECT_TRUE(int8->samples.empty());
      }
    }
  }
}

TEST(Roofline, BadOptionsAreErrors) {
  ThreadPool pool(2);
  BandwidthOptions tiny;
  tiny.buffer_bytes = 4;  // one float for two threads
  auto r = MeasureReadBandwidth(&pool, Isa::kScalar, tiny);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("buffer"), std::string::npos) << r.status().message();
  BandwidthOptions no_reps;
  no_reps.buffer_bytes = 1024;
  no_reps.repetitions = 0;
  EXPECT_FALSE(MeasureReadBandwidth(&pool, Isa::kScalar, no_reps).ok());
  PeakOptions bad_peak;
  bad_peak.repetitions = 0;
  EXPECT_FALSE(MeasureFp32FmaPeak(&pool, Isa::kScalar, bad_peak).ok());
}

TEST(Roofline, MachineLimitsRunsEveryProbe) {
  ThreadPool pool(2);
  BandwidthOptions bandwidth;
  bandwidth.buffer_bytes = 1 << 16;
  bandwidth.repetitions = 2;
  PeakOptions peak;
  peak.repetitions = 1;
  peak.seconds_per_repetition = 0.001;
  auto limits = MeasureMachineLimits(&pool, BestIsa(), bandwidth, peak);
  ASSERT_TRUE(limits.ok()) << limits.status().message();
  EXPECT_EQ(limits->threads, 2);
  EXPECT_EQ(limits->read_bandwidth.name, "read_bandwidth");
  EXPECT_EQ(limits->fp32_fma.name, "fp32_fma");
  EXPECT_EQ(limits->int8_dot.name, "int8_dot");
  EXPECT_EQ(limits->bf16_dot.name, "bf16_dot");
  ExpectWellFormed(limits->read_bandwidth, 2);
  ExpectWellFormed(limits->fp32_fma, 1);
}

}  // namespace
}  // namespace dsv3::ops
