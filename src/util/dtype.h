// Element types of tensors on disk and their exact conversions to float.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace dsv3 {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF8E4M3,  // e4m3fn: no infinities, 0x7F/0xFF are NaN
  kI8,
  kU8,
  kI32,
  kI64,
  kF64,
};

// safetensors dtype string <-> DType. Unknown strings give nullopt.
std::optional<DType> DTypeFromString(std::string_view name);
std::string_view DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

inline float Bf16ToF32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float F16ToF32(uint16_t bits);
uint16_t F32ToF16(float f);

// e4m3fn decode: exact in float. Table-free so it is obviously the spec's formula (§9.3).
inline float Fp8E4M3ToF32(uint8_t bits) {
  const int sign = bits >> 7;
  const int exponent = (bits >> 3) & 0xf;
  const int mantissa = bits & 0x7;
  if (exponent == 0xf && mantissa == 0x7) return NAN;
  float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                  : std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
  return sign ? -magnitude : magnitude;
}

// Round to nearest even e4m3fn, saturating at ±448 (what torch's float8_e4m3fn cast does for
// in-range values; out-of-range inputs are clamped first by every quantiser we write).
uint8_t F32ToFp8E4M3(float f);

}  // namespace dsv3
