// BinarySplit: paper 000's allocation shootout (Sec. 3). Rank layers by any per-layer metric
// (Fisher trace, D_l, ...); the top `fraction` get the option whose value is `hi` and the rest
// the option whose value is `lo`. Protect::kHighest is the "Fisher-gated" allocation (protect
// high-metric layers), Protect::kLowest the "inverse" one (protect low-metric layers). Paper
// 000's two arms at a 3-bit average: {fraction 0.2, kHighest, hi 4, lo 3} (Fisher-gated) and
// {fraction 0.8, kLowest, hi 4, lo 3} (inverse: the top 20% by Fisher get 3 bits "or lower"),
// both brought to the budget by the adjustment below.
//
// Ranking: by the metric (descending for kHighest, ascending for kLowest), ties by layer index;
// the protected count is round(fraction x layers) (halves round up).
//
// Adjustment rule (deterministic), applied only while the total cost exceeds the budget, one
// demotion at a time, stopping as soon as the budget is met; "demote" moves a layer to its next
// cheaper option (largest cost strictly below the current one; equal cost: lower score, then
// lower index):
//   Adjust::kDemoteUnprotected (default; paper 000's "with adjustment to maintain average"):
//     1. passes over the unprotected layers from the lowest-ranked up, demoting each by one step
//        per pass, until none can go lower;
//     2. then the same over the protected layers, lowest-ranked first.
//   Adjust::kDemoteProtected:
//     1. protected layers, lowest-ranked first, fall from hi to lo;
//     2. then step 1 and 2 of kDemoteUnprotected.
// Every demotion is recorded in the notes. A split under budget is left as is (slack noted).
//
// @article{importance_not_fragility, title={Importance Is Not Fragility: Why High-Fisher Layers
//   Survive Low-Bit Quantization}, note={paper 000 in ../shared/papers}}
#pragma once

#include "fragile/alloc/allocator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace fragile::alloc {

struct BinarySplit {
  static constexpr std::string_view name = "BinarySplit";
  enum class Protect { kHighest, kLowest };
  enum class Adjust { kDemoteUnprotected, kDemoteProtected };

  std::string metric = "fisher_trace";  ///< table.layer_metric() used by allocate(table, budget)
  double fraction = 0.2;                ///< share of layers protected
  double hi = 4.0;                      ///< option value for protected layers
  double lo = 3.0;                      ///< option value for the rest
  Protect protect = Protect::kHighest;
  Adjust adjust = Adjust::kDemoteUnprotected;

  [[nodiscard]] BitAssignment allocate(const SensitivityTable& table, const Budget& budget) const {
    return allocate(table, budget, table.layer_metric(metric));
  }

  /// Same with an explicit metric vector (one value per layer).
  [[nodiscard]] BitAssignment allocate(const SensitivityTable& table, const Budget& budget,
                                       std::span<const double> metric_values) const {
    table.validate();
    const std::size_t L = table.num_layers();
    require<ConfigError>(std::isfinite(fraction) && fraction >= 0.0 && fraction <= 1.0,
                         "BinarySplit: fraction must lie in [0, 1], got {}", fraction);
    require<ArgumentError>(metric_values.size() == L,
                           "BinarySplit: metric has {} values, table has {} layers",
                           metric_values.size(), L);
    for (std::size_t l = 0; l < L; ++l)
      require<ArgumentError>(std::isfinite(metric_values[l]),
                             "BinarySplit: metric of layer '{}' is {}, expected finite",
                             table.layer(l).name, metric_values[l]);
    const std::uint64_t capacity = budget.capacity(table);

    std::vector<std::size_t> order(L);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return protect == Protect::kHighest ? metric_values[a] > metric_values[b]
                                          : metric_values[a] < metric_values[b];
    });
    const auto k = static_cast<std::size_t>(std::floor(fraction * static_cast<double>(L) + 0.5));

    BitAssignment a;
    a.allocator = std::string(name);
    a.option.resize(L);
    std::vector<bool> is_protected(L, false);
    auto option_with = [&](std::size_t l, double v) {
      const auto o = table.find_option(l, v);
      require<ConfigError>(o.has_value(), "BinarySplit: layer '{}' has no option with value {}",
                           table.layer(l).name, v);
      return *o;
    };
    std::uint64_t used = 0;
    for (std::size_t r = 0; r < L; ++r) {
      const std::size_t l = order[r];
      is_protected[l] = r < k;
      a.option[l] = option_with(l, r < k ? hi : lo);
      used += table.cost(l, a.option[l]);
    }
    a.notes.push_back(fmt::format("protected {} of {} layers ({} by '{}') at {}, rest at {}", k, L,
                                  protect == Protect::kHighest ? "highest" : "lowest", metric, hi,
                                  lo));

    auto demote_to = [&](std::size_t l, std::size_t o) {
      a.notes.push_back(fmt::format("demoted '{}' from {} to {}", table.layer(l).name,
                                    table.option(l, a.option[l]).label, table.option(l, o).label));
      used = used - table.cost(l, a.option[l]) + table.cost(l, o);
      a.option[l] = o;
    };
    auto next_cheaper = [&](std::size_t l) -> std::optional<std::size_t> {
      std::optional<std::size_t> best;
      const std::uint64_t c0 = table.cost(l, a.option[l]);
      for (std::size_t o = 0; o < table.num_options(l); ++o) {
        const std::uint64_t c = table.cost(l, o);
        if (c >= c0) continue;
        if (!best || c > table.cost(l, *best) ||
            (c == table.cost(l, *best) && table.score(l, o) < table.score(l, *best)))
          best = o;
      }
      return best;
    };
    // Passes of one-step demotions over `layers` (already in demotion order).
    auto passes = [&](const std::vector<std::size_t>& layers) {
      bool moved = true;
      while (used > capacity && moved) {
        moved = false;
        for (std::size_t l : layers) {
          if (used <= capacity) return;
          if (auto o = next_cheaper(l)) {
            demote_to(l, *o);
            moved = true;
          }
        }
      }
    };
    std::vector<std::size_t> unprot, prot;  // lowest-ranked first
    for (std::size_t r = L; r-- > 0;) (is_protected[order[r]] ? prot : unprot).push_back(order[r]);
    if (used > capacity && adjust == Adjust::kDemoteProtected)
      for (std::size_t l : prot) {
        if (used <= capacity) break;
        const std::size_t o = option_with(l, lo);
        if (table.cost(l, o) < table.cost(l, a.option[l])) demote_to(l, o);
      }
    passes(unprot);
    passes(prot);
    require<BudgetError>(used <= capacity,
                         "BinarySplit: cannot meet {} bits after demoting every layer (internal)",
                         capacity);
    finish_assignment(a, table, capacity, budget.bits_per_weight(table));
    if (capacity > a.total_cost_bits)
      a.notes.push_back(
          fmt::format("{} bits of the budget left unspent", capacity - a.total_cost_bits));
    return a;
  }
};

static_assert(check_allocator<BinarySplit>());

}  // namespace fragile::alloc
