// Seeded random numbers that give the same stream on every platform and standard library.
//
// std::mt19937 is portable but std::uniform_*_distribution and std::normal_distribution are not
// (their algorithms are implementation-defined), so fragile draws through its own
// distributions on top of xoshiro256** (Blackman & Vigna), seeded by SplitMix64.
// Streams for parallel work are derived with `Rng::fork(stream)`, never by sharing one engine.
#pragma once

#include "fragile/core/error.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>

namespace fragile {

/// SplitMix64 step: used to expand seeds and to hash stream ids.
constexpr std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  using result_type = std::uint64_t;

  explicit constexpr Rng(std::uint64_t seed = 0) noexcept : seed_(seed) {
    std::uint64_t s = seed;
    for (auto& word : state_) word = splitmix64(s);
  }

  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }

  /// Next 64 random bits (xoshiro256**).
  constexpr result_type operator()() noexcept {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  /// An independent generator for sub-stream `stream` (e.g. a layer or window index); the
  /// result depends only on this generator's seed and `stream`, not on how much was drawn.
  [[nodiscard]] constexpr Rng fork(std::uint64_t stream) const noexcept {
    std::uint64_t s = seed_ ^ 0x5851f42d4c957f2dull;
    std::uint64_t mixed = splitmix64(s);
    s = mixed ^ stream;
    return Rng(splitmix64(s));
  }

  [[nodiscard]] constexpr std::uint64_t seed() const noexcept { return seed_; }

  /// Uniform double in [0, 1) with 53 random bits.
  constexpr double uniform() noexcept { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }

  /// Uniform float in [0, 1) with 24 random bits.
  constexpr float uniform_f32() noexcept { return static_cast<float>((*this)() >> 40) * 0x1.0p-24f; }

  /// Uniform double in [lo, hi).
  constexpr double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform(); }

  /// Unbiased integer in [0, n) (Lemire's multiply-shift with rejection). n must be > 0.
  std::uint64_t below(std::uint64_t n) {
    require<ArgumentError>(n > 0, "Rng::below: n must be positive");
    unsigned __int128 m = static_cast<unsigned __int128>((*this)()) * n;
    auto low = static_cast<std::uint64_t>(m);
    if (low < n) {
      const std::uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<unsigned __int128>((*this)()) * n;
        low = static_cast<std::uint64_t>(m);
      }
    }
    return static_cast<std::uint64_t>(m >> 64);
  }

  /// Standard normal draw (Box-Muller; the second value of each pair is cached).
  double normal() noexcept {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = 0.0;
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    const double angle = 2.0 * std::numbers::pi * u2;
    spare_ = radius * std::sin(angle);
    has_spare_ = true;
    return radius * std::cos(angle);
  }

  double normal(double mean, double stddev) noexcept { return mean + stddev * normal(); }

  /// Index drawn with probability proportional to `weights` (non-negative, finite, sum > 0).
  template <class T>
  std::size_t categorical(std::span<const T> weights) {
    double total = 0.0;
    for (T w : weights) {
      require<ArgumentError>(w >= T(0) && std::isfinite(static_cast<double>(w)),
                             "Rng::categorical: weights must be finite and non-negative");
      total += static_cast<double>(w);
    }
    require<ArgumentError>(total > 0.0, "Rng::categorical: weights sum to zero ({} weights)",
                           weights.size());
    const double target = uniform() * total;
    double acc = 0.0;
    std::size_t last_positive = 0;
    for (std::size_t i = 0; i < weights.size(); ++i) {
      if (weights[i] > T(0)) last_positive = i;
      acc += static_cast<double>(weights[i]);
      if (target < acc) return i;
    }
    return last_positive;  // rounding left target at the very top
  }

  /// Fisher-Yates shuffle with this generator (portable, unlike std::shuffle).
  template <class Range>
  void shuffle(Range& range) {
    const auto n = static_cast<std::uint64_t>(std::size(range));
    for (std::uint64_t i = n; i > 1; --i) {
      using std::swap;
      swap(range[i - 1], range[below(i)]);
    }
  }

 private:
  static constexpr std::uint64_t rotl(std::uint64_t x, int k) noexcept {
    return (x << k) | (x >> (64 - k));
  }

  std::uint64_t seed_;
  std::array<std::uint64_t, 4> state_{};
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace fragile
