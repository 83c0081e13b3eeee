// The correlation table of a fragility map: each metric's Spearman, Pearson and Kendall
// coefficient against each fragility target (V_l, V_l^KL), with scipy's p-values and a
// percentile-bootstrap CI of Spearman's rho (resampling layers with a fixed seed, so the same
// inputs give the same interval).
#pragma once

#include "fragile/stats/bootstrap.hpp"
#include "fragile/stats/correlation.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fragile::study {

/// One per-layer column: a metric or a fragility target.
struct Column {
  std::string name;
  std::string description;
  std::vector<double> values;  ///< one per linear layer, registry order
};

struct CorrelationRow {
  std::string metric, target;
  std::size_t n = 0;
  stats::Correlation spearman, pearson, kendall;
  stats::BootstrapInterval spearman_ci;
};

struct CorrelationOptions {
  std::size_t bootstrap_resamples = 2000;
  double confidence = 0.95;
  std::uint64_t seed = 0;
};

/// Every metric against every target, metrics outermost.
inline std::vector<CorrelationRow> correlation_table(std::span<const Column> metrics,
                                                     std::span<const Column> targets,
                                                     const CorrelationOptions& opt = {}) {
  std::vector<CorrelationRow> rows;
  for (const auto& m : metrics)
    for (const auto& t : targets) {
      CorrelationRow r;
      r.metric = m.name;
      r.target = t.name;
      r.n = m.values.size();
      r.spearman = stats::spearman(m.values, t.values);
      r.pearson = stats::pearson(m.values, t.values);
      r.kendall = stats::kendall(m.values, t.values);
      r.spearman_ci = stats::bootstrap_ci(
          m.values, t.values,
          [](std::span<const double> a, std::span<const double> b) { return stats::spearman(a, b); },
          opt.bootstrap_resamples, opt.confidence, opt.seed);
      rows.push_back(std::move(r));
    }
  return rows;
}

inline nlohmann::json to_json(const CorrelationRow& r) {
  auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"metric", r.metric},
          {"target", r.target},
          {"n", r.n},
          {"spearman", num(r.spearman.statistic)},
          {"spearman_p", num(r.spearman.p_value)},
          {"spearman_ci", {num(r.spearman_ci.lower), num(r.spearman_ci.upper)}},
          {"pearson", num(r.pearson.statistic)},
          {"pearson_p", num(r.pearson.p_value)},
          {"kendall", num(r.kendall.statistic)},
          {"kendall_p", num(r.kendall.p_value)}};
}

}  // namespace fragile::study
