// MCKP: the exact minimum of sum_l score(l, o_l) subject to sum_l cost(l, o_l) <= budget with one
// option per layer (the multiple-choice knapsack problem), by dynamic programming over exact
// integer costs in bits: costs are reduced by each layer's cheapest option and the GCD of all
// cost differences, options are pruned to each layer's Pareto frontier, and partial solutions are
// merged layer by layer as Pareto frontiers (detail/frontier.hpp). No discretisation: the result
// is the optimum of the scores as summed in layer order. Also runs GreedyMarginal and reports its
// gap in the notes.
//
// @book{kellerer2004knapsack, title={Knapsack Problems}, author={Kellerer, Hans and Pferschy,
//   Ulrich and Pisinger, David}, publisher={Springer}, year={2004}, note={Ch. 11, multiple-choice}}
#pragma once

#include "fragile/alloc/allocator.hpp"
#include "fragile/alloc/detail/frontier.hpp"
#include "fragile/alloc/greedy_marginal.hpp"

#include <fmt/format.h>

#include <string_view>
#include <vector>

namespace fragile::alloc {

struct MCKP {
  static constexpr std::string_view name = "MCKP";
  /// Largest Pareto frontier the DP may hold (memory ~ 16 bytes x states x layers at worst); a
  /// larger one is an ArgumentError rather than a silent approximation.
  std::size_t max_states = std::size_t{1} << 24;
  /// Also run GreedyMarginal and note its gap to the optimum.
  bool report_greedy_gap = true;

  [[nodiscard]] BitAssignment allocate(const SensitivityTable& table, const Budget& budget) const {
    table.validate();
    const std::uint64_t capacity = budget.capacity(table);
    const std::size_t L = table.num_layers();
    std::vector<std::vector<detail::Item>> groups(L);
    for (std::size_t l = 0; l < L; ++l) {
      std::vector<detail::Item> items;
      for (std::size_t o = 0; o < table.num_options(l); ++o)
        items.push_back({table.cost(l, o), table.score(l, o), static_cast<std::uint32_t>(o)});
      groups[l] = detail::pareto_frontier(std::move(items));
    }
    const auto r = detail::merge_frontiers(groups, capacity, max_states);
    require<ArgumentError>(r.has_value(),
                           "MCKP: the Pareto frontier exceeds max_states = {} states ({} layers); "
                           "raise MCKP::max_states or coarsen the option costs",
                           max_states, L);
    BitAssignment a;
    a.allocator = std::string(name);
    a.option.assign(r->choice.begin(), r->choice.end());
    finish_assignment(a, table, capacity, budget.bits_per_weight(table));
    a.optimal = true;
    a.lower_bound = a.objective;
    a.notes.push_back(fmt::format("exact DP: cost unit {} bits, largest frontier {} states",
                                  r->cost_unit, r->largest_frontier));
    if (report_greedy_gap) {
      const BitAssignment g = GreedyMarginal{}.allocate(table, budget);
      a.notes.push_back(fmt::format("GreedyMarginal objective {}, gap to optimum {}", g.objective,
                                    g.objective - a.objective));
    }
    return a;
  }
};

static_assert(check_allocator<MCKP>());

}  // namespace fragile::alloc
