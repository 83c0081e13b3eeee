// Percentile bootstrap confidence intervals for a paired statistic (e.g. Spearman's rho of a
// metric against fragility V_l): resample the n pairs with replacement B times using a seeded
// fragile::Rng, recompute the statistic, and take the (alpha/2, 1 - alpha/2) quantiles.
// Resamples whose statistic is undefined (NaN: e.g. all drawn points tied) are dropped and
// counted, so a caller can see when the interval rests on fewer resamples than asked for.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/core/rng.hpp"
#include "fragile/stats/correlation.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace fragile::stats {

struct BootstrapInterval {
  double estimate = 0.0;  ///< statistic on the original sample
  double lower = 0.0;
  double upper = 0.0;
  double confidence = 0.95;
  std::size_t resamples = 0;  ///< resamples with a defined statistic
  std::size_t undefined = 0;  ///< resamples dropped as NaN
};

/// Linear-interpolated quantile of sorted values (numpy's default 'linear' method).
inline double quantile_sorted(std::span<const double> sorted, double q) {
  require<ArgumentError>(!sorted.empty(), "quantile: no values");
  require<ArgumentError>(q >= 0.0 && q <= 1.0, "quantile: q = {} outside [0, 1]", q);
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

/// `statistic(x, y)` returns a Correlation (pearson, spearman, kendall or any callable alike).
template <class Statistic>
BootstrapInterval bootstrap_ci(std::span<const double> x, std::span<const double> y,
                               Statistic statistic, std::size_t resamples = 2000,
                               double confidence = 0.95, std::uint64_t seed = 0) {
  require<ArgumentError>(x.size() == y.size(), "bootstrap_ci: x has {} values, y has {}",
                         x.size(), y.size());
  require<ArgumentError>(x.size() >= 3, "bootstrap_ci: needs at least 3 pairs, got {}", x.size());
  require<ArgumentError>(resamples >= 10, "bootstrap_ci: resamples must be >= 10, got {}",
                         resamples);
  require<ArgumentError>(confidence > 0.0 && confidence < 1.0,
                         "bootstrap_ci: confidence must be in (0, 1), got {}", confidence);
  BootstrapInterval out;
  out.confidence = confidence;
  out.estimate = statistic(x, y).statistic;
  Rng rng(seed);
  const std::size_t n = x.size();
  std::vector<double> bx(n), by(n), values;
  values.reserve(resamples);
  for (std::size_t b = 0; b < resamples; ++b) {
    for (std::size_t i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(rng.below(n));
      bx[i] = x[k];
      by[i] = y[k];
    }
    const double s = statistic(std::span<const double>(bx), std::span<const double>(by)).statistic;
    if (std::isnan(s)) {
      ++out.undefined;
    } else {
      values.push_back(s);
    }
  }
  require<NumericError>(!values.empty(),
                        "bootstrap_ci: every one of {} resamples gave an undefined statistic",
                        resamples);
  std::sort(values.begin(), values.end());
  const double alpha = 1.0 - confidence;
  out.lower = quantile_sorted(values, alpha / 2);
  out.upper = quantile_sorted(values, 1.0 - alpha / 2);
  out.resamples = values.size();
  return out;
}

}  // namespace fragile::stats
