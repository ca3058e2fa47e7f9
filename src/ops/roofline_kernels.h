// Per-ISA loops of the machine-limit probes (ops/roofline.h). Only ops/roofline.cpp and tests
// include this. Each SIMD loop has a scalar twin that computes the same values; tests run every
// variant the CPU supports against it.
//
// The peak loops run kPeakChains independent accumulator chains; one iteration issues two
// instructions per chain: acc += a * b0, then acc += a * b1 (b1 = -b0 in the probes, so every
// chain returns to its start value and the result can be checked exactly). Chain c starts at
// c + 1 in every lane. Each loop returns the sum over chains (outer) and lanes (inner) of the final
// accumulators, added in that order in double (int64 for int8).
#pragma once

#include <cstdint>

namespace dsv3::ops {

// Enough independent chains to cover the FMA latency (4 cycles) times two pipes on current cores.
inline constexpr int kPeakChains = 12;

namespace scalar {
// Sum of x[0, n) with 8 f32 accumulators (element i goes to accumulator i % 8), the accumulators
// then added in order in double.
double SumFloats(const float* x, int64_t n);
// The reference of every variant with `lanes` lanes: acc = fma(a, b, acc), rounded once.
double FmaChains(int64_t iterations, float a, float b0, float b1, int lanes);
// The scalar ISA's FP32 probe: acc = acc * a + b as a multiply and a separate add, as code
// compiled for baseline x86-64 (no FMA) computes (std::fma is a slow library call there). a is
// multiplied even when it is 1.
double MulAddChains(int64_t iterations, float a, float b0, float b1);
// vpdpbusd: each 32-bit lane adds four products of the unsigned byte a and the signed byte b,
// wrapping modulo 2^32.
int64_t Int8DotChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1, int lanes);
// vpmaddubsw + vpaddw (AVX2's int8 products): each 16-bit lane adds the sum of two products of
// the unsigned byte a and the signed byte b, that sum saturated to int16, the add wrapping modulo
// 2^16. Returns the sum over chains and `lanes` 16-bit lanes.
int64_t MaddubsChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1, int lanes);
// vdpbf16ps: each f32 lane adds the products of two bf16 pairs, the odd pair first, rounding after
// each (a, b bf16 values, so the products are exact in f32).
double Bf16DotChains(int64_t iterations, float a, float b0, float b1, int lanes);
}  // namespace scalar

// Compiled with -mavx2 -mfma (src/ops/isa/avx2_roofline.cpp).
namespace avx2 {
inline constexpr int kLanes = 8;
double SumFloats(const float* x, int64_t n);                        // 8 ymm accumulators
double FmaChains(int64_t iterations, float a, float b0, float b1);  // vfmadd231ps ymm
inline constexpr int kInt16Lanes = 16;
// vpmaddubsw + vpaddw ymm: AVX2 has no int8 dot-accumulate; its q4_0 prefill and tiled GEMV sum
// vpmaddubsw's pairs in int16 before widening (ops/isa/avx2_int8_kernels.h).
int64_t Int8DotChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1);
}  // namespace avx2

// Compiled with -mavx2 -mavxvnni (src/ops/isa/avxvnni_roofline.cpp).
namespace avxvnni {
inline constexpr int kLanes = 8;
int64_t Int8DotChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1);  // vpdpbusd ymm
}  // namespace avxvnni

// Compiled with AVX-512 F/BW/VL/DQ/VNNI/BF16 (src/ops/isa/avx512_roofline.cpp).
namespace avx512 {
inline constexpr int kLanes = 16;
double SumFloats(const float* x, int64_t n);                                 // 8 zmm accumulators
double FmaChains(int64_t iterations, float a, float b0, float b1);           // vfmadd231ps zmm
int64_t Int8DotChains(int64_t iterations, uint8_t a, int8_t b0, int8_t b1);  // vpdpbusd zmm
double Bf16DotChains(int64_t iterations, float a, float b0, float b1);       // vdpbf16ps zmm
}  // namespace avx512

}  // namespace dsv3::ops
