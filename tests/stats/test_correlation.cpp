#include "support/test_data.hpp"

#include <fragile/stats/bootstrap.hpp>
#include <fragile/stats/correlation.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <vector>

namespace st = fragile::stats;

namespace {

// Relative-or-absolute closeness: p-values span many decades, so compare in relative terms
// down to 1e-300 and absolutely near zero.
bool close(double got, double want, double rel = 1e-9, double abs = 1e-14) {
  if (std::isnan(want)) return std::isnan(got);
  return std::abs(got - want) <= std::max(abs, rel * std::abs(want));
}

}  // namespace

TEST_CASE("correlations and p-values match scipy.stats on the committed fixtures") {
  std::ifstream in(fragile::test::source_dir() / "fixtures/stats/correlations.json");
  REQUIRE(in.good());
  const auto doc = nlohmann::json::parse(in);
  REQUIRE(doc["cases"].size() >= 10);
  for (const auto& c : doc["cases"]) {
    const auto x = c["x"].get<std::vector<double>>();
    const auto y = c["y"].get<std::vector<double>>();
    const std::string name = c["name"];
    struct Named {
      const char* key;
      st::Correlation (*fn)(std::span<const double>, std::span<const double>);
    };
    for (const Named& m : {Named{"pearson", st::pearson}, Named{"spearman", st::spearman},
                           Named{"kendall", st::kendall}}) {
      const auto got = m.fn(x, y);
      const double want_stat = c[m.key]["statistic"];
      const double want_p = c[m.key]["p_value"];
      INFO(name << " " << m.key << ": statistic " << got.statistic << " vs scipy " << want_stat
                << ", p " << got.p_value << " vs scipy " << want_p);
      CHECK(close(got.statistic, want_stat, 1e-12, 1e-13));
      if (std::string(m.key) != "kendall" && std::abs(want_stat) > 1.0 - 1e-12) {
        // |r| = 1 up to rounding: p ~ sqrt(1 - |r|) is set by the last ulp of r (scipy reports
        // 1e-8 for r = 1 - 2e-16, the exact answer is 0); both must call it negligible.
        CHECK(got.p_value < 1e-6);
        CHECK(want_p < 1e-6);
      } else {
        CHECK(close(got.p_value, want_p, 1e-8, 1e-15));
      }
    }
  }
}

TEST_CASE("average ranks share ties as scipy.stats.rankdata") {
  const std::vector<double> v{3, 1, 4, 1, 5, 9, 2, 6, 5};
  const auto r = st::average_ranks(v);
  const std::vector<double> want{4, 1.5, 5, 1.5, 6.5, 9, 3, 8, 6.5};
  CHECK(r == want);
}

TEST_CASE("undefined and malformed inputs") {
  const std::vector<double> constant{2, 2, 2, 2}, y{1, 2, 3, 4}, short_y{1, 2, 3};
  CHECK(std::isnan(st::pearson(constant, y).statistic));
  CHECK(std::isnan(st::spearman(constant, y).p_value));
  CHECK(std::isnan(st::kendall(constant, y).statistic));
  CHECK_THROWS_AS(st::pearson(y, short_y), fragile::ArgumentError);
  CHECK_THROWS_WITH(st::spearman(std::vector<double>{1}, std::vector<double>{1}),
                    Catch::Contains("at least 2"));
  const std::vector<double> with_nan{1, NAN, 3, 4};
  CHECK_THROWS_WITH(st::kendall(with_nan, y), Catch::Contains("pair 1"));
}

TEST_CASE("Kendall exact p-value matches the permutation distribution by brute force") {
  // n = 6: enumerate all 720 permutations, count those at least as extreme.
  std::vector<int> perm{0, 1, 2, 3, 4, 5};
  std::vector<int> inversions_hist(16, 0);
  do {
    int inv = 0;
    for (int i = 0; i < 6; ++i)
      for (int j = i + 1; j < 6; ++j) inv += perm[i] > perm[j];
    inversions_hist[inv]++;
  } while (std::next_permutation(perm.begin(), perm.end()));
  for (std::uint64_t d = 0; d <= 15; ++d) {
    const std::uint64_t c = std::min<std::uint64_t>(d, 15 - d);
    int extreme = 0;
    for (int k = 0; k <= 15; ++k)
      if (std::min(k, 15 - k) <= static_cast<int>(c)) extreme += inversions_hist[k];
    const double want = std::min(1.0, extreme / 720.0);
    CHECK(st::detail::kendall_p_exact(6, d) == Approx(want).epsilon(1e-12));
  }
}

TEST_CASE("bootstrap CI is seeded, brackets the estimate, and narrows with n") {
  fragile::Rng rng(4);
  auto sample = [&](std::size_t n) {
    std::vector<double> x(n), y(n);
    for (std::size_t i = 0; i < n; ++i) {
      x[i] = rng.normal();
      y[i] = 0.6 * x[i] + 0.8 * rng.normal();
    }
    return std::pair{x, y};
  };
  auto [x, y] = sample(40);
  const auto a = st::bootstrap_ci(x, y, st::spearman, 500, 0.95, 7);
  const auto b = st::bootstrap_ci(x, y, st::spearman, 500, 0.95, 7);
  CHECK(a.lower == b.lower);
  CHECK(a.upper == b.upper);
  CHECK(a.lower < a.estimate);
  CHECK(a.estimate < a.upper);
  CHECK(a.resamples + a.undefined == 500);
  auto [x2, y2] = sample(400);
  const auto wide = st::bootstrap_ci(x2, y2, st::pearson, 500, 0.95, 7);
  CHECK(wide.upper - wide.lower < a.upper - a.lower);
  CHECK_THROWS_AS(st::bootstrap_ci(x, y, st::pearson, 500, 1.5, 7), fragile::ArgumentError);
  const std::vector<double> q{1, 2, 3, 4};
  CHECK(st::quantile_sorted(q, 0.5) == 2.5);
}
