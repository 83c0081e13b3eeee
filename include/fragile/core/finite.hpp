// Finding the first NaN or infinity in a float array. The scan is a branch-free OR over the
// exponent bits in cache-sized blocks, so it vectorises; the index is searched for only in a
// block that holds one. Used where non-finite numbers arise (weights read, activations, sums),
// so that the error names the place instead of surfacing later as a garbage statistic.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace fragile {

/// Index of the first non-finite value of x[0, n), or n when all are finite.
inline std::size_t first_non_finite(const float* x, std::size_t n) noexcept {
  constexpr std::size_t kBlock = 4096;
  for (std::size_t start = 0; start < n; start += kBlock) {
    const std::size_t m = std::min(kBlock, n - start);
    std::uint32_t bad = 0;
    for (std::size_t k = 0; k < m; ++k)
      bad |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(x[start + k]) & 0x7f800000u) ==
                                        0x7f800000u);
    if (bad)
      for (std::size_t k = 0; k < m; ++k)
        if (!std::isfinite(x[start + k])) return start + k;
  }
  return n;
}

}  // namespace fragile
