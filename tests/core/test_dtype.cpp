// dtype conversions checked exhaustively: every bf16/f16 bit pattern, round to nearest even
// against an independent reference (nearest representable value computed in double) and against
// the compiler's own f32 -> _Float16 conversion.
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "fragile/core/dtype.hpp"
#include "fragile/core/rng.hpp"
#include "support/test_data.hpp"

using fragile::DType;

namespace {

std::uint32_t bits(float f) { return std::bit_cast<std::uint32_t>(f); }
float from_bits(std::uint32_t u) { return std::bit_cast<float>(u); }

/// A 16-bit float format: its largest finite positive pattern, the value one ulp above it
/// (where rounding switches to Inf), and its decoder.
struct Format {
  std::uint16_t max_finite;
  double beyond_max;
  float (*decode)(std::uint16_t);
};
float decode_bf16(std::uint16_t h) { return fragile::bf16_to_f32(h); }
float decode_f16(std::uint16_t h) { return fragile::f16_to_f32(h); }
const Format kBF16{0x7f7f, 0x1p128, decode_bf16};
const Format kF16{0x7bff, 0x1p16, decode_f16};

/// Reference rounding of a non-NaN f32 to the format: the nearest representable value found by
/// bisection over the (monotone) positive bit patterns, distances in double, ties to the even
/// pattern, beyond the last midpoint -> Inf.
std::uint16_t reference_round(const Format& fmt_, float x) {
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(x));
  const auto value = [&](std::uint32_t k) {
    return k > fmt_.max_finite ? fmt_.beyond_max
                               : static_cast<double>(fmt_.decode(static_cast<std::uint16_t>(k)));
  };
  const std::uint16_t inf = static_cast<std::uint16_t>(fmt_.max_finite + 1);
  if (std::isinf(a)) return sign | inf;
  // Largest k in [0, max_finite] with value(k) <= a.
  std::uint32_t lo = 0, hi = fmt_.max_finite;
  while (lo < hi) {
    const std::uint32_t mid = (lo + hi + 1) / 2;
    if (value(mid) <= a)
      lo = mid;
    else
      hi = mid - 1;
  }
  const double below = a - value(lo), above = value(lo + 1) - a;
  std::uint32_t k = lo;
  if (above < below || (above == below && (lo & 1u))) k = lo + 1;
  return static_cast<std::uint16_t>(sign | std::min<std::uint32_t>(k, inf));
}

#if defined(__FLT16_MAX__)
std::uint16_t compiler_f16(float x) {
  const auto h = static_cast<_Float16>(x);
  return std::bit_cast<std::uint16_t>(h);
}
float compiler_f16_to_f32(std::uint16_t h) {
  return static_cast<float>(std::bit_cast<_Float16>(h));
}
#endif

/// Checks one value; reports through Catch only on a mismatch (millions of values are checked).
void check_rounding(float x) {
  const auto b = fragile::f32_to_bf16(x), h = fragile::f32_to_f16(x);
  bool ok = b == reference_round(kBF16, x) && h == reference_round(kF16, x);
#if defined(__FLT16_MAX__)
  ok = ok && h == compiler_f16(x);
#endif
  if (ok) return;
  INFO("x = " << x << " (bits 0x" << std::hex << bits(x) << ")");
  CHECK(b == reference_round(kBF16, x));
  CHECK(h == reference_round(kF16, x));
#if defined(__FLT16_MAX__)
  CHECK(h == compiler_f16(x));
#endif
}

}  // namespace

TEST_CASE("dtype names, sizes and parsing", "[core][dtype]") {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kI8, DType::kU8})
    CHECK(fragile::parse_dtype(fragile::dtype_name(t), "t") == t);
  CHECK(fragile::dtype_size(DType::kF32) == 4);
  CHECK(fragile::dtype_size(DType::kBF16) == 2);
  CHECK(fragile::dtype_size(DType::kF16) == 2);
  CHECK(fragile::dtype_size(DType::kI8) == 1);
  CHECK(fragile::dtype_size(DType::kU8) == 1);
  CHECK_THROWS_WITH(fragile::parse_dtype("f32", "tensor 'w'"),
                    Catch::Contains("tensor 'w': dtype 'f32' is not supported"));
  CHECK(fragile::is_floating(DType::kBF16));
  CHECK(!fragile::is_floating(DType::kU8));
}

TEST_CASE("every bf16 pattern round trips through f32 exactly", "[core][dtype]") {
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const float f = fragile::bf16_to_f32(b);
    REQUIRE(bits(f) == h << 16);  // bf16 is the top half of an f32
    const std::uint16_t back = fragile::f32_to_bf16(f);
    if (std::isnan(f)) {
      REQUIRE(std::isnan(fragile::bf16_to_f32(back)));
      REQUIRE((back & 0x8000) == (b & 0x8000));
    } else {
      REQUIRE(back == b);
    }
  }
}

