// Element types of stored tensors and exact conversions between bf16 / f16 and f32.
//
// f32 -> bf16 / f16 round to nearest, ties to even (as torch's .to(bfloat16) and IEEE 754);
// NaN stays NaN (quiet, sign kept), +-Inf stays +-Inf, f16 subnormals are exact both ways and
// values beyond f16's range become +-Inf. The conversions are branch-free bit arithmetic so that
// the array loops below auto-vectorise.
#pragma once

#include "fragile/core/error.hpp"

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace fragile {

enum class DType : std::uint8_t { kF32, kF16, kBF16, kI8, kU8, kI32 };

/// Bytes per element.
constexpr std::size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kF16:
    case DType::kBF16: return 2;
    case DType::kI8:
    case DType::kU8: return 1;
  }
  return 0;
}

/// The safetensors spelling ("F32", "F16", "BF16", "I8", "U8", "I32").
constexpr std::string_view dtype_name(DType t) noexcept {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kI32: return "I32";
  }
  return "?";
}

/// Parses the name of a dtype fragile reads (I32 is written only, for packed GPTQ weights); throws IoError naming `what` (the tensor) otherwise.
inline DType parse_dtype(std::string_view name, std::string_view what) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kI8, DType::kU8})
    if (dtype_name(t) == name) return t;
  raise<IoError>("{}: dtype '{}' is not supported (expected F32, F16, BF16, I8 or U8)", what, name);
}

constexpr bool is_floating(DType t) noexcept {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

// ---------------------------------------------------------------- scalar conversions

constexpr float bf16_to_f32(std::uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

constexpr std::uint16_t f32_to_bf16(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  // Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate.
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t quiet_nan = (u >> 16) | 0x0040u;
  return static_cast<std::uint16_t>(nan ? quiet_nan : rounded);
}

constexpr float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // Inf / NaN (payload kept)
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else {
    // Zero or subnormal: mant * 2^-24, exact in f32.
    const float mag = static_cast<float>(mant) * 5.9604644775390625e-8f;
    bits = sign | std::bit_cast<std::uint32_t>(mag);
  }
  return std::bit_cast<float>(bits);
}

constexpr std::uint16_t f32_to_f16(float f) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65520
  if (a < 0x38800000u) {
    // Result is an f16 subnormal or zero: scale so the f16 ulp (2^-24) lands on integer units,
    // and let the FPU round to nearest even.
    const float mag = std::bit_cast<float>(a) * 16777216.0f;  // 2^24
    const auto q = static_cast<std::uint32_t>(mag + 12582912.0f) - 12582912u;  // rint via 1.5*2^23
    return static_cast<std::uint16_t>(sign | q);
  }
  // Normal: rebias exponent, round mantissa to 10 bits, ties to even (carry may bump exponent).
  const std::uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
  return static_cast<std::uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
}

// ---------------------------------------------------------------- array conversions

namespace detail {
/// Loads a u16 from possibly unaligned storage (mmapped files need not align tensors).
inline std::uint16_t load_u16(const std::byte* p) noexcept {
  std::uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
}  // namespace detail

/// Converts `n` elements of a stored tensor (`src`, dtype `t`, any alignment) to f32.
/// Integer types convert by value.
inline void convert_to_f32(DType t, const void* src, float* dst, std::size_t n) noexcept {
  const auto* bytes = static_cast<const std::byte*>(src);
  switch (t) {
    case DType::kF32:
      if (n) std::memcpy(dst, src, n * sizeof(float));
      break;
    case DType::kBF16:
#pragma omp simd
      for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(detail::load_u16(bytes + 2 * i));
      break;
    case DType::kF16:
#pragma omp simd
      for (std::size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(detail::load_u16(bytes + 2 * i));
      break;
    case DType::kI8: {
      const auto* s = static_cast<const std::int8_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      break;
    }
    case DType::kU8: {
      const auto* s = static_cast<const std::uint8_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      break;
    }
    case DType::kI32:
      for (std::size_t i = 0; i < n; ++i) {
        std::int32_t v;
        std::memcpy(&v, bytes + 4 * i, sizeof v);
        dst[i] = static_cast<float>(v);
      }
      break;
  }
}

/// Converts f32 values to bf16 (round to nearest even).
inline void convert_f32_to_bf16(const float* src, std::uint16_t* dst, std::size_t n) noexcept {
#pragma omp simd
  for (std::size_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

/// Converts f32 values to f16 (round to nearest even, overflow to Inf).
inline void convert_f32_to_f16(const float* src, std::uint16_t* dst, std::size_t n) noexcept {
#pragma omp simd
  for (std::size_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

}  // namespace fragile
