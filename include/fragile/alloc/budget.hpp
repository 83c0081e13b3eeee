// Budget: the average bits per weight that an allocation may spend, over all quantized linears,
// weighted by parameter count. Costs come from the SensitivityTable (each option's exact storage
// in bits, scales / zero points / channel indices included), so the budget is exactly
//   sum_l cost(l, option_l) <= capacity,  capacity = max { C integer : C / N <= bits_per_weight }
// with N the total parameter count. A budget outside [cheapest, most expensive] assignment is a
// BudgetError that states the feasible range.
#pragma once

#include "fragile/core/error.hpp"
#include "fragile/sensitivity/table.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

namespace fragile::alloc {

using sensitivity::SensitivityTable;

/// Cheapest and most expensive total cost of a table (one option per layer).
struct CostRange {
  std::uint64_t min_bits = 0;
  std::uint64_t max_bits = 0;
  std::uint64_t parameters = 0;
  [[nodiscard]] double min_average() const {
    return static_cast<double>(min_bits) / static_cast<double>(parameters);
  }
  [[nodiscard]] double max_average() const {
    return static_cast<double>(max_bits) / static_cast<double>(parameters);
  }
};

inline CostRange cost_range(const SensitivityTable& table) {
  CostRange r;
  for (std::size_t l = 0; l < table.num_layers(); ++l) {
    std::uint64_t lo = std::numeric_limits<std::uint64_t>::max(), hi = 0;
    for (const auto& o : table.options(l)) {
      lo = std::min(lo, o.cost_bits);
      hi = std::max(hi, o.cost_bits);
    }
    r.min_bits += lo;
    r.max_bits += hi;
    r.parameters += table.layer(l).parameters;
  }
  return r;
}

/// Average bits per weight (or an exact total in bits) that an allocation may spend.
class Budget {
 public:
  /// Budget of `bits_per_weight` on average (parameter-weighted).
  static Budget average(double bits_per_weight) {
    require<ArgumentError>(std::isfinite(bits_per_weight) && bits_per_weight > 0.0,
                           "Budget: bits per weight must be positive and finite, got {}",
                           bits_per_weight);
    Budget b;
    b.average_ = bits_per_weight;
    return b;
  }
  /// Budget of exactly `bits` in total.
  static Budget total_bits(std::uint64_t bits) {
    Budget b;
    b.total_ = bits;
    return b;
  }

  /// The largest total cost in bits allowed for `table`; BudgetError (with the feasible range)
  /// when the budget lies below the cheapest or above the most expensive assignment.
  [[nodiscard]] std::uint64_t capacity(const SensitivityTable& table) const {
    const CostRange r = cost_range(table);
    require<ConfigError>(r.parameters > 0, "Budget: the table has no parameters");
    std::uint64_t cap = 0;
    if (total_) {
      cap = *total_;
      require<BudgetError>(cap >= r.min_bits && cap <= r.max_bits,
                           "Budget: {} bits in total is outside the feasible range [{}, {}] bits "
                           "([{:.6f}, {:.6f}] bits/weight over {} weights)",
                           cap, r.min_bits, r.max_bits, r.min_average(), r.max_average(),
                           r.parameters);
      return cap;
    }
    const double n = static_cast<double>(r.parameters);
    const double target = *average_;
    require<BudgetError>(target * n < 1.8e19, "Budget: {} bits/weight over {} weights overflows",
                         target, r.parameters);
    // Largest integer C with C / N <= target, evaluated the way achieved averages are reported.
    cap = static_cast<std::uint64_t>(std::floor(target * n));
    while (static_cast<double>(cap + 1) / n <= target) ++cap;
    while (cap > 0 && static_cast<double>(cap) / n > target) --cap;
    const bool below = cap < r.min_bits;
    const bool above = target > r.max_average();
    require<BudgetError>(!below && !above,
                         "Budget: {} bits/weight is outside the feasible range [{:.6f}, {:.6f}] "
                         "bits/weight ({} weights, cheapest {} bits, most expensive {} bits)",
                         target, r.min_average(), r.max_average(), r.parameters, r.min_bits,
                         r.max_bits);
    return std::min(cap, r.max_bits);
  }

  /// The requested average for `table` (exact total / N for total budgets).
  [[nodiscard]] double bits_per_weight(const SensitivityTable& table) const {
    if (average_) return *average_;
    return static_cast<double>(*total_) / static_cast<double>(cost_range(table).parameters);
  }

 private:
  Budget() = default;
  std::optional<double> average_;
  std::optional<std::uint64_t> total_;
};

}  // namespace fragile::alloc