TEST_CASE("every f16 pattern round trips through f32 exactly", "[core][dtype]") {
  std::size_t nans = 0;
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const float f = fragile::f16_to_f32(b);
    const std::uint16_t back = fragile::f32_to_f16(f);
#if defined(__FLT16_MAX__)
    const float hw = compiler_f16_to_f32(b);
    REQUIRE((std::isnan(f) ? std::isnan(hw) : bits(f) == bits(hw)));
#endif
    if (std::isnan(f)) {
      ++nans;
      REQUIRE(std::isnan(fragile::f16_to_f32(back)));
      REQUIRE((back & 0x8000) == (b & 0x8000));
    } else {
      REQUIRE(back == b);
    }
  }
  CHECK(nans == 2 * 1023);
  // Subnormals decode to mant * 2^-24 exactly.
  CHECK(fragile::f16_to_f32(0x0001) == 0x1p-24f);
  CHECK(fragile::f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
  CHECK(fragile::f16_to_f32(0x8200) == -512 * 0x1p-24f);
  CHECK(std::isinf(fragile::f16_to_f32(0x7c00)));
  CHECK(fragile::f16_to_f32(0xfc00) < 0);
}

TEST_CASE("f32 -> bf16/f16 rounds to nearest even on crafted values", "[core][dtype]") {
  // bf16 keeps 7 mantissa bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7.
  CHECK(fragile::f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80);             // tie -> even (down)
  CHECK(fragile::f32_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3f82);         // tie -> even (up)
  CHECK(fragile::f32_to_bf16(1.0f + 0x1p-8f + 0x1p-23f) == 0x3f81);  // just above the tie
  CHECK(fragile::f32_to_bf16(from_bits(0x3f80ffff)) == 0x3f81);
  CHECK(fragile::f32_to_bf16(-1.0f - 0x1p-8f) == 0xbf80);
  CHECK(fragile::f32_to_bf16(std::numeric_limits<float>::max()) == 0x7f80);  // rounds to Inf
  CHECK(fragile::f32_to_bf16(from_bits(0x7f7f7fff)) == 0x7f7f);              // stays finite
  CHECK(fragile::f32_to_bf16(std::numeric_limits<float>::denorm_min()) == 0x0000);
  CHECK(fragile::f32_to_bf16(from_bits(0x00008000)) == 0x0000);  // subnormal tie -> even
  CHECK(fragile::f32_to_bf16(from_bits(0x00018000)) == 0x0002);
  CHECK(fragile::f32_to_bf16(-0.0f) == 0x8000);
  // Signalling NaNs whose payload sits in the dropped bits must not become Inf.
  for (std::uint32_t nan : {0x7f800001u, 0xff800001u, 0x7fc00000u, 0x7f80ffffu}) {
    const auto b = fragile::f32_to_bf16(from_bits(nan));
    CHECK(std::isnan(fragile::bf16_to_f32(b)));
    CHECK((b >> 15) == (nan >> 31));
  }

  // f16 keeps 10 mantissa bits.
  CHECK(fragile::f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);
  CHECK(fragile::f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);
  CHECK(fragile::f32_to_f16(1.0f + 0x1p-11f + 0x1p-23f) == 0x3c01);
  CHECK(fragile::f32_to_f16(65504.0f) == 0x7bff);
  CHECK(fragile::f32_to_f16(65519.99f) == 0x7bff);
  CHECK(fragile::f32_to_f16(65520.0f) == 0x7c00);  // the midpoint to 2^16 rounds to Inf
  CHECK(fragile::f32_to_f16(1.0e6f) == 0x7c00);
  CHECK(fragile::f32_to_f16(-1.0e30f) == 0xfc00);
  CHECK(fragile::f32_to_f16(std::numeric_limits<float>::infinity()) == 0x7c00);
  // Subnormals: the f16 ulp there is 2^-24.
  CHECK(fragile::f32_to_f16(0x1p-24f) == 0x0001);
  CHECK(fragile::f32_to_f16(0x1p-25f) == 0x0000);      // tie -> even (zero)
  CHECK(fragile::f32_to_f16(3 * 0x1p-25f) == 0x0002);  // tie -> even (up)
  CHECK(fragile::f32_to_f16(0x1p-25f + 0x1p-40f) == 0x0001);
  CHECK(fragile::f32_to_f16(1023.5f * 0x1p-24f) == 0x0400);  // largest subnormal tie -> min normal
  CHECK(fragile::f32_to_f16(0x1p-14f) == 0x0400);
  CHECK(fragile::f32_to_f16(-0x1p-30f) == 0x8000);  // underflow keeps the sign
  CHECK(fragile::f32_to_f16(1e-45f) == 0x0000);
  for (std::uint32_t nan : {0x7f800001u, 0xffc00000u, 0x7fbfffffu}) {
    const auto h = fragile::f32_to_f16(from_bits(nan));
    CHECK(std::isnan(fragile::f16_to_f32(h)));
    CHECK((h >> 15) == (nan >> 31));
  }
}

