// Per-ISA entry points of the exp-based vector kernels behind ops/vector_ops.h (Exp, SiluMul,
// Softmax). Only ops/*.cpp and tests include this. The scalar twins use std::exp (glibc expf,
// < 1 ulp); the SIMD variants use the polynomial exp of src/ops/isa/avx512_exp.h, whose error
// bound is below, and which gives the same bits on AVX2 and AVX-512.
#pragma once

#include <cstdint>

namespace dsv3::ops {

// Relative error bound of the SIMD exp wherever exp(x) is a normal float (measured maximum over
// every float: 8.5e-8, 1.01 ulp). Subnormal results are within kExpSubnormalError absolute.
inline constexpr double kExpRelError = 0x1p-23;
inline constexpr double kExpSubnormalError = 0x1p-149;

namespace scalar {
void Exp(const float* x, int64_t n, float* out);
}  // namespace scalar

namespace avx2 {
void Exp(const float* x, int64_t n, float* out);
void SiluMul(float* gate, const float* up, int64_t n);
void Softmax(float* x, int64_t n);
}  // namespace avx2

namespace avx512 {
void Exp(const float* x, int64_t n, float* out);
void SiluMul(float* gate, const float* up, int64_t n);
void Softmax(float* x, int64_t n);
}  // namespace avx512

}  // namespace dsv3::ops
