// GreedyMarginal: the greedy marginal-score allocator (paper 000, Sec. 8 "a proper allocator that
// greedily assigns bits by marginal D_l reduction").
//
// Start from each layer's cheapest option (equal cost: lower score, then lower index). Repeat:
// among every layer l and every option j of l that costs at least as much as l's current option
// and has a strictly lower score, take the one with the largest score decrease per added bit
// (zero added bits counts as infinite); ties go to the larger decrease, then the lower layer
// index, then the lower option index. Jumps to any costlier option are considered, not only the
// next one, so the walk follows the lower convex hull of each layer's (cost, score) points. An
// upgrade that does not fit the remaining budget is skipped and the search goes on with those
// that fit.
//
// Bound (Sinha & Zoltners 1979, the LP relaxation of the multiple-choice knapsack): until the
// first time the best-ratio upgrade does not fit (the "critical" upgrade, gain g_c, added cost
// a_c, remaining budget r), greedy follows exactly the LP optimum's hull walk, so
//   LP = G_c - (r / a_c) g_c <= OPT <= G <= G_c,  hence  G - OPT <= (r / a_c) g_c <= g_c
// where G_c is greedy's objective at that moment and G its final objective. g_c is at most the
// largest single-layer gain max_l (max_j score(l,j) - min_j score(l,j)). The LP value is
// reported as `lower_bound`; when no upgrade was ever blocked, greedy ends with every layer at
// its lowest score and is optimal.
//
// @article{sinha1979mckp, title={The multiple-choice knapsack problem}, author={Sinha, Prabhakant
//   and Zoltners, Andris A.}, journal={Operations Research}, volume={27}, number={3},
//   pages={503--515}, year={1979}}
#pragma once

#include "fragile/alloc/allocator.hpp"
#include "fragile/alloc/assignment.hpp"
#include "fragile/alloc/budget.hpp"

#include <fmt/format.h>

#include <limits>
#include <string_view>
#include <vector>

namespace fragile::alloc {

/// Index of layer l's cheapest option (ties: lower score, then lower index).
inline std::size_t cheapest_option(const SensitivityTable& t, std::size_t l) {
  std::size_t best = 0;
  for (std::size_t o = 1; o < t.num_options(l); ++o) {
    const auto& a = t.option(l, o);
    const auto& b = t.option(l, best);
    if (a.cost_bits < b.cost_bits ||
        (a.cost_bits == b.cost_bits && t.score(l, o) < t.score(l, best)))
      best = o;
  }
  return best;
}

struct GreedyMarginal {
  static constexpr std::string_view name = "GreedyMarginal";
  /// Record one note per upgrade taken (useful for small tables; off keeps reports short).
  bool trace = false;

  [[nodiscard]] BitAssignment allocate(const SensitivityTable& table, const Budget& budget) const {
    table.validate();
    const std::uint64_t capacity = budget.capacity(table);
    const std::size_t L = table.num_layers();
    BitAssignment a;
    a.allocator = std::string(name);
    a.option.resize(L);
    std::uint64_t used = 0;
    double objective = 0.0;
    for (std::size_t l = 0; l < L; ++l) {
      a.option[l] = cheapest_option(table, l);
      used += table.cost(l, a.option[l]);
    }
    for (std::size_t l = 0; l < L; ++l) objective += table.score(l, a.option[l]);

    struct Move {
      std::size_t layer = 0, option = 0;
      double gain = 0.0, ratio = 0.0;
      std::uint64_t added = 0;
      bool valid = false;
    };
    auto better = [](const Move& x, const Move& y) {  // is x preferred to y?
      if (!y.valid) return true;
      if (x.ratio != y.ratio) return x.ratio > y.ratio;
      if (x.gain != y.gain) return x.gain > y.gain;
      if (x.layer != y.layer) return x.layer < y.layer;
      return x.option < y.option;
    };
    bool blocked_once = false;
    std::size_t steps = 0;
    for (;;) {
      Move best_any, best_fit;
      const std::uint64_t remaining = capacity - used;
      for (std::size_t l = 0; l < L; ++l) {
        const std::size_t cur = a.option[l];
        const std::uint64_t c0 = table.cost(l, cur);
        const double s0 = table.score(l, cur);
        for (std::size_t j = 0; j < table.num_options(l); ++j) {
          const std::uint64_t c = table.cost(l, j);
          const double s = table.score(l, j);
          if (j == cur || c < c0 || !(s < s0)) continue;
          Move m;
          m.layer = l;
          m.option = j;
          m.added = c - c0;
          m.gain = s0 - s;
          m.ratio = m.added == 0 ? std::numeric_limits<double>::infinity()
                                 : m.gain / static_cast<double>(m.added);
          m.valid = true;
          if (better(m, best_any)) best_any = m;
          if (m.added <= remaining && better(m, best_fit)) best_fit = m;
        }
      }
      if (best_any.valid && best_any.added > remaining && !blocked_once) {
        blocked_once = true;
        const double fraction =
            static_cast<double>(remaining) / static_cast<double>(best_any.added);
        a.lower_bound = objective - fraction * best_any.gain;
        a.notes.push_back(fmt::format(
            "critical upgrade '{}' {} -> {} (gain {}, +{} bits) does not fit the {} bits left; "
            "LP bound {}, so greedy is within {} of the optimum",
            table.layer(best_any.layer).name,
            table.option(best_any.layer, a.option[best_any.layer]).label,
            table.option(best_any.layer, best_any.option).label, best_any.gain, best_any.added,
            remaining, *a.lower_bound, fraction * best_any.gain));
      }
      if (!best_fit.valid) break;
      if (trace)
        a.notes.push_back(fmt::format(
            "upgrade '{}' {} -> {} (gain {}, +{} bits)", table.layer(best_fit.layer).name,
            table.option(best_fit.layer, a.option[best_fit.layer]).label,
            table.option(best_fit.layer, best_fit.option).label, best_fit.gain, best_fit.added));
      objective -= best_fit.gain;
      used += best_fit.added;
      a.option[best_fit.layer] = best_fit.option;
      ++steps;
    }
    finish_assignment(a, table, capacity, budget.bits_per_weight(table));
    if (!blocked_once) {
      a.lower_bound = a.objective;  // every layer reached its lowest score
      a.optimal = true;
    } else {
      // Greedy's final objective is never above G_c, so the reported LP bound stays valid.
      a.optimal = a.objective <= *a.lower_bound;
    }
    a.notes.push_back(fmt::format("{} upgrades taken", steps));
    return a;
  }
};

static_assert(check_allocator<GreedyMarginal>());

}  // namespace fragile::alloc