TEST_CASE("f32 -> bf16/f16 match the reference rounding on every midpoint and at random",
          "[core][dtype]") {
  // Each midpoint between neighbouring representable values, and one f32 ulp either side.
  for (const Format* f : {&kBF16, &kF16}) {
    for (std::uint32_t k = 0; k < f->max_finite; k += 1) {
      const float lo = f->decode(static_cast<std::uint16_t>(k));
      const float hi = f->decode(static_cast<std::uint16_t>(k + 1));
      const auto mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);  // exact
      for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, hi), lo, -mid})
        if (bits(x) != 0) check_rounding(x);
    }
  }
  // Random f32 bit patterns (all exponents), and random values in the weight range.
  fragile::Rng rng(20261122);
  for (int i = 0; i < (1 << 17); ++i) {
    const float x = from_bits(static_cast<std::uint32_t>(rng()));
    if (!std::isnan(x)) check_rounding(x);
    check_rounding(static_cast<float>(rng.normal(0.0, 0.02)));
  }
  for (float x : {0.0f, -0.0f, 1.0f, -1.0f, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  65520.0f, std::nextafter(65520.0f, 0.0f), 0x1p-24f, 0x1p-25f, 0x1p-26f})
    check_rounding(x);
  // The reference itself is not the code under test: spot-check it on known ties.
  CHECK(reference_round(kBF16, 1.0f + 0x1p-8f) == 0x3f80);
  CHECK(reference_round(kBF16, 1.0f + 3 * 0x1p-8f) == 0x3f82);
  CHECK(reference_round(kF16, 65520.0f) == 0x7c00);
  CHECK(reference_round(kF16, -0x1p-25f) == 0x8000);
  CHECK(reference_round(kF16, 3 * 0x1p-25f) == 0x0002);
}

TEST_CASE("array conversions agree with the scalar ones, at any alignment", "[core][dtype]") {
  fragile::Rng rng(7);
  std::vector<float> src(1001);
  for (auto& v : src) v = static_cast<float>(rng.normal(0.0, 3.0));
  src[5] = 1e6f;  // f16 overflow
  std::vector<std::uint16_t> b(src.size()), h(src.size());
  fragile::convert_f32_to_bf16(src.data(), b.data(), src.size());
  fragile::convert_f32_to_f16(src.data(), h.data(), src.size());
  for (std::size_t i = 0; i < src.size(); ++i) {
    REQUIRE(b[i] == fragile::f32_to_bf16(src[i]));
    REQUIRE(h[i] == fragile::f32_to_f16(src[i]));
  }
  // Stored tensors in mmapped files need not be aligned: read from an odd address.
  std::vector<std::byte> raw(2 * src.size() + 1);
  std::memcpy(raw.data() + 1, b.data(), 2 * b.size());
  std::vector<float> out(src.size());
  fragile::convert_to_f32(DType::kBF16, raw.data() + 1, out.data(), out.size());
  for (std::size_t i = 0; i < src.size(); ++i)
    REQUIRE(bits(out[i]) == bits(fragile::bf16_to_f32(b[i])));
  std::memcpy(raw.data() + 1, h.data(), 2 * h.size());
  fragile::convert_to_f32(DType::kF16, raw.data() + 1, out.data(), out.size());
  for (std::size_t i = 0; i < src.size(); ++i)
    REQUIRE(bits(out[i]) == bits(fragile::f16_to_f32(h[i])));

  const std::vector<std::int8_t> i8 = {-128, -1, 0, 1, 127};
  const std::vector<std::uint8_t> u8 = {0, 1, 128, 255, 7};
  fragile::convert_to_f32(DType::kI8, i8.data(), out.data(), i8.size());
  CHECK(std::vector<float>(out.begin(), out.begin() + 5) ==
        std::vector<float>{-128, -1, 0, 1, 127});
  fragile::convert_to_f32(DType::kU8, u8.data(), out.data(), u8.size());
  CHECK(std::vector<float>(out.begin(), out.begin() + 5) == std::vector<float>{0, 1, 128, 255, 7});
  fragile::convert_to_f32(DType::kF32, src.data(), out.data(), src.size());
  CHECK(out == src);
}
