// Correlation coefficients with two-sided p-values, computed as scipy.stats computes them, so a
// table in a paper says the same thing whether it came from fragile or from scipy.
//
//   pearson:  r on mean-centred data; p = 2 * cdf(students_t(n-2), -|t|), t = r sqrt((n-2)/(1-r^2))
//             (scipy's beta-distribution form is the same number).
//   spearman: pearson of average ranks (ties share the mean rank); p as scipy.stats.spearmanr:
//             t = r sqrt((n-2) / ((1+r)(1-r))), two-sided Student t with n-2 d.o.f.
//   kendall:  tau-b; p as scipy.stats.kendalltau(method='auto'): the exact null distribution of
//             the number of discordant pairs when there are no ties and n <= 33 (or the count of
//             discordant or concordant pairs is <= 1), else the normal approximation with the
//             tie-corrected variance (Kendall 1970, eq. 4.4).
// Inputs whose correlation is undefined (a constant vector) give NaN statistic and p-value, as
// scipy does; fewer than 2 points or mismatched lengths are ArgumentErrors.
#pragma once

#include "fragile/core/error.hpp"

#include <boost/math/distributions/normal.hpp>
#include <boost/math/distributions/students_t.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string_view>
#include <vector>

namespace fragile::stats {

struct Correlation {
  double statistic = std::numeric_limits<double>::quiet_NaN();  ///< r, rho or tau-b
  double p_value = std::numeric_limits<double>::quiet_NaN();     ///< two-sided
  std::size_t n = 0;
};

namespace detail {

inline void check_pair(std::span<const double> x, std::span<const double> y, std::string_view who) {
  require<ArgumentError>(x.size() == y.size(), "{}: x has {} values, y has {}", who, x.size(),
                         y.size());
  require<ArgumentError>(x.size() >= 2, "{}: needs at least 2 pairs, got {}", who, x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    require<ArgumentError>(std::isfinite(x[i]) && std::isfinite(y[i]),
                           "{}: pair {} is not finite (x = {}, y = {})", who, i, x[i], y[i]);
}

/// Two-sided p-value of a t statistic with `dof` degrees of freedom.
inline double t_two_sided(double t, double dof) {
  if (std::isnan(t)) return std::numeric_limits<double>::quiet_NaN();
  if (std::isinf(t)) return 0.0;
  boost::math::students_t dist(dof);
  return std::min(1.0, 2.0 * boost::math::cdf(dist, -std::abs(t)));
}

inline double pearson_r(std::span<const double> x, std::span<const double> y) {
  const auto n = static_cast<double>(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  long double sxy = 0, sxx = 0, syy = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const long double dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
  const double r = static_cast<double>(sxy / std::sqrt(sxx * syy));
  return std::clamp(r, -1.0, 1.0);
}

/// Exact two-sided p-value for c = min(concordant, discordant) pairs among n untied points
/// (the recurrence of Kendall 1970, as scipy's _kendall_p_exact).
inline double kendall_p_exact(std::size_t n, std::uint64_t c) {
  const std::uint64_t pairs = n * (n - 1) / 2;
  c = std::min(c, pairs - c);
  if (n <= 2) return 1.0;
  if (4 * c == n * (n - 1)) return 1.0;
  if (c == 0) return n < 171 ? 2.0 / std::tgamma(static_cast<double>(n) + 1.0) : 0.0;
  if (c == 1) return n < 172 ? 2.0 / std::tgamma(static_cast<double>(n)) : 0.0;
  // new[k] = number (or, for large n, probability) of permutations of j items with k inversions.
  std::vector<double> counts(c + 1, 0.0), prefix(c + 1);
  counts[0] = counts[1] = 1.0;
  const bool scaled = n >= 171;
  for (std::size_t j = 3; j <= n; ++j) {
    std::partial_sum(counts.begin(), counts.end(), prefix.begin());
    if (scaled)
      for (auto& v : prefix) v /= static_cast<double>(j);
    for (std::size_t k = 0; k <= c; ++k)
      counts[k] = prefix[k] - (k >= j ? prefix[k - j] : 0.0);
  }
  const double sum = std::accumulate(counts.begin(), counts.end(), 0.0);
  const double prob = scaled ? sum : 2.0 * sum / std::tgamma(static_cast<double>(n) + 1.0);
  return std::clamp(prob, 0.0, 1.0);
}

}  // namespace detail

/// Ranks 1..n with ties sharing the average rank (scipy.stats.rankdata 'average').
inline std::vector<double> average_ranks(std::span<const double> v) {
  std::vector<std::size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return v[a] < v[b]; });
  std::vector<double> ranks(v.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double rank = 0.5 * static_cast<double>(i + j) + 1.0;
    for (std::size_t k = i; k <= j; ++k) ranks[order[k]] = rank;
    i = j + 1;
  }
  return ranks;
}

inline Correlation pearson(std::span<const double> x, std::span<const double> y) {
  detail::check_pair(x, y, "pearson");
  Correlation c;
  c.n = x.size();
  c.statistic = detail::pearson_r(x, y);
  if (std::isnan(c.statistic)) return c;
  if (c.n == 2) {
    c.p_value = 1.0;
    return c;
  }
  const double r = c.statistic, dof = static_cast<double>(c.n - 2);
  const double t = std::abs(r) == 1.0 ? std::copysign(std::numeric_limits<double>::infinity(), r)
                                      : r * std::sqrt(dof / ((1.0 - r) * (1.0 + r)));
  c.p_value = detail::t_two_sided(t, dof);
  return c;
}

inline Correlation spearman(std::span<const double> x, std::span<const double> y) {
  detail::check_pair(x, y, "spearman");
  const auto rx = average_ranks(x), ry = average_ranks(y);
  Correlation c;
  c.n = x.size();
  c.statistic = detail::pearson_r(rx, ry);
  if (std::isnan(c.statistic)) return c;
  const double r = c.statistic, dof = static_cast<double>(c.n) - 2.0;
  if (c.n == 2) {  // scipy: dof = 0 gives t = +-inf or nan; it reports p = 0 for |r| = 1
    c.p_value = std::abs(r) == 1.0 ? 0.0 : std::numeric_limits<double>::quiet_NaN();
    return c;
  }
  const double denom = (r + 1.0) * (1.0 - r);
  const double t = denom <= 0.0 ? std::copysign(std::numeric_limits<double>::infinity(), r)
                                 : r * std::sqrt(std::max(0.0, dof / denom));
  c.p_value = detail::t_two_sided(t, dof);
  return c;
}

inline Correlation kendall(std::span<const double> x, std::span<const double> y) {
  detail::check_pair(x, y, "kendall");
  const std::size_t n = x.size();
  // O(n^2) pair counting: exact integer counts, and n is a layer count (tens to hundreds).
  std::int64_t concordant = 0, discordant = 0, x_ties = 0, y_ties = 0, joint_ties = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) {
      const double dx = x[i] - x[j], dy = y[i] - y[j];
      if (dx == 0 && dy == 0) ++joint_ties;
      if (dx == 0) ++x_ties;
      if (dy == 0) ++y_ties;
      if (dx != 0 && dy != 0) (dx * dy > 0 ? concordant : discordant)++;
    }
  const auto total = static_cast<std::int64_t>(n * (n - 1) / 2);
  Correlation c;
  c.n = n;
  if (x_ties == total || y_ties == total) return c;
  const double con_minus_dis = static_cast<double>(concordant - discordant);
  c.statistic = std::clamp(con_minus_dis / std::sqrt(static_cast<double>(total - x_ties)) /
                               std::sqrt(static_cast<double>(total - y_ties)),
                           -1.0, 1.0);
  const bool no_ties = x_ties == 0 && y_ties == 0;
  if (no_ties && (n <= 33 || std::min(discordant, total - discordant) <= 1)) {
    c.p_value = detail::kendall_p_exact(n, static_cast<std::uint64_t>(total - discordant));
    return c;
  }
  // Tie statistics per group of equal values: sum t(t-1)/2, t(t-1)(t-2), t(t-1)(2t+5).
  auto tie_terms = [](std::span<const double> v) {
    std::vector<double> s(v.begin(), v.end());
    std::sort(s.begin(), s.end());
    double t0 = 0, t1 = 0, t2 = 0;
    for (std::size_t i = 0; i < s.size();) {
      std::size_t j = i;
      while (j < s.size() && s[j] == s[i]) ++j;
      const double t = static_cast<double>(j - i);
      t0 += t * (t - 1) / 2;
      t1 += t * (t - 1) * (t - 2);
      t2 += t * (t - 1) * (2 * t + 5);
      i = j;
    }
    return std::array<double, 3>{t0, t1, t2};
  };
  const auto [xt, x0, x1] = tie_terms(x);
  const auto [yt, y0, y1] = tie_terms(y);
  const double nd = static_cast<double>(n), m = nd * (nd - 1.0);
  const double var = (m * (2 * nd + 5) - x1 - y1) / 18 + (2 * xt * yt) / m +
                     x0 * y0 / (9 * m * (nd - 2));
  const double z = con_minus_dis / std::sqrt(var);
  c.p_value = std::min(1.0, 2.0 * boost::math::cdf(boost::math::normal(), -std::abs(z)));
  return c;
}

}  // namespace fragile::stats
