#include "util/dtype.h"

#include <array>
#include <cmath>
#include <cstring>

namespace dsv3 {

namespace {
struct DTypeInfo {
  DType dtype;
  std::string_view name;
  size_t size;
};
constexpr std::array<DTypeInfo, 9> kDTypes = {{
    {DType::kF32, "F32", 4},
    {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},
    {DType::kF8E4M3, "F8_E4M3", 1},
    {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},
    {DType::kI32, "I32", 4},
    {DType::kI64, "I64", 8},
    {DType::kF64, "F64", 8},
}};
}  // namespace

std::optional<DType> DTypeFromString(std::string_view name) {
  for (const auto& info : kDTypes)
    if (info.name == name) return info.dtype;
  return std::nullopt;
}

std::string_view DTypeName(DType dtype) {
  for (const auto& info : kDTypes)
    if (info.dtype == dtype) return info.name;
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& info : kDTypes)
    if (info.dtype == dtype) return info.size;
  return 0;
}

float F16ToF32(uint16_t bits) {
  const int sign = bits >> 15;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  if (exponent == 0x1f && mantissa != 0) {
    // A quiet NaN keeping the sign and payload, as the hardware conversion (vcvtph2ps) gives it.
    const uint32_t u =
        (static_cast<uint32_t>(sign) << 31) | 0x7fc00000u | (static_cast<uint32_t>(mantissa) << 13);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 0x1f) {
    magnitude = INFINITY;
  } else {
    magnitude = std::ldexp(1.0f + mantissa / 1024.0f, exponent - 15);
  }
  return sign ? -magnitude : magnitude;
}

uint16_t F32ToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const float a = std::fabs(f);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a >= 65520.0f) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < std::ldexp(1.0f, -14)) {
    // Subnormal: value = m * 2^-24, round to nearest even.
    const float m = std::nearbyint(a * std::ldexp(1.0f, 24));
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(m));
  }
  int exponent;
  const float frac = std::frexp(a, &exponent);  // a = frac * 2^exponent, frac in [0.5, 1)
  float mantissa = std::nearbyint((frac * 2.0f - 1.0f) * 1024.0f);
  int e = exponent - 1 + 15;
  if (mantissa >= 1024.0f) {
    mantissa = 0;
    ++e;
  }
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(e) << 10) |
                               static_cast<uint32_t>(mantissa));
}

uint8_t F32ToFp8E4M3(float f) {
  if (std::isnan(f)) return 0x7f;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::fabs(f);
  if (a >= 448.0f) return sign | 0x7e;
  // Subnormals (below the smallest normal 2^-6) are multiples of 2^-9; code = multiple. Rounding
  // up to 8 lands exactly on the code of 2^-6, so no special case is needed.
  if (a < 0.015625f) return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
  int exponent;
  const float frac = std::frexp(a, &exponent);  // a = frac * 2^exponent, frac in [0.5, 1)
  int mantissa = static_cast<int>(std::nearbyint((frac * 2.0f - 1.0f) * 8.0f));  // ties to even
  int e = exponent - 1 + 7;
  if (mantissa == 8) {
    mantissa = 0;
    ++e;
  }
  if (e > 15 || (e == 15 && mantissa == 7)) return sign | 0x7e;  // 0x7f is NaN: saturate
  return sign | static_cast<uint8_t>((e << 3) | mantissa);
}

}  // namespace dsv3
